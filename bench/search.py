"""
Search benchmarks (docs/PERFORMANCE.md, "Search"):

    python bench/search.py [--size MIB] [--searches N] [--out FILE]

1. **Throughput.**  A build log with ANSI colours (``--size`` MiB, 1 GiB by
   default: coloured times and levels, test results, compiler lines,
   GitLab section markers, some non-ASCII; written once, then read once so
   it is in the page cache) is searched over plain GETs, one at a time: a
   substring that matches one line in a thousand, ignoring case and not,
   and two regular expressions.  MB/s from the request to the ``done``
   object, and the server's CPU seconds.
2. **Steps.**  The same searches (and one where 4 lines in 10 match) run in
   this process over the log's first 256 MiB exactly as the server runs
   them (256 KiB from the cursor at a time, cut into `web.search.Slices`,
   each `web.search.scan` timed): how long one step holds the reactor,
   and the slice sizes it settles on.
3. **Others on time.**  bench/run.py's ``1x100 1KiB@1000/s`` row (bench/fastgen:
   100 WebSocket followers of another resource, 1,000 appends a second,
   each follower's latency per message) alone, then while ``--searches``
   searches of the big log run for the whole window (each starts again
   when it ends): the followers' p50, p99 and max, and the MB/s the
   searches got meanwhile.

The server runs as in bench/run.py (``twistd httpfstream``, pinned to CPU 0,
the load generator and this script's search clients to CPU 1).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from run import FASTGEN, PIN, Server, loadgen

from httpfstream.core.search import Pattern, Scanner
from httpfstream.web.search import Slices, scan

NAME = "ci/big.log"


def block(lines: int) -> bytes:
    """``lines`` lines of a CI log, coloured as runners colour them."""
    out = []
    words = [
        "compiling",
        "linking",
        "fetching",
        "resolving",
        "caching",
        "building",
        "packaging",
        "testing",
        "uploading",
        "downloading",
        "layer",
        "image",
        "container",
        "runner",
    ]
    for i in range(lines):
        w = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(3 + i % 9))
        kind = i % 10
        t = f"10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}"
        if i % 1000 == 999:
            line = f"\x1b[31;1mstep {i} FAILED\x1b[0m: {w}"
        elif kind < 4:
            line = f"\x1b[36m{t}\x1b[0m \x1b[1;32mINFO\x1b[0m {w} ({i})"
        elif kind < 6:
            line = f"tests/test_{words[i % 5]}.py::test_{i} \x1b[32mPASSED\x1b[0m"
        elif kind == 6:
            line = f"section_start:{1700000000 + i}:step_{i}\r\x1b[0K$ make {w}"
        elif kind == 7:
            line = f"  cc -c src/{words[i % 7]}_{i}.c -o build/{i}.o -O2 -Wall"
        elif kind == 8:
            line = f"##[group]Run {w}"
        else:
            line = (
                f"\x1b[33mwarning\x1b[39m: {w} \u00e9t\u00e9 \u2713 \x1b[2m{t}\x1b[22m"
            )
        out.append(line + "\n")
    return "".join(out).encode()


def make_log(root: Path, size: int) -> tuple[int, float]:
    """The big log under ``root``: its size, and seconds to read it once."""
    path = root / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    piece = block(160_000)  # about 16 MiB
    with path.open("wb") as f:
        written = 0
        while written < size:
            f.write(piece)
            written += len(piece)
    started = time.monotonic()
    with path.open("rb") as f:
        while f.read(8 << 20):
            pass
    return written, time.monotonic() - started


def search_once(port: int, query: str) -> dict[str, Any]:
    """One search, read to its end: the done object and the seconds."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.monotonic()
    connection.request("GET", f"/{NAME}?{query}")
    response = connection.getresponse()
    assert response.status == 200, (response.status, response.read())
    last = b""
    while chunk := response.read1(1 << 16):
        last = (last + chunk)[-4096:]
    seconds = time.monotonic() - started
    connection.close()
    done: dict[str, Any] = json.loads(last.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    assert done["done"] is True, done
    return {**done, "seconds": seconds}


QUERIES = [
    ("substring", "grep=failed&max=100000"),
    ("substring, case=1", "grep=FAILED&case=1&max=100000"),
    ("regex", "grep=%5Estep+%5Cd%2B+failed&regex=1&max=100000"),
    ("regex, 3 alternatives", "grep=error%7Cfatal%7Cpanic%3A&regex=1"),
]


def throughput(server: Server, size: int) -> list[dict[str, Any]]:
    rows = []
    for label, query in QUERIES:
        cpu = server.cpu()
        done = search_once(server.port, query)
        cpu = server.cpu() - cpu
        rows.append(
            {
                "search": label,
                "query": query,
                "MBps": size / done["seconds"] / 1e6,
                "seconds": done["seconds"],
                "server_cpu_s": cpu,
                "matches": done["matches"],
                "lines": done["lines"],
            }
        )
        print(f"  {label:<24} {rows[-1]['MBps']:6.0f} MB/s", file=sys.stderr)
    return rows


STEPS = [*QUERIES[:3], ("4 lines in 10 match", "grep=INFO&max=100000")]


def steps(root: Path, limit: int) -> list[dict[str, Any]]:
    """Each search's steps, timed as the server takes them."""
    from urllib.parse import parse_qs

    rows = []
    for label, query in STEPS:
        asked = {k: v for k, [v] in parse_qs(query).items()}
        pattern = Pattern(asked["grep"], regex="regex" in asked, case="case" in asked)
        most = int(asked.get("max", 1000))
        scanner, slices = Scanner(pattern, most=most), Slices()
        times, sizes = [], []
        with (root / NAME).open("rb") as f:
            read = 0
            while read < limit and not scanner.finished:
                data = f.read(256 << 10)  # what the cursor sends at once
                if not data:
                    break
                read += len(data)
                at = 0
                while at < len(data):
                    piece = data[at : at + slices.size]
                    at += len(piece)
                    _, took = scan(scanner, piece)
                    if len(piece) == slices.size:
                        slices.took(took)
                    times.append(took)
                    sizes.append(len(piece))
        times.sort()
        sizes.sort()
        rows.append(
            {
                "search": label,
                "steps": len(times),
                "p50_ms": times[len(times) // 2] * 1e3,
                "p99_ms": times[int(len(times) * 0.99)] * 1e3,
                "max_ms": times[-1] * 1e3,
                "slice_KiB": sizes[len(sizes) // 2] / 1024,
                "MBps": read / sum(times) / 1e6,
            }
        )
        print(
            f"  steps of {label:<20} p99 {rows[-1]['p99_ms']:.2f} ms", file=sys.stderr
        )
    return rows


class Searches:
    """``count`` clients searching the big log again and again until stopped."""

    def __init__(self, port: int, count: int, size: int) -> None:
        self.port, self.size = port, size
        self.searched = 0  # bytes, of the searches that ended
        self.ended = 0
        self._running = True
        self._threads = [
            threading.Thread(target=self._loop, args=(QUERIES[i % 3][1],), daemon=True)
            for i in range(count)
        ]
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _loop(self, query: str) -> None:
        while self._running:
            search_once(self.port, query)
            self.searched += self.size
            self.ended += 1

    def stop(self) -> dict[str, Any]:
        self._running = False
        seconds = time.monotonic() - self.started
        for thread in self._threads:
            thread.join()
        return {
            "searches_ended": self.ended,
            "search_MBps": self.searched / seconds / 1e6,
        }


_RUNS = itertools.count()


def followers(server: Server, searches: int, size: int, count: int) -> dict[str, Any]:
    args = {
        "scenario": "stream",
        "followers": 100,
        "size": 1024,
        "rate": 1000,
        "count": count,
        "timeout": 240,
        # A new resource each run: followers start at its first byte.
        "url": server.url(f"bench/followed-{next(_RUNS)}.bin"),
    }
    running = Searches(server.port, searches, size) if searches else None
    cpu = server.cpu()
    result = loadgen(args)
    cpu = server.cpu() - cpu
    row = {
        "searches": searches,
        "p50_ms": result.get("p50_ms"),
        "p99_ms": result.get("p99_ms"),
        "max_ms": result.get("max_ms"),
        "messages_per_s": result.get("messages_per_s"),
        "byte_exact": result.get("byte_exact"),
        "server_cpu": cpu / (result.get("wall_s") or 1),
        "errors": result.get("errors"),
    }
    if running is not None:
        row.update(running.stop())
    print(
        f"  1x100 1KiB@1000/s with {searches} searches: p99 {row['p99_ms']} ms",
        file=sys.stderr,
    )
    return row


def _spread(values: list[float], fmt: str) -> str:
    """The median of ``values`` and, with more than one, their range."""
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    if len(ordered) == 1:
        return fmt.format(median)
    low, high = fmt.format(ordered[0]), fmt.format(ordered[-1])
    return f"{fmt.format(median)} ({low}-{high})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024, help="MiB (1024)")
    parser.add_argument("--searches", type=int, default=4)
    parser.add_argument("--count", type=int, default=10_000, help="appends")
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput, alone, busy: each round"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "search.json"))
    args = parser.parse_args()
    if not FASTGEN.exists():
        print(f"{FASTGEN} is missing: make bench/fastgen", file=sys.stderr)
        return 1
    if PIN:
        os.sched_setaffinity(0, {1})  # the clients beside the load generator
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="httpfstream-search-") as root:
        size, read_s = make_log(Path(root), args.size << 20)
        stepped = steps(Path(root), 256 << 20)
        server = Server("httpfstream", root=root)
        try:
            for _ in range(args.rounds):
                rows += throughput(server, size)
                # Alone and beside the searches in turn: the machine's
                # load changes between rounds, less within one.
                runs.append(followers(server, 0, size, args.count))
                runs.append(followers(server, args.searches, size, args.count))
        finally:
            server.stop()
    report = {
        "size": size,
        "first_read_s": read_s,
        "rounds": args.rounds,
        "throughput": rows,
        "steps": stepped,
        "followers": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{size / 2**20:.0f} MiB log, read once in {read_s:.1f} s;")
    print(f"medians of {args.rounds} rounds (and their range)")
    print("| search | MB/s | MB per server CPU second | matches | lines |")
    print("|---|---|---|---|---|")
    for label, _ in QUERIES:
        mine = [r for r in rows if r["search"] == label]
        print(
            f"| {label} | {_spread([r['MBps'] for r in mine], '{:.0f}')}"
            f" | {_spread([size / r['server_cpu_s'] / 1e6 for r in mine], '{:.0f}')}"
            f" | {mine[0]['matches']} | {mine[0]['lines']} |"
        )
    print("| steps of | p50 ms | p99 ms | max ms | slice KiB (median) | MB/s |")
    print("|---|---|---|---|---|---|")
    for r in stepped:
        print(
            f"| {r['search']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f}"
            f" | {r['max_ms']:.2f} | {r['slice_KiB']:.0f} | {r['MBps']:.0f} |"
        )
    print("| searches running | p50 ms | p99 ms | max ms | msg/s | searches MB/s |")
    print("|---|---|---|---|---|---|")
    for count in (0, args.searches):
        mine = [r for r in runs if r["searches"] == count]
        print(
            f"| {count} | {_spread([r['p50_ms'] for r in mine], '{:.1f}')}"
            f" | {_spread([r['p99_ms'] for r in mine], '{:.1f}')}"
            f" | {_spread([r['max_ms'] for r in mine], '{:.0f}')}"
            f" | {_spread([r['messages_per_s'] for r in mine], '{:.0f}')}"
            f" | {_spread([r.get('search_MBps', 0) for r in mine], '{:.0f}')} |"
        )
    bad = [r for r in runs if not r["byte_exact"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
