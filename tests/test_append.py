"""docs/PROTOCOL.md section 3: APPEND over WebSocket."""

from __future__ import annotations

import errno

from support.clients import (
    appender,
    client_frame,
    close,
    finished,
    get,
    raw,
    upgrade_request,
    ws,
)
from twisted.internet.defer import Deferred, DeferredList, fail
from zope.interface import implementer

from httpfstream.core.store import FileStore, IStoreFile
from httpfstream.core.writes import Fence


async def test_second_appender_gets_409_with_state_headers(server):
    a = await appender(server, "one.log", ack=1)
    a.sendMessage(b"12345")
    await a.until_ack(5)
    b = await ws(server.ws_url("one.log"), "APPEND")
    assert b.status == 409
    assert b.headers["httpfstream-active"] == "1"
    assert b.headers["httpfstream-size"] == "5"
    await close(a)


async def test_offset_must_match_the_size(server):
    await get(server.url("r.log"), method="POST", data=b"abc")
    refused = await ws(server.ws_url("r.log", offset=2), "APPEND")
    assert refused.status == 412
    assert refused.headers["httpfstream-size"] == "3"
    assert refused.headers["httpfstream-active"] == "0"
    refused = await ws(server.ws_url("new.log", offset=3), "APPEND")
    assert refused.status == 412
    assert not server.file("new.log").exists()
    a = await appender(server, "r.log", offset=3)
    a.sendMessage(b"d")
    await close(a)
    assert server.file("r.log").getContent() == b"abcd"
    a = await appender(server, "fresh.log", offset=0)
    await close(a)


async def test_accepted_appender_creates_the_resource(server):
    a = await appender(server, "empty.log")
    status, headers, body = await get(server.url("empty.log"))
    assert (status, body, headers["httpfstream-active"]) == (200, b"", "1")
    await close(a)
    assert server.file("empty.log").exists()
    assert (await get(server.url("empty.log")))[0] == 200


async def test_text_and_binary_messages_are_appended_raw(server):
    a = await appender(server, "raw.bin", ack=1)
    a.sendMessage(b"\xff\xfe not utf-8 ", isBinary=False)
    a.sendMessage(b"\x00\x01binary", isBinary=True)
    a.sendMessage("caf\u00e9".encode(), isBinary=False)
    assert await close(a) == 1000
    assert server.file("raw.bin").getContent() == (
        b"\xff\xfe not utf-8 \x00\x01binarycaf\xc3\xa9"
    )
    assert a.acks[-1] == server.file("raw.bin").getsize()


async def test_without_ack_the_appender_gets_no_messages(server):
    a = await appender(server, "quiet.log")
    for i in range(20):
        a.sendMessage(b"line %d\n" % i)
    assert await close(a) == 1000
    assert a.messages == []


async def test_acks_count_persisted_bytes_and_end_with_the_final_size(server):
    a = await appender(server, "acks.log", ack=1)
    for _ in range(50):
        a.sendMessage(b"x" * 1000)
    await a.until_ack(50_000)
    assert await close(a) == 1000
    assert a.acks == sorted(a.acks)
    assert a.acks[-1] == 50_000
    assert all(not binary for _, binary in a.messages)


async def test_slot_is_released_before_the_close_is_answered(server):
    a = await appender(server, "relay.log")
    a.sendMessage(b"x" * 100_000)
    follower = await ws(server.ws_url("relay.log"))
    assert follower.status == 101, follower.close_reason
    code = await close(a)
    assert code == 1000
    # The moment the appender has the server's Close, the next one gets in.
    b = await appender(server, "relay.log", offset=100_000)
    assert b.headers["httpfstream-size"] == "100000"
    assert await finished(follower) == 1000
    assert len(follower.received) == 100_000
    await close(b)


async def test_lost_appender_persists_what_arrived_and_followers_get_4000(server):
    a = await appender(server, "lost.log", ack=1)
    follower = await ws(server.ws_url("lost.log"))
    a.sendMessage(b"persist me")
    await a.until_ack(10)
    a.transport.abortConnection()
    assert await finished(follower) == 4000
    assert bytes(follower.received) == b"persist me"
    assert follower.close_reason == "appender lost"
    assert server.file("lost.log").getContent() == b"persist me"
    # Released: a new appender may take it.
    b = await appender(server, "lost.log")
    await close(b)


async def test_bytes_sent_just_before_a_drop_are_persisted(server):
    # A raw client writes frames and vanishes without a Close.
    client = await raw(server)
    client.send(upgrade_request("/logs/drop.log", X_Verb="APPEND"))
    status, _ = await client.response_head()
    assert status == 101
    follower = await ws(server.ws_url("drop.log"))
    client.send(client_frame(b"a" * 5000) + client_frame(b"b" * 5000, opcode=1))
    client.transport.loseConnection()
    # Followers end once the session has ended and the slot is free.
    assert await finished(follower) == 4000
    assert len(follower.received) == 10_000
    b = await appender(server, "drop.log")
    assert b.headers["httpfstream-size"] == "10000"
    await close(b)
    assert server.file("drop.log").getContent() == b"a" * 5000 + b"b" * 5000


async def test_message_over_the_limit_closes_with_1009(make_server):
    server = make_server(max_message_size=1000)
    a = await appender(server, "big.log")
    f = await ws(server.ws_url("big.log"))
    a.sendMessage(b"ok")
    a.sendMessage(b"x" * 1001)
    assert await finished(a) == 1009
    assert await finished(f) == 4000
    assert server.file("big.log").getContent() == b"ok"


async def test_resource_over_its_limit_closes_with_1009_appending_none_of_it(
    make_server,
):
    server = make_server(max_resource_size=100)
    a = await appender(server, "full.log", ack=1)
    a.sendMessage(b"x" * 60)
    a.sendMessage(b"y" * 41)
    a.sendMessage(b"z")
    assert await finished(a) == 1009
    assert "maximum size" in a.close_reason
    assert a.acks[-1] == 60
    assert server.file("full.log").getContent() == b"x" * 60


class _DiskFull:
    """Names whose writes fail with ENOSPC while ``full`` is set."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)
        self.full = False


@implementer(IStoreFile)
class _FlakyFile:
    def __init__(self, real: IStoreFile, disk: _DiskFull, name: str) -> None:
        self._real = real
        self._disk = disk
        self._name = name
        self.size = real.size
        self.complete = real.complete

    def mark(self, complete: bool, sync: bool) -> Deferred[None]:
        return self._real.mark(complete, sync)

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        if self._disk.full and self._name in self._disk.names:
            return fail(OSError(errno.ENOSPC, "No space left on device"))
        return self._real.write(data, sync, fence)

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        return self._real.read(offset, length)

    def sync(self) -> Deferred[None]:
        return self._real.sync()

    def close(self) -> Deferred[None]:
        return self._real.close()


class _FlakyStore(FileStore):
    def __init__(self, *args, disk: _DiskFull, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.disk = disk

    def open(self, name, create, expected_size):
        return (
            super()
            .open(name, create, expected_size)
            .addCallback(_FlakyFile, self.disk, "/".join(name))
        )


async def test_failed_write_closes_with_1011_keeping_acknowledged_bytes(
    make_server, tmp_path
):
    from twisted.internet import reactor
    from twisted.python.filepath import FilePath

    disk = _DiskFull("disk.log")
    root = FilePath(str(tmp_path)).child("flaky")
    server = make_server(root, store=_FlakyStore(root, reactor, disk=disk))
    a = await appender(server, "disk.log", ack=1)
    f = await ws(server.ws_url("disk.log"))
    a.sendMessage(b"kept")
    await a.until_ack(4)
    disk.full = True
    a.sendMessage(b"lost")
    assert await finished(a) == 1011
    assert "No space left" in a.close_reason
    assert await finished(f) == 4000
    assert bytes(f.received) == b"kept"
    assert root.child("disk.log").getContent() == b"kept"
    # Other resources keep working meanwhile.
    other = await appender(server, "other.log", ack=1)
    other.sendMessage(b"fine")
    assert await close(other) == 1000
    assert root.child("other.log").getContent() == b"fine"
    disk.full = False
    b = await appender(server, "disk.log", offset=4)
    await close(b)


async def test_racing_handshakes_exactly_one_wins(server):
    probes = await DeferredList(
        [
            Deferred.fromCoroutine(ws(server.ws_url("race.log"), "APPEND"))
            for _ in range(30)
        ]
    )
    statuses = sorted(p.status for ok, p in probes if ok)
    assert len(statuses) == 30
    assert statuses == [101] + [409] * 29
    winner = next(p for _, p in probes if p.status == 101)
    await close(winner)


async def test_racing_post_and_websocket_appends(server):
    results = await DeferredList(
        [Deferred.fromCoroutine(ws(server.ws_url("mixed.log"), "APPEND"))]
        + [
            Deferred.fromCoroutine(
                get(server.url("mixed.log"), method="POST", data=b"p")
            )
            for _ in range(10)
        ]
    )
    probe = results[0][1]
    posts = [r[1][0] for r in results[1:]]
    assert set(posts) <= {200, 409}
    if probe.status == 101:
        await close(probe)
    size = server.file("mixed.log").getsize()
    assert size == posts.count(200)


async def test_big_reads_then_tiny_frames_keep_every_byte(server):
    # Eight big messages make the server read the socket up to 1 MiB at a
    # time; the tiny frames that follow arrive in such big reads (parsed a
    # slice at a time) and bring the reads back down.  Nothing is lost,
    # reordered or doubled on the way, for the file or a follower.
    a = await appender(server, "big-then-tiny.log", ack=1)
    f = await ws(server.ws_url("big-then-tiny.log"))
    expected = bytearray()
    for i in range(12):
        chunk = bytes([i]) * (200 << 10)
        a.sendMessage(chunk)
        expected += chunk
    for i in range(20_000):
        tiny = b"%d," % i
        a.sendMessage(tiny)
        expected += tiny
    assert await close(a) == 1000
    assert await finished(f) == 1000
    assert bytes(f.received) == bytes(expected)
    assert (await get(server.url("big-then-tiny.log")))[2] == bytes(expected)
