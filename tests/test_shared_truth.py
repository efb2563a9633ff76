"""
Shared mode (``--redis``): a server's idea of a resource's size when its
feed missed growth, through real processes: two twistd servers on one root
and a real redis-server, restarted without persistence (its data lost).

How B's stream is made stale, deterministically: B keeps the stream open
(a follower that has not read what it was sent holds it there) after the
first session, appended on A, ended; B is then stopped (SIGSTOP) once its
blocking read of the feed has run out in Redis, so nothing can reach it;
a second session on A appends and announces its growth in the feed; Redis
is restarted empty, which loses those entries and stops the second session
(1013, its final ack what the file holds); then B goes on (SIGCONT), with
a stream that says the first session's size and completion while the file
holds more and is incomplete.  Nothing in the feed will tell it: the
file must.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.clients import Probe, Raw, close, finished, get, raw, ws
from support.followers import open_follower
from support.processes import Twistd
from support.redis import Redis
from twisted.internet import reactor
from twisted.internet.task import deferLater

NAME = "stale.log"
#: The lease the servers run with here (seconds): short, so a claim after
#: Redis lost its data waits little.
LEASE = 2

#: More than the kernel holds in flight to a follower that does not read
#: (Linux's default tcp_wmem lets a send buffer grow to 4 MiB; the
#: follower's receive buffer is fixed small), so its cursor on B stays
#: behind and keeps B's stream open.
FIRST = b"".join(b"%07d first session\n" % i for i in range((8 << 20) // 22))
SECOND = b"".join(b"%04d second session\n" % i for i in range(200))
THIRD = b"third session, on B\n"


@pytest.fixture
def pair(tmp_path: Any, redis: Redis) -> Iterator[list[Twistd]]:
    """Two servers on one root and one Redis."""
    root = tmp_path / "root"
    servers: list[Twistd] = []
    try:
        for _ in range(2):
            servers.append(
                Twistd.start(root, f"--redis={redis.url}", f"--redis-lease={LEASE}")
            )
        yield servers
    finally:
        for s in servers:
            if s.process.poll() is None:
                os.kill(s.process.pid, signal.SIGCONT)
            s.stop()
    for s in servers:
        log = b"".join(s.log)
        assert b"Traceback" not in log and b"Unhandled" not in log, log.decode()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def redis_says(redis: Redis, holds: Callable[[], bool], timeout: float) -> None:
    """Poll Redis (another process: no event to wait on) until ``holds()``."""
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, f"Redis did not say so in {timeout}s"
        await sleep(0.05)


async def head(server: Twistd) -> dict[str, str]:
    status, headers, _ = await get(server.url(NAME), method="HEAD")
    assert status == 200, status
    return headers


async def stalled_follower(server: Twistd) -> Raw:
    """
    A ``follow=1`` GET that reads nothing until `drain`: its receive buffer
    shrunk and its reading paused, so the server's cursor for it stays
    behind, and keeps the stream open on that server.
    """
    client = await raw(server)  # type: ignore[arg-type]
    assert client.transport is not None
    # Fixed, so it does not grow to take the megabytes; not smaller, or the
    # drain crawls through a window of a few kilobytes.
    client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    client.transport.pauseProducing()
    client.send(
        f"GET /{NAME}?follow=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    return client


async def drain(client: Raw) -> bytes:
    """Everything the stalled follower was sent: the body, de-chunked."""
    assert client.transport is not None
    client.transport.resumeProducing()
    await client.closed.addTimeout(30, reactor)
    status, headers = await client.response_head()
    assert (status, headers["transfer-encoding"]) == (200, "chunked")
    body, out = client.body(), bytearray()
    for _ in range(len(body)):
        line, _, body = body.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return bytes(out)


async def first_session_then_b_misses_the_second(
    a: Twistd, b: Twistd, redis: Redis
) -> Raw:
    """
    The module docstring's set-up, up to B stopped with the feed's news of
    the second session lost; returns B's follower (still holding the
    stream there).  B is left stopped.
    """
    first = await ws(a.ws_url(NAME, ack=1), "APPEND")
    assert first.status == 101
    follower = await stalled_follower(b)
    deadline = time.monotonic() + 10
    while (await head(b)).get("httpfstream-followers") != "1":
        assert time.monotonic() < deadline
        await sleep(0.05)
    for i in range(0, len(FIRST), 64 << 10):
        first.sendMessage(FIRST[i : i + (64 << 10)])
    await first.until_ack(len(FIRST), timeout=30)
    assert await close(first) == 1000
    # B reads the end from the feed; its follower, far behind, keeps the
    # stream open there.
    deadline = time.monotonic() + 10
    while (headers := await head(b))["httpfstream-active"] != "0":
        assert time.monotonic() < deadline
        await sleep(0.05)
    assert headers["httpfstream-size"] == str(len(FIRST))
    assert headers["httpfstream-complete"] == "1"
    assert headers["httpfstream-followers"] == "1"

    os.kill(b.process.pid, signal.SIGSTOP)
    # B's last blocking read, sent before it stopped, runs out in Redis
    # (so the second session's entries cannot be sent to it).
    await redis_says(
        redis, lambda: "blocked_clients:0" in redis.reply("INFO", "clients"), 10
    )
    second = await ws(a.ws_url(NAME, offset=len(FIRST), ack=1), "APPEND")
    assert second.status == 101, second.status
    second.sendMessage(SECOND)
    await second.until_ack(len(FIRST) + len(SECOND))
    redis.kill()
    redis.start()  # empty: no boot mark, the quarantine applies
    # A's next renewal finds Redis's data lost: its session stops, every
    # byte it acknowledged in the file.
    assert await finished(second, timeout=LEASE * 2) == 1013
    assert second.acks[-1] == len(FIRST) + len(SECOND)
    assert (a.root / NAME).read_bytes() == FIRST + SECOND
    return follower


async def append_when_redis_answers(server: Twistd, offset: int) -> Probe:
    """An APPEND at ``offset``, tried again while it gets 503 (bounded)."""
    deadline = time.monotonic() + LEASE * 3 + 5
    while True:
        probe = await ws(server.ws_url(NAME, offset=offset, ack=1), "APPEND")
        if probe.status != 503:
            return probe
        assert time.monotonic() < deadline, probe.headers
        await sleep(0.1)


async def test_an_appender_resumes_where_the_file_ends_on_a_server_that_missed_it(
    pair, redis
):
    """
    The appender moves to B with the true offset (the file's size, its
    final ack): accepted; one giving the size B's stream last heard of:
    412 with the true size and completion.  B's stream is brought up to
    the file when its lease is won, before the offset is checked.
    """
    a, b = pair
    true = len(FIRST) + len(SECOND)
    try:
        follower = await first_session_then_b_misses_the_second(a, b, redis)
        # The quarantine (a lease, from A's renewal that found the data
        # lost) passes while B is stopped: B's first claim is decided at
        # once when it goes on, well before anything else could tell it.
        await redis_says(
            redis, lambda: redis.command("EXISTS", "httpfstream:boot") == ":1", 10
        )
        await redis_says(
            redis,
            lambda: redis.command("EXISTS", "httpfstream:quarantine") == ":0",
            LEASE * 3,
        )
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
    stale = await append_when_redis_answers(b, len(FIRST))
    assert stale.status == 412, (stale.status, stale.headers)
    assert stale.headers["httpfstream-size"] == str(true)
    assert stale.headers["httpfstream-complete"] == "0"
    resumed = await append_when_redis_answers(b, true)
    assert resumed.status == 101, (resumed.status, resumed.headers)
    # A follower joining B now reads the second session's bytes from the
    # file, then the third's live.
    live = await open_follower(b, NAME, "ws", offset=len(FIRST))
    assert live.live
    resumed.sendMessage(THIRD)
    await resumed.until_ack(true + len(THIRD))
    assert await close(resumed) == 1000
    end = await live.ended()
    assert (end.clean, end.code) == (True, 1000)
    assert bytes(live.received) == SECOND + THIRD
    # The follower that held B's stream ends byte-exact where its session
    # (the first) ended.
    assert await drain(follower) == FIRST
    assert (a.root / NAME).read_bytes() == FIRST + SECOND + THIRD
    for s in (a, b):
        status, headers, body = await get(s.url(NAME))
        assert (status, headers["httpfstream-complete"]) == (200, "1")
        assert body == FIRST + SECOND + THIRD


async def test_readers_on_a_server_that_missed_it_learn_the_file_once_redis_is_back(
    pair, redis
):
    """
    No append needed: once Redis answers again, a lease later (when any
    holder it lost has stopped), B's streams that no session feeds take
    the file's size and completion, so its readers are told the truth
    (not the first session's end, complete) while the stream stays open.
    The feed began again in the new Redis: B reads it from its start, so
    the next session (on A) is live on B from its begin, before any batch.
    """
    a, b = pair
    true = len(FIRST) + len(SECOND)
    try:
        follower = await first_session_then_b_misses_the_second(a, b, redis)
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
    resumed = time.monotonic()
    deadline = resumed + LEASE + 5
    while (headers := await head(b))["httpfstream-size"] != str(true):
        assert time.monotonic() < deadline, headers
        await sleep(0.1)
    print(f"B's readers told the file's size {time.monotonic() - resumed:.2f}s after")
    assert headers["httpfstream-complete"] == "0"
    assert headers["httpfstream-followers"] == "1"  # still the same stream
    status, headers, body = await get(b.url(NAME))
    assert (status, headers["httpfstream-complete"], body) == (200, "0", FIRST + SECOND)
    third = await append_when_redis_answers(a, true)
    assert third.status == 101, (third.status, third.headers)
    deadline = time.monotonic() + 5
    while (headers := await head(b))["httpfstream-active"] != "1":
        assert time.monotonic() < deadline, headers
        await sleep(0.05)
    live = await open_follower(b, NAME, "ws", offset=true)
    assert live.live
    third.sendMessage(THIRD)
    assert await close(third) == 1000
    end = await live.ended()
    assert (end.clean, end.code, bytes(live.received)) == (True, 1000, THIRD)
    assert await drain(follower) == FIRST
    status, headers, body = await get(b.url(NAME))
    assert (status, headers["httpfstream-complete"]) == (200, "1")
    assert body == FIRST + SECOND + THIRD
