"""
The stateless mode (issue 21): ``--redis`` and ``--archive`` together,
each server's root only its cache.  Real ``twistd httpfstream`` processes
on roots of their own (`support.stateless.Cluster`), one real
``redis-server`` without persistence and one real ``moto_server``; live
bytes in Redis and in chunk objects, finished resources one object each;
servers SIGKILLed with their roots wiped, started again empty, the bucket
and Redis taken away while sessions run.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.clients import close, finished, get, ws
from support.followers import open_follower
from support.processes import APPEND, FOLLOW, Child
from support.proxies import Forwarder
from support.s3 import MotoServer, S3Env
from support.stateless import (
    IDLE,
    LEASE,
    LIVE_CHUNK,
    Cluster,
    Redis,
    lines,
    pieces,
    resource_keys,
)
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from httpfstream.protocol import LEASE_LOST

KiB = 1024
MESSAGE = 64 * KiB


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def redis() -> Iterator[Redis]:
    server = Redis()
    server.start()
    yield server
    server.kill()


@pytest.fixture
def s3env(moto: MotoServer, tmp_path: Path, monkeypatch: Any) -> S3Env:
    """The standard AWS environment (inherited by every twistd), a new bucket."""
    env = S3Env(moto, moto.new_bucket(), tmp_path)
    env.apply(monkeypatch)
    return env


@pytest_twisted.async_yield_fixture
async def cluster(
    tmp_path: Path, redis: Redis, moto: MotoServer, s3env: S3Env
) -> AsyncIterator[Cluster]:
    made = Cluster(tmp_path, redis, moto, s3env.bucket)
    yield made
    await made.stop()
    made.check_logs()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def send(appender: Any, data: bytes, acked: int = 0) -> int:
    """``data`` in 64 KiB messages, acknowledged; the size acknowledged."""
    for piece in pieces(data, MESSAGE):
        appender.sendMessage(piece, isBinary=True)
    size = acked + len(data)
    await appender.until_ack(size, timeout=30)
    return size


async def write(child: Child, data: bytes) -> None:
    """Into a CLI's standard input, from a thread (a full pipe blocks)."""
    await threads.deferToThread(child.write, data)


async def snapshots_reach(server: Any, name: str, acked: bytes) -> None:
    """
    Snapshots of a live resource on ``server`` are prefixes of the
    acknowledged bytes (``acked``), and come to be all of them, with no
    more appended meanwhile, within a few seconds (another server learns
    of a batch through Redis).
    """
    deadline = time.monotonic() + 10
    while True:
        status, headers, body = await get(server.url(name))
        assert (status, headers["httpfstream-active"]) == (200, "1")
        assert acked.startswith(body), f"{len(body)} bytes, not a prefix"
        if len(body) == len(acked):
            return
        assert time.monotonic() < deadline, f"{len(body)} of {len(acked)} bytes"
        await sleep(0.05)


async def after_503(server: Any, name: str, deadline: float) -> bytes:
    """
    A snapshot of ``name`` on ``server`` once it answers other than 503
    (before ``deadline``): its bytes, or b"" for a 404.
    """
    while (answer := await get(server.url(name)))[0] == 503:
        assert time.monotonic() < deadline, f"still 503 on {server.port}"
        await sleep(0.2)
    status, _, body = answer
    assert status in (200, 404), status
    return body if status == 200 else b""


async def live_data_dropped(cluster: Cluster, name: str) -> None:
    """Once a resource is one object: no live keys, no chunk objects left."""
    await cluster.until(
        lambda: not cluster.live(name) and not cluster.chunks(),
        15,
        f"{name}'s live data dropped: keys {cluster.live(name)},"
        f" chunks {sorted(cluster.chunks())}",
    )


async def test_append_on_a_follow_on_b_then_one_object(cluster, children):
    """
    A session of 4.5 MB on A, followed on B (WebSocket by the CLI,
    ``follow=1``, and a late WebSocket follower whose start is in a chunk
    already in the bucket): B's snapshots are what A acknowledged, full
    chunks move to the bucket while the session runs and Redis keeps less
    than a few of them; at the end, one object, and the live data gone.
    """
    a, b = await cluster.start(), await cluster.start()
    name = "build.log"
    data = lines(45_000)
    appender = await ws(a.ws_url(name, ack=1), "APPEND")
    assert appender.status == 101, (appender.status, appender.close_reason)
    http = await open_follower(b, name, "http")
    assert http.live
    cli = Child(FOLLOW, "-v", "--retry", "--retry-for", "60", b.url(name))
    children.append(cli)
    late = None
    sent = 0
    for n, piece in enumerate(pieces(data, MESSAGE), 1):
        appender.sendMessage(piece, isBinary=True)
        sent += len(piece)
        if n % 16:
            continue
        # Each MiB: B's snapshots are what A acknowledged.
        await appender.until_ack(sent, timeout=30)
        await snapshots_reach(b, name, data[:sent])
        if late is None:
            await cluster.until(
                lambda: bool(cluster.chunks()), 30, "a chunk under .httpfstream/live/"
            )
            late = await open_follower(b, name, "ws", offset=100_000)
            assert late.live
    await appender.until_ack(len(data), timeout=30)
    assert late is not None
    # Full chunks of --live-chunk bytes went to the bucket; once the moves
    # have caught up, Redis holds a few chunks' worth at most.
    assert set(cluster.chunks().values()) == {LIVE_CHUNK}, cluster.chunks()
    await cluster.until(
        lambda: sum(resource_keys(cluster.redis, name).values()) < 3 * LIVE_CHUNK,
        30,
        f"Redis holding little of {name}: {resource_keys(cluster.redis, name)}",
    )
    # B reads the live resource across Redis and the bucket's chunks.
    status, headers, body = await get(
        b.url(name), headers={"Range": f"bytes={LIVE_CHUNK - 50}-{LIVE_CHUNK + 49}"}
    )
    assert (status, body) == (206, data[LIVE_CHUNK - 50 : LIVE_CHUNK + 50])
    status, headers, body = await get(b.url(name, lines="-2"))
    assert (status, headers["httpfstream-line"], body) == (200, "44999", data[-200:])
    status, _, body = await get(b.url(name, lines="20000-20000"))
    assert body == lines(1, start=20000)

    assert await close(appender) == 1000
    end = await http.ended(timeout=30)
    assert end.clean and bytes(http.received) == data
    end = await late.ended(timeout=30)
    assert (end.clean, end.code) == (True, 1000)
    assert bytes(late.received) == data[100_000:]
    assert await cli.exit_status(30) == 0, bytes(cli.stderr)
    assert bytes(cli.stdout) == data

    assert await cluster.until_archived(name) == (len(data), True)
    assert cluster.object(name) == data
    assert cluster.metadata(name)["complete"] == "1"
    await live_data_dropped(cluster, name)
    for server in (b, a):
        status, headers, body = await get(server.url(name))
        assert (status, headers["httpfstream-complete"]) == (200, "1")
        assert headers["httpfstream-active"] == "0"
        assert body == data


async def test_a_lost_session_is_archived_incomplete_and_resumed_anywhere(cluster):
    """
    The appender's server SIGKILLed, its root wiped, its appender gone
    for good: a surviving server archives the resource incomplete after
    ``--archive-idle``, with every acknowledged byte; an APPEND with
    ``offset=`` resumes it on any server.
    """
    a, b, c = [await cluster.start() for _ in range(3)]
    name = "lost.log"
    data = lines(6000)  # 600,000 bytes: two chunks in the bucket, the rest in Redis
    appender = await ws(a.ws_url(name, ack=1), "APPEND")
    assert appender.status == 101
    await send(appender, data)
    follower = await open_follower(c, name, "ws")
    await follower.until_bytes(len(data), timeout=30)
    await cluster.kill(a)
    # Followers elsewhere are told the appender was lost (as in shared mode).
    end = await follower.ended(timeout=LEASE * 4)
    assert (end.clean, end.code) == (True, 4000)
    assert bytes(follower.received) == data
    size, complete = await cluster.until_archived(name, timeout=LEASE + IDLE + 20)
    assert (size, complete) == (len(data), False)
    assert cluster.object(name) == data
    assert cluster.metadata(name)["complete"] == "0"
    await live_data_dropped(cluster, name)
    status, headers, _ = await get(b.url(name), method="HEAD")
    assert status == 200
    assert headers["httpfstream-size"] == str(len(data))
    assert (headers["httpfstream-complete"], headers["httpfstream-active"]) == (
        "0",
        "0",
    )
    wrong = await ws(c.ws_url(name, offset=len(data) - 1), "APPEND")
    assert wrong.status == 412
    assert wrong.headers["httpfstream-size"] == str(len(data))
    more = lines(100, start=6001)
    resumed = await ws(c.ws_url(name, offset=len(data), ack=1), "APPEND")
    assert resumed.status == 101, (resumed.status, resumed.close_reason)
    await send(resumed, more, acked=len(data))
    assert await close(resumed) == 1000
    total = len(data) + len(more)
    assert await cluster.until_archived(name, size=total) == (total, True)
    assert cluster.object(name) == data + more
    assert cluster.metadata(name)["complete"] == "1"
    await live_data_dropped(cluster, name)
    status, _, body = await get(b.url(name))
    assert (status, body) == (200, data + more)


async def test_sigkill_of_the_appenders_server_with_its_root_wiped(cluster, children):
    """
    Three servers; ``httpfstream-append --retry`` on A through a forwarder
    (as a load balancer), ``httpfstream-follow --retry --wait`` on B and C.
    A is SIGKILLed with bytes in flight and its root removed; the forwarder
    sends the appender to B, where it resumes.  Every follower gets every
    byte, every acknowledged byte is in the final object, and the object is
    the whole input.
    """
    a, b, c = [await cluster.start() for _ in range(3)]
    name = "moved.log"
    data = lines(40_000)
    first, in_flight, rest = (
        data[:1_500_000],
        data[1_500_000:1_800_000],
        data[1_800_000:],
    )
    front = Forwarder(a.port, frames=True)
    try:
        appender = Child(APPEND, "-v", "--retry", "--retry-for", "60", front.url(name))
        children.append(appender)
        await appender.until_stderr(b"appending to")
        followers = [
            Child(FOLLOW, "-v", "--retry", "--wait", "--retry-for", "60", s.url(name))
            for s in (b, c)
        ]
        children.extend(followers)
        acked = front.until_ack(len(first))
        await write(appender, first)
        await acked
        await cluster.until(lambda: bool(cluster.chunks()), 30, "a chunk in the bucket")
        await write(appender, in_flight)
        await cluster.kill(a)
        front.target = b.port
        await write(appender, rest)
        appender.close_stdin()
        assert await appender.exit_status(90) == 0, bytes(appender.stderr)
        assert b"resumed appending" in appender.stderr, bytes(appender.stderr)
        for follower in followers:
            assert await follower.exit_status(60) == 0, bytes(follower.stderr)
            assert bytes(follower.stdout) == data
    finally:
        await front.stop()
    assert await cluster.until_archived(name, size=len(data)) == (len(data), True)
    stored = cluster.object(name)
    assert stored is not None and stored[: len(first)] == first  # acknowledged
    assert stored == data
    assert cluster.metadata(name)["complete"] == "1"
    await live_data_dropped(cluster, name)
    status, headers, body = await get(c.url(name))
    assert (status, headers["httpfstream-complete"], body) == (200, "1", data)


async def test_a_server_restarted_on_an_empty_root_serves_everything(cluster):
    """
    B killed and started again on an empty root serves a finished resource
    from the bucket and a live one (appended on A) from Redis and the
    chunks; so does A, restarted empty after its session ended.
    """
    a, b = await cluster.start(), await cluster.start()
    done, going = lines(7000), lines(8000, start=7001)
    appender = await ws(a.ws_url("done.log", ack=1), "APPEND")
    await send(appender, done)
    assert await close(appender) == 1000
    assert await cluster.until_archived("done.log") == (len(done), True)
    live = await ws(a.ws_url("live.log", ack=1), "APPEND")
    acked = await send(live, going[:700_000])
    await cluster.kill(b)
    b = await cluster.start()
    assert not (b.root / "done.log").exists()

    status, headers, body = await get(b.url("done.log"))
    assert (status, headers["httpfstream-complete"], body) == (200, "1", done)
    status, _, body = await get(
        b.url("done.log"), headers={"Range": "bytes=300000-300099"}
    )
    assert (status, body) == (206, done[300_000:300_100])
    status, headers, body = await get(b.url("live.log"))
    assert (status, headers["httpfstream-active"], body) == (200, "1", going[:acked])
    status, headers, body = await get(b.url("live.log", lines="-1"))
    assert (status, headers["httpfstream-line"]) == (200, "7000")
    assert body == going[acked - 100 : acked]
    follower = await open_follower(b, "live.log", "ws")
    assert follower.live
    acked = await send(live, going[700_000:], acked=acked)
    assert await close(live) == 1000
    end = await follower.ended(timeout=30)
    assert (end.clean, end.code) == (True, 1000)
    assert bytes(follower.received) == going
    assert await cluster.until_archived("live.log") == (len(going), True)

    await cluster.kill(a)
    a = await cluster.start()
    for server in (a, b):
        for name, body in (("done.log", done), ("live.log", going)):
            status, headers, got = await get(server.url(name))
            assert (status, headers["httpfstream-complete"]) == (200, "1")
            assert got == body


async def test_an_unreachable_bucket_loses_nothing(cluster, moto, monkeypatch):
    """
    The bucket (behind a forwarder) goes away mid-session: appends go on,
    acknowledged, Redis holding what cannot move (within ``--live-max``);
    the session ends well, its object waits; the bucket back, the servers
    catch up by themselves and nothing is lost.
    """
    bucket = Forwarder(moto.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{bucket.port}")
    try:
        a, b = await cluster.start(), await cluster.start()
        name = "outage.log"
        data = lines(25_000)
        before, during = data[:600_000], data[600_000:]
        appender = await ws(a.ws_url(name, ack=1), "APPEND")
        acked = await send(appender, before)
        follower = await open_follower(b, name, "ws")
        await follower.until_bytes(acked, timeout=30)  # at the tail, in Redis
        await cluster.until(lambda: bool(cluster.chunks()), 30, "a chunk in the bucket")
        bucket.target = None  # refused, as a bucket that does not answer
        bucket.cut()
        await send(appender, during, acked=acked)
        await follower.until_bytes(len(data), timeout=30)
        # The session ends well: its bytes are shared, the object can wait.
        assert await close(appender) == 1000
        # Nothing can reach the bucket: what did not move is in Redis.
        assert cluster.live(name), "the live data is kept while the bucket is away"
        assert cluster.object(name) is None
        # The bucket back: nothing more is asked of the servers, they try
        # again by themselves.
        bucket.target = moto.port
        size, complete = await cluster.until_archived(name, timeout=60)
        assert (size, complete) == (len(data), True)
        assert cluster.object(name) == data
        assert cluster.metadata(name)["complete"] == "1"
        await live_data_dropped(cluster, name)
        end = await follower.ended(timeout=30)
        assert (end.clean, end.code) == (True, 1000)
        assert bytes(follower.received) == data
    finally:
        await cluster.stop()
        await bucket.stop()


async def test_redis_restarted_empty_mid_session(cluster, redis):
    """
    Redis restarted without persistence while A appends.  What is certain
    (docs/SCALING.md): the session ends (1013, ``LEASE_LOST``: its lease
    cannot be renewed); what had reached the bucket, or a server's copy,
    survives, and what was only in Redis may not; claims are refused (503) for a lease after Redis comes
    back; every server then gives one size, the shared truth, holding a
    prefix of the input with at least the bytes that were in the bucket;
    the appender resumes there, and the servers stay up.

    """
    a, b = await cluster.start(), await cluster.start()
    name = "redis.log"
    data = lines(20_000)
    first = data[:700_000]
    appender = await ws(a.ws_url(name, ack=1), "APPEND")
    acked = await send(appender, first)
    follower = await open_follower(b, name, "ws")
    await follower.until_bytes(acked, timeout=30)
    await cluster.until(
        lambda: sum(cluster.chunks().values()) >= 2 * LIVE_CHUNK,
        30,
        "two chunks in the bucket",
    )
    in_bucket = sum(cluster.chunks().values())
    redis.kill()
    assert await finished(appender, timeout=LEASE * 2) == LEASE_LOST
    redis.start(provisioned=False)
    refused = await ws(b.ws_url(name, offset=acked), "APPEND")
    assert refused.status == 503, refused.status

    # What survives is a prefix of what was acknowledged (nothing: 404),
    # the same on every server once it answers again, A's too, which held
    # the stream open (the shared truth, not a server's own idea of it).
    # A copy longer than what the bucket holds becomes the object, and the
    # feed tells the other servers: they agree within a lease or so.
    deadline = time.monotonic() + LEASE * 3 + 10
    while True:
        survived = {
            label: await after_503(server, name, deadline)
            for label, server in (("A", a), ("B", b))
        }
        sizes = {s: len(held) for s, held in survived.items()}
        if survived["A"] == survived["B"]:
            break
        assert time.monotonic() < deadline, f"the servers disagree: {sizes}"
        await sleep(0.2)
    held = survived["A"]
    size = len(held)
    assert size <= acked and held == first[:size], (size, acked)
    # Every byte that had reached the bucket survives (the chunk objects
    # are adopted), and so does every byte a server's copy held: B
    # followed to the end, so nothing acknowledged is lost here.
    assert size >= in_bucket, f"{in_bucket} bytes were in the bucket, {size} left"
    assert size == acked, (size, acked)

    while True:
        resumed = await ws(a.ws_url(name, offset=size, ack=1), "APPEND")
        if resumed.status == 101:
            break
        assert resumed.status in (409, 503), resumed.status
        assert time.monotonic() < deadline + LEASE * 2, "no claim"
        await sleep(0.2)
    await send(resumed, data[size:], acked=size)
    assert await close(resumed) == 1000
    assert await cluster.until_archived(name, size=len(data)) == (len(data), True)
    assert cluster.object(name) == data
    assert all(s.process.poll() is None for s in (a, b)), "a server went down"
    # Whether B's follower was ended or went on, it never got a wrong byte.
    assert data.startswith(bytes(follower.received))


async def test_a_server_frozen_mid_session_never_appends_after_the_next_holder(
    cluster,
):
    """
    Fencing where the bytes land: A appends a burst and is SIGSTOPped
    right after an ack, with batches queued; B takes the lease once it
    expires and appends; A thaws.  Redis refuses every batch A still
    sends (the lease is checked in the same step as the append), so the
    resource is A's bytes up to where B began, then B's, and nothing of A
    after; no window is left (the shared root's has one:
    tests/test_fencing.py).
    """
    a, b = await cluster.start(), await cluster.start()
    for round_ in range(3):
        name = f"frozen-{round_}.log"
        first = await ws(a.ws_url(name, ack=1), "APPEND")
        assert first.status == 101
        burst = bytes(range(256)) * (64 << 10) * 2  # 32 MiB
        for i in range(0, len(burst), 1 << 20):
            first.sendMessage(burst[i : i + (1 << 20)], isBinary=True)
        await first.until_ack((2 + round_) << 20, timeout=30)
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            second = None
            for _ in range(100):
                second = await ws(b.ws_url(name, ack=1), "APPEND")
                if second.status == 101:
                    break
                assert second.status == 409, second.status
                await sleep(LEASE / 10)
            assert second is not None and second.status == 101
            start = int(second.headers["httpfstream-size"])
            theirs = b"written by the next holder\n" * 1000
            second.sendMessage(theirs, isBinary=True)
            await second.until_ack(start + len(theirs))
            assert await close(second) == 1000
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        assert await finished(first, timeout=30) == LEASE_LOST
        assert first.acks[-1] <= start
        expected = burst[:start] + theirs
        status, _, body = await get(a.url(name))
        assert (status, body) == (200, expected), (status, len(body), len(expected))
        await cluster.until_archived(name, size=len(expected))
        assert cluster.object(name) == expected
