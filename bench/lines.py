"""
Lines on a large resource (docs/PERFORMANCE.md, "Lines and times"):
``python bench/lines.py [--mb 1024]``.

Appends a CI-like coloured log of ``--mb`` MiB to ``twistd httpfstream``
with POSTs (so its line counts and times are kept as any appender's are),
restarts the server (nothing of the resource in its memory; the page cache
stays warm), then times, from a client on the same machine:

- ``lines=-100``, ``lines=N`` in the middle and
  ``timestamps=1&lines=-100``: the first request after the restart, and
  the median of ten later ones;
- the same bytes as ``lines=-100`` asked with ``Range`` (a request that
  needs no line data): the baseline the figures are compared with;
- ``lines=-100`` after the file of counts was deleted (the one request
  that rebuilds it from the whole resource), and after that;
- the size of the two files of line data per GiB of log.

Bounded: one server, ``--mb`` of data, about sixty requests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Server  # noqa: E402
from viewer import build_log  # noqa: E402

NAME = "big/build.log"
POST_SIZE = 8 << 20


def request(
    url: str, headers: dict[str, str] | None = None
) -> tuple[float, dict[str, str], bytes]:
    """(milliseconds, headers, body) of one GET."""
    started = time.perf_counter()
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers or {})
    ) as r:
        body = r.read()
        took = (time.perf_counter() - started) * 1000
        return took, {k.lower(): v for k, v in r.headers.items()}, body


def append(server: Server, data: bytes, total: int) -> None:
    sent = 0
    while sent < total:
        piece = data[: min(POST_SIZE, total - sent)]
        req = urllib.request.Request(server.url(NAME), data=piece, method="POST")
        with urllib.request.urlopen(req) as r:
            r.read()
        sent += len(piece)


def timed(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    first, _, body = request(url, headers)
    later = [request(url, headers)[0] for _ in range(10)]
    return {"first_ms": first, "later_ms": statistics.median(later), "bytes": len(body)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="MiB of log (1024)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    total = args.mb << 20
    # 64 MiB of varied lines, repeated: generating a GiB line by line in
    # Python would take longer than everything measured.
    block = build_log(min(total, 64 << 20))
    block = block[: block.rindex(b"\n") + 1]

    server = Server("httpfstream")
    root = server.root
    started = time.perf_counter()
    sent = 0
    while sent < total:
        n = min(len(block), total - sent)
        append(server, block, n)
        sent += n
    append_s = time.perf_counter() - started
    server.owns_root = False  # kept for the next server
    server.stop()

    results: dict[str, object] = {"mb": args.mb, "append_s": append_s}
    state = Path(root, ".httpfstream")
    lines_file = state / "lines" / NAME
    times_file = state / "times" / NAME
    gib = total / (1 << 30)
    results["lines_file_bytes_per_GiB"] = lines_file.stat().st_size / gib
    results["times_file_bytes_per_GiB"] = times_file.stat().st_size / gib

    server = Server("httpfstream", root=root)
    try:
        url = server.url(NAME)
        results["lines=-100"] = timed(url + "?lines=-100")
        _, head, body = request(url + "?lines=-100")
        size = int(head["httpfstream-size"])
        last_line = int(head["httpfstream-line"]) + 99
        results["Range (same bytes, baseline)"] = timed(
            url, {"Range": f"bytes=-{len(body)}"}
        )
        results["lines=N (middle)"] = timed(
            url + f"?lines={last_line // 2}-{last_line // 2 + 99}"
        )
        results["timestamps=1&lines=-100"] = timed(url + "?timestamps=1&lines=-100")
        results["lines"] = last_line
        results["size"] = size
    finally:
        server.stop()

    # The file of counts lost: the first request rebuilds it.
    os.unlink(lines_file)
    server = Server("httpfstream", root=root)
    server.owns_root = True
    try:
        results["lines=-100, counts rebuilt"] = timed(server.url(NAME) + "?lines=-100")
    finally:
        server.stop()

    baseline = results["Range (same bytes, baseline)"]
    assert isinstance(baseline, dict)
    print(f"{args.mb} MiB, {results['lines']:,} lines, appended in {append_s:.1f} s")
    print(
        "line data per GiB:"
        f" counts {results['lines_file_bytes_per_GiB'] / 1024:.0f} KiB,"
        f" times {results['times_file_bytes_per_GiB'] / 1024:.0f} KiB"
    )
    print(f"{'request':36s} {'first ms':>9s} {'later ms':>9s} {'later / Range':>14s}")
    for key, value in results.items():
        if isinstance(value, dict):
            ratio = value["later_ms"] / baseline["later_ms"]
            first, later = value["first_ms"], value["later_ms"]
            print(f"{key:36s} {first:9.1f} {later:9.1f} {ratio:14.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
