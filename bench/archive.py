"""
What ``--archive`` costs one server (docs/PERFORMANCE.md, "Archive"):
``python bench/archive.py [--mb 1024] [--small 256]``.

Starts ``moto_server`` on 127.0.0.1 (the tests' S3 API server) and real
``twistd httpfstream --archive`` processes, and measures:

1. one session of ``--mb`` MiB (``httpfstream-append`` reading a file of
   100-byte lines): the append's time, then the time from the session's
   end to its object in the bucket (the server's own log line), and the S3
   requests and bytes it took (the server's summary when it stops);
2. ``--small`` sessions of 1 MiB each (POSTs, one resource each): the
   time from each session's end to its object (median, 95th percentile,
   the worst), and the requests and bytes per GiB;
3. the ``--mb`` MiB resource read whole by a server on an empty root
   (cold: filled from the bucket, then served; the time to the first byte
   and to the last), then again from its local copy, in the same run, and
   ``lines=-10`` on another cold server.

moto is a Python emulator on the same two cores, so rates against it are
far below a real store's; the requests per GiB and the server's share of
the time are what carries over.  Bounded: about three times ``--mb`` MiB
of disk, in a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.processes import BIN, Twistd  # noqa: E402
from support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer  # noqa: E402

MiB = 1 << 20
PREFIX = "bench"


def environment(moto: MotoServer, home: Path) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_ENDPOINT_URL_S3=moto.url,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(home / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )


def log_file(path: Path, mb: int) -> None:
    line = b"".join(b"%-99d\n" % i for i in range(10_000))  # 1,000,000 bytes
    with open(path, "wb") as f:
        left = mb * MiB
        while left:
            f.write(line[: min(left, len(line))])
            left -= min(left, len(line))


def summary(server: Twistd) -> dict[str, int]:
    """The S3 requests and bytes of the server's stop line."""
    text = b"".join(server.log).decode(errors="replace")
    found = re.search(
        r"(\d+) S3 requests \(([^)]*)\), (\d+) bytes sent, (\d+) received", text
    )
    assert found, text[-2000:]
    by = dict(
        (k, int(v)) for k, v in (p.rsplit(" ", 1) for p in found.group(2).split(", "))
    )
    return {
        "requests": int(found.group(1)),
        **by,
        "sent": int(found.group(3)),
        "received": int(found.group(4)),
    }


def delays(server: Twistd) -> list[float]:
    text = b"".join(server.log).decode(errors="replace")
    return [float(s) for s in re.findall(r"([\d.]+)s after its session ended", text)]


def read(server: Twistd, name: str, **query: str) -> tuple[float, float, int]:
    """GET the resource: seconds to the first byte and to the last, and bytes."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    path = (
        "/"
        + name
        + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    )
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200, response.status
    first = None
    n = 0
    while True:
        data = response.read(1 << 20)
        if not data:
            break
        if first is None:
            first = time.perf_counter() - started
        n += len(data)
    connection.close()
    return first or 0.0, time.perf_counter() - started, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="the large resource")
    parser.add_argument("--small", type=int, default=256, help="1 MiB sessions")
    args = parser.parse_args()
    results: dict[str, object] = {"mb": args.mb, "small": args.small}
    moto = MotoServer()
    try:
        with tempfile.TemporaryDirectory(prefix="hfs-bench-archive-") as tmp:
            folder = Path(tmp)
            environment(moto, folder)
            bucket = moto.new_bucket()
            archive = f"--archive=s3://{bucket}/{PREFIX}"
            source = folder / "big.log"
            log_file(source, args.mb)

            # 1. One large session.
            a = Twistd.start(folder / "a", archive, "--cache-size=0")
            started = time.perf_counter()
            with open(source, "rb") as stdin:
                subprocess.run(
                    [str(BIN / "httpfstream-append"), "-q", a.url("big.log")],
                    stdin=stdin,
                    check=True,
                )
            appended = time.perf_counter() - started
            line = a.wait_for_log(rb"archived big\.log: ", timeout=600)[0].decode()
            local = read(a, "big.log")
            a.stop()
            results["large"] = {
                "append_s": round(appended, 2),
                "archived_after_s": delays(a)[0],
                "line": line.split("] ", 1)[1].strip(),
                "s3": summary(a),
                "served_locally_s": round(local[1], 2),
            }

            # 2. Many small sessions.
            b = Twistd.start(folder / "b", archive, "--cache-size=0")
            body = source.read_bytes()[:MiB]
            for i in range(args.small):
                connection = http.client.HTTPConnection("127.0.0.1", b.port)
                connection.request("POST", f"/small/{i}.log", body)
                assert connection.getresponse().status == 200
                connection.close()
            b.wait_for_log(rb"archived small/", count=args.small, timeout=600)
            b.stop()
            small = sorted(delays(b))
            results["small_sessions"] = {
                "archived_after_s": {
                    "median": round(statistics.median(small), 3),
                    "p95": round(small[int(len(small) * 0.95) - 1], 3),
                    "max": round(small[-1], 3),
                },
                "s3": summary(b),
            }

            # 3. A server with a cold cache.
            c = Twistd.start(folder / "c", archive)
            cold = read(c, "big.log")
            filled = c.wait_for_log(rb"filled big\.log")[0].decode()
            warm = read(c, "big.log")
            c.stop()
            d = Twistd.start(folder / "d", archive)
            _, tail_s, _ = read(d, "big.log", lines="-10")
            _, tail_warm_s, _ = read(d, "big.log", lines="-10")
            small_cold = read(d, "small/0.log")
            small_warm = read(d, "small/0.log")
            d.stop()
            # Without the line counts beside the object: rebuilt from the bytes.
            moto.client().delete_object(
                Bucket=bucket, Key=f"{PREFIX}/.httpfstream/lines/big.log"
            )
            e = Twistd.start(folder / "e", archive)
            _, rebuilt_s, _ = read(e, "big.log", lines="-10")
            e.stop()
            assert cold[2] == warm[2] == args.mb * MiB
            results["cold_cache"] = {
                "first_byte_s": round(cold[0], 2),
                "last_byte_s": round(cold[1], 2),
                "fill_line": filled.split("] ", 1)[1].strip(),
                "served_again_from_local_disk_s": round(warm[1], 2),
                "lines_-10_cold_s": round(tail_s, 2),
                "lines_-10_then_s": round(tail_warm_s, 3),
                "lines_-10_cold_without_line_counts_s": round(rebuilt_s, 2),
                "small_1MiB_cold_ms": [
                    round(small_cold[0] * 1000, 1),
                    round(small_cold[1] * 1000, 1),
                ],
                "small_1MiB_warm_ms": [
                    round(small_warm[0] * 1000, 1),
                    round(small_warm[1] * 1000, 1),
                ],
                "s3": summary(c),
            }
    finally:
        moto.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
