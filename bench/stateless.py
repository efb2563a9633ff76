"""
The stateless mode (issue 21: ``--redis`` with ``--archive``, each root
only a cache) against the shared-root mode, in one run (docs/PERFORMANCE.md,
docs/SCALING.md)::

    make bench/fastgen
    .venv/bin/python bench/stateless.py --gb 1 --seconds 10 --sizes 1,16,64,256

The defaults (``--gb 0.0625 --seconds 3 --sizes 1,16 --small 20``) are a
smoke run of a minute or two.  A ``redis-server``, a ``moto_server`` and
``twistd httpfstream`` servers on 127.0.0.1; it measures:

1. **streams** (``--modes``: shared, ``--redis`` on one root; stateless, a
   root each), the appender on A and every follower on B: 1 -> 1 in 64 KiB
   messages at full speed (``--gb`` GiB), 1 -> 100 at 1,000 messages of
   1 KiB a second (``--seconds``); bench/fastgen checks every byte;
   throughput, latency, the CPU share of A, B, Redis and moto;
2. **Redis memory per live resource** at each of ``--sizes`` (MiB), the
   session held open: INFO ``used_memory`` above where it was (the most,
   sampled every 20 ms; once persisted; once the chunks' moves caught up;
   after the end) and MEMORY USAGE of the resource's keys;
3. **S3 requests and bytes per GiB appended**: ``--gb`` GiB appended on A
   from a file of 100-byte lines, followed on B; the servers' summaries;
4. **a session's end to its object**: the appender's exit to a HEAD of
   the object at its size, complete (every 10 ms), and the servers' own
   ``archived`` figure; for that session and ``--small`` 1 MiB POSTs;
5. **a cold cache**: the ``--gb`` GiB resource read whole from a server on
   an empty root (first and last byte), then again from its cache.

moto is a Python emulator on the same machine: rates against it are far
below a real store's; requests per GiB and the bounds carry over.  Every
wait has a deadline; about three times ``--gb`` GiB of disk (removed at
the end) and as much in moto's memory.  Prints one JSON document (also to
``--out``); exits 1 if a stream was not byte-exact, never on a timing.
"""

from __future__ import annotations

import argparse
import filecmp
import http.client
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from archive import environment, log_file, read  # noqa: E402
from run import Server, _cpu, loadgen, window_cpu  # noqa: E402
from support.processes import BIN, Twistd  # noqa: E402
from support.s3 import MotoServer  # noqa: E402
from support.stateless import Redis, resource_keys  # noqa: E402

from httpfstream.tap import parse_size  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PREFIX = "bench"
LIVE = f"{PREFIX}/.httpfstream/live/"
APPEND = str(BIN / "httpfstream-append")
FOLLOW = str(BIN / "httpfstream-follow")


def options(mode: str, redis: Redis, bucket: str, live_chunk: str | None) -> list[str]:
    """A server's options in ``mode`` (``shared`` or ``stateless``)."""
    found = [f"--redis={redis.url}"]
    if mode == "stateless":
        found.append(f"--archive=s3://{bucket}/{PREFIX}")
        if live_chunk:
            found.append(f"--live-chunk={live_chunk}")
    return found


def until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 10 ms; the seconds it took; fail after ``timeout``."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not so after {timeout}s: {what}")
        time.sleep(0.01)
    return time.perf_counter() - started


def head(port: int, name: str) -> dict[str, str]:
    """A HEAD of ``name`` on a server: its headers (lower case), or {}."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("HEAD", f"/{name}")
    response = connection.getresponse()
    response.read()
    connection.close()
    found = {k.lower(): v for k, v in response.getheaders()}
    return found if response.status == 200 else {}


def in_bucket(s3: Any, bucket: str, name: str) -> tuple[int, str] | None:
    """The object's size and ``complete`` metadata, or None."""
    try:
        answer = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/{name}")
    except s3.exceptions.ClientError:
        return None
    return int(answer["ContentLength"]), answer["Metadata"].get("complete", "")


def chunked(s3: Any, bucket: str) -> int:
    """Bytes in chunk objects of live resources (under ``.httpfstream/live/``)."""
    total, token = 0, {}
    for _ in range(10_000):
        page = s3.list_objects_v2(Bucket=bucket, Prefix=LIVE, **token)
        total += sum(o["Size"] for o in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return total
        token = {"ContinuationToken": page["NextContinuationToken"]}
    raise AssertionError("the listing did not end")


def summary(server: Twistd) -> dict[str, int] | None:
    """The S3 requests and bytes of the server's stop line, if it logged one."""
    text = b"".join(server.log).decode(errors="replace")
    found = re.search(
        r"(\d+) S3 requests \(([^)]*)\), (\d+) bytes sent, (\d+) received", text
    )
    if not found:
        return None
    parts = (p.rsplit(" ", 1) for p in found.group(2).split(", ") if p != "none")
    by = {kind: int(n) for kind, n in parts}
    return {
        "requests": int(found.group(1)),
        **by,
        "sent": int(found.group(3)),
        "received": int(found.group(4)),
    }


def per_gib(summaries: list[dict[str, int] | None], gib: float) -> dict[str, float]:
    """The summaries added up, per GiB appended."""
    total: dict[str, float] = {}
    for found in summaries:
        for key, value in (found or {}).items():
            total[key] = total.get(key, 0) + value
    return {key: round(value / gib, 1) for key, value in total.items()}


def posted(server: Twistd, s3: Any, bucket: str, name: str, body: bytes) -> float:
    """POST ``body`` as ``name``: the seconds from its answer to its object."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST", f"/{name}", body)
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    return until(lambda: in_bucket(s3, bucket, name) is not None, 60, name)


def quantiles(values: list[float]) -> dict[str, float] | None:
    """The median, 95th percentile and most of ``values`` (seconds)."""
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 3),
        "max": round(ordered[-1], 3),
    }


def logged_delays(*servers: Twistd) -> list[float]:
    """The servers' own ``... s after its session ended``, in order."""
    text = b"".join(line for s in servers for line in s.log).decode(errors="replace")
    return [float(s) for s in re.findall(r"([\d.]+)s after its session ended", text)]


# 1. Streams, in both modes.


def stream_row(
    mode: str, row: str, args: dict[str, Any], moto: MotoServer, live_chunk: str | None
) -> dict[str, Any]:
    """One fastgen row: the appender on A, every follower on B."""
    redis = Redis()
    redis.start()
    bucket = moto.new_bucket()
    shared = tempfile.mkdtemp(prefix="hfs-bench-shared-") if mode == "shared" else None
    flags = options(mode, redis, bucket, live_chunk)
    servers: list[Server] = []
    try:
        try:
            for _ in range(2):
                servers.append(Server("httpfstream", *flags, root=shared))
        except RuntimeError as e:  # a mode this checkout does not have
            print(f"  {row:<24} {mode:<10} {e}", file=sys.stderr, flush=True)
            return {"mode": mode, "row": row, "byte_exact": False, "errors": [str(e)]}
        slug = re.sub(r"[^A-Za-z0-9]+", "-", row).strip("-")
        urls = [s.url(f"bench/{slug}.bin") for s in servers]
        marks: dict[str, dict[str, float]] = {}
        assert redis.process is not None
        pids = {"redis": redis.process.pid, "moto": moto.process.pid}

        def on_event(event: str) -> None:
            marks[event] = {
                "server": servers[0].cpu(),
                "server_b": servers[1].cpu(),
                **{name: _cpu(pid) for name, pid in pids.items()},
            }

        result = loadgen({**args, "url": urls[0], "follow_urls": urls[1:]}, on_event)
    finally:
        for server in servers:
            server.stop()
        redis.kill()
        if shared:
            shutil.rmtree(shared, ignore_errors=True)
    for process in ("server", "server_b", "redis", "moto"):
        window = window_cpu(result, marks, process)
        if window is not None:
            result[f"{process}_cpu"] = round(window, 3)
    keep = ("append_MBps", "delivered_MBps", "messages_per_s", "p50_ms", "p99_ms")
    shown = {k: result[k] for k in keep if result.get(k) is not None}
    shown.update((k, v) for k, v in result.items() if k.endswith("_cpu"))
    shown["byte_exact"] = result.get("byte_exact", False)
    if result.get("errors"):
        shown["errors"] = result["errors"]
    print(f"  {row:<24} {mode:<10} {shown}", file=sys.stderr, flush=True)
    return {"mode": mode, "row": row, **shown}


def streams(args: argparse.Namespace, moto: MotoServer) -> list[dict[str, Any]]:
    rows = {
        "1x1 64KiB": {
            "scenario": "stream",
            "followers": 1,
            "size": 65536,
            "count": max(16, int(args.gb * GiB) // 65536),
            # Bounded at 5 MB/s: a stall ends the row in minutes, not hours.
            "timeout": 60 + int(args.gb * GiB / 5e6),
        },
        "1x100 1KiB@1000/s": {
            "scenario": "stream",
            "followers": 100,
            "size": 1024,
            "rate": 1000,
            "count": 1000 * args.seconds,
            "timeout": 60 + 2 * args.seconds,
        },
    }
    return [
        stream_row(mode, row, params, moto, args.live_chunk)
        for row, params in rows.items()
        for mode in args.modes.split(",")
    ]


# 2. Redis memory per live resource.


def redis_memory(
    args: argparse.Namespace, moto: MotoServer, folder: Path
) -> list[dict[str, Any]]:
    """Each size of ``--sizes`` in turn, on one server."""
    redis = Redis()
    redis.start()
    bucket = moto.new_bucket()
    server = Twistd.start(
        folder / "memory", *options("stateless", redis, bucket, args.live_chunk)
    )
    found = []
    try:
        for mib in (int(s) for s in args.sizes.split(",")):
            found.append(live_resource(server, redis, moto, bucket, mib, args))
            print(f"  Redis memory {found[-1]}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        redis.kill()
    return found


def live_resource(
    server: Twistd,
    redis: Redis,
    moto: MotoServer,
    bucket: str,
    mib: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """
    One session of ``mib`` MiB held open: what Redis holds for it once
    its bytes are persisted, at most meanwhile (INFO sampled every 20 ms),
    once the chunks' moves have caught up, and after it ended.
    """
    s3 = moto.client()
    name = f"memory/{mib}MiB.log"
    size = mib * MiB
    before = redis.used_memory()
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02):
            peak[0] = max(peak[0], redis.used_memory() - before)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    block = b"".join(b"%-99d\n" % i for i in range(10_486))[:MiB]
    appender = subprocess.Popen([APPEND, "-q", server.url(name)], stdin=subprocess.PIPE)
    assert appender.stdin is not None
    try:
        for _ in range(mib):
            appender.stdin.write(block)
        appender.stdin.flush()
        persisted = lambda: head(server.port, name).get("httpfstream-size")  # noqa: E731
        until(lambda: persisted() == str(size), 300, f"{name} persisted")
        at_persisted = redis.used_memory() - before
        keys_persisted = sum(resource_keys(redis, name).values())
        # Caught up: the chunks hold all but what is short of a full chunk.
        chunk = args.live_chunk_bytes
        try:
            until(lambda: chunked(s3, bucket) >= size - chunk, 300, "chunks moved")
            settled: tuple[int, int] | None = (
                redis.used_memory() - before,
                sum(resource_keys(redis, name).values()),
            )
        except TimeoutError:
            settled = None
    finally:
        sampling.set()
        sampler.join()
        appender.stdin.close()
        appender.wait(300)
    until(lambda: in_bucket(s3, bucket, name) == (size, "1"), 300, f"{name} archived")
    return {
        "MiB": mib,
        "used_memory_when_persisted": at_persisted,
        "keys_when_persisted": keys_persisted,
        "used_memory_most": peak[0],
        "used_memory_moves_caught_up": settled and settled[0],
        "keys_moves_caught_up": settled and settled[1],
        "used_memory_after_end": redis.used_memory() - before,
        "keys_after_end": resource_keys(redis, name),
    }


# 3-5. The archive: requests per GiB, session end to object, a cold cache.


def archive(args: argparse.Namespace, moto: MotoServer, folder: Path) -> dict[str, Any]:
    """Parts 3 to 5, each on servers of its own (all stopped at the end)."""
    redis = Redis()
    redis.start()
    bucket = moto.new_bucket()
    flags = options("stateless", redis, bucket, args.live_chunk)
    started: list[Twistd] = []

    def start(root: str) -> Twistd:
        started.append(Twistd.start(folder / root, *flags))
        return started[-1]

    source = folder / "big.log"
    log_file(source, int(args.gb * GiB) // MiB)
    try:
        found = {"session": one_session(start, moto.client(), bucket, source)}
        print(f"  one session {found['session']}", file=sys.stderr, flush=True)
        body = source.read_bytes()[:MiB]
        found["small_sessions"] = small_sessions(start, moto, bucket, body, args.small)
        print(f"  small sessions {found['small_sessions']}", file=sys.stderr)
        found["cold_cache"] = cold_cache(start, source.stat().st_size)
        print(f"  cold cache {found['cold_cache']}", file=sys.stderr, flush=True)
    finally:
        for server in started:
            server.stop()
        redis.kill()
    return found


def one_session(
    start: Callable[[str], Twistd], s3: Any, bucket: str, source: Path
) -> dict[str, Any]:
    """``source`` appended on A, followed on B: the time to its object, S3's cost."""
    size = source.stat().st_size
    a, b = start("a"), start("b")
    followed = source.with_name("followed")
    with open(followed, "wb") as out:
        follower = subprocess.Popen(
            [FOLLOW, "-q", "--wait", b.url("big.log")], stdout=out
        )
        began = time.perf_counter()
        with open(source, "rb") as stdin:
            subprocess.run([APPEND, "-q", a.url("big.log")], stdin=stdin, check=True)
        ended = time.perf_counter()
        to_object = until(
            lambda: in_bucket(s3, bucket, "big.log") == (size, "1"), 600, "archived"
        )
        follower.wait(600)
    a.stop()
    b.stop()
    return {
        "bytes": size,
        "append_s": round(ended - began, 2),
        "appended_MBps": round(size / (ended - began) / 1e6, 1),
        "followed_on_B_byte_exact": filecmp.cmp(source, followed, shallow=False),
        "end_to_object_s": round(to_object, 3),
        "logged_end_to_object_s": logged_delays(a, b),
        "s3_per_GiB": per_gib([summary(a), summary(b)], size / GiB),
        "s3_A": summary(a),
        "s3_B": summary(b),
    }


def small_sessions(
    start: Callable[[str], Twistd], moto: MotoServer, bucket: str, body: bytes, n: int
) -> dict[str, Any]:
    """``n`` POSTs of ``body``, one after the other: each answer to its object."""
    d = start("d")
    s3 = moto.client()
    delays = [posted(d, s3, bucket, f"small/{i}.log", body) for i in range(n)]
    d.stop()
    return {
        "count": n,
        "end_to_object_s": quantiles(delays),
        "logged_s": quantiles(logged_delays(d)),
        "s3_per_GiB": per_gib([summary(d)], max(1, n * len(body)) / GiB),
    }


def cold_cache(start: Callable[[str], Twistd], size: int) -> dict[str, Any]:
    """The large resource read whole on an empty root, then again."""
    c = start("c")
    cold = read(c, "big.log")
    warm = read(c, "big.log")
    c.stop()
    assert cold[2] == warm[2] == size, (cold, warm, size)
    return {
        "first_byte_s": round(cold[0], 3),
        "last_byte_s": round(cold[1], 2),
        "again_first_byte_s": round(warm[0], 3),
        "again_last_byte_s": round(warm[1], 2),
        "s3": summary(c),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gb", type=float, default=0.0625, help="GiB of the large session"
    )
    parser.add_argument("--seconds", type=int, default=3, help="of the 1 -> 100 row")
    parser.add_argument("--sizes", default="1,16", help="live resources' sizes, MiB")
    parser.add_argument("--small", type=int, default=20, help="1 MiB sessions")
    parser.add_argument("--modes", default="shared,stateless", help="for the streams")
    parser.add_argument(
        "--live-chunk", default=None, help="the servers' --live-chunk (their default)"
    )
    parser.add_argument(
        "--parts", default="streams,memory,archive", help="which measures to run"
    )
    parser.add_argument("--out", help="also write the JSON document here")
    args = parser.parse_args()
    # What the moves are measured against: the given chunk, or the default.
    args.live_chunk_bytes = parse_size(args.live_chunk or "8M")
    parts = args.parts.split(",")
    results: dict[str, Any] = {"gb": args.gb, "seconds": args.seconds}
    moto = MotoServer()
    try:
        with tempfile.TemporaryDirectory(prefix="hfs-bench-stateless-") as tmp:
            folder = Path(tmp)
            environment(moto, folder)
            if "streams" in parts:
                results["streams"] = streams(args, moto)
            if "memory" in parts:
                results["redis_memory_per_live_resource"] = redis_memory(
                    args, moto, folder
                )
            if "archive" in parts:
                results["archive"] = archive(args, moto, folder)
    finally:
        moto.stop()
    text = json.dumps(results, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    bad = [r for r in results.get("streams", []) if not r["byte_exact"]]
    for r in bad:
        print(f"NOT BYTE-EXACT: {r['row']} ({r['mode']}): {r.get('errors')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
