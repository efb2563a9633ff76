"""
Lifecycles at their edges: readers and appenders that go away while the
server is still opening their resource, downloads cut off mid-transfer, and
the registry's shutdown with a clock.  Each ends with nothing held: no
stream open, no reader counted, no file descriptor left, no critical log.
"""

from __future__ import annotations

import os

import pytest
from support.clients import raw, raw_request, upgrade_request, ws
from support.servers import Server
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs
from twisted.python.filepath import FilePath
from zope.interface import implementer

from httpfstream.core.store import FileStore, IStore, IStoreFile
from httpfstream.core.writes import Fence


@implementer(IStore)
class GatedStore:
    """A `FileStore` whose opens wait until the test lets them through."""

    def __init__(self, root: FilePath[str]) -> None:
        self._files = FileStore(root, reactor)
        self.opening: Deferred[None] = Deferred()
        self._gate: Deferred[None] = Deferred()

    def release(self) -> None:
        self._gate.callback(None)

    def start(self) -> None:
        self._files.start()

    def stop(self) -> None:
        self._files.stop()

    async def _open(self, name, create, expected_size) -> IStoreFile:
        if not self.opening.called:
            self.opening.callback(None)
        await self._gate
        return await self._files.open(name, create, expected_size)

    def open(self, name, create, expected_size) -> Deferred[IStoreFile]:
        return Deferred.fromCoroutine(self._open(name, create, expected_size))

    def stat(self, name) -> Deferred[int | None]:
        return self._files.stat(name)


def open_files_under(root: FilePath[str]) -> list[str]:
    """This process's descriptors open on files under ``root``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root.path + os.sep):
            found.append(target)
    return found


def critical(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("log_level") is LogLevel.critical]


async def answered(server: Server) -> None:
    """
    A later request answered: by then the server has seen everything that
    happened to earlier connections (a cut one included).  A name with a
    NUL is no name, so it touches no file.
    """
    status, _, _ = await raw_request(server, "GET", "/logs/a%00b")
    assert status == 404


async def cut_while_opening(server: Server, store: GatedStore, request: bytes) -> None:
    """
    Send ``request``, cut the connection while the server opens its
    resource, then let the open finish; fires once nothing is open.
    """
    client = await raw(server)
    client.send(request)
    await store.opening.addTimeout(10, reactor)
    client.transport.abortConnection()
    await client.closed.addTimeout(10, reactor)
    await answered(server)
    store.release()
    await server.registry.when_idle().addTimeout(10, reactor)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /logs/idle.log HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /logs/idle.log?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        upgrade_request("/logs/idle.log"),  # no appender: answered with 200
    ],
    ids=["snapshot", "follow=1", "websocket"],
)
async def test_reader_gone_while_opening_leaves_nothing_held(
    make_server, tmp_path, request_line
):
    root = FilePath(str(tmp_path)).child("root")
    root.makedirs()
    root.child("idle.log").setContent(b"x" * 100_000)
    store = GatedStore(root)
    server = make_server(root, store=store)
    with capturedLogs() as events:
        await cut_while_opening(server, store, request_line)
    assert critical(events) == []
    assert server.registry.counters.readers == 0
    assert open_files_under(root) == []


@pytest.mark.parametrize("method", ["websocket", "post"])
async def test_appender_gone_while_opening_gives_the_slot_back(
    make_server, tmp_path, method
):
    root = FilePath(str(tmp_path)).child("root")
    store = GatedStore(root)
    server = make_server(root, store=store)
    if method == "websocket":
        request = upgrade_request("/logs/new.log", X_Verb="APPEND")
    else:
        request = (
            b"POST /logs/new.log HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        )
    with capturedLogs() as events:
        await cut_while_opening(server, store, request)
    assert critical(events) == []
    assert not server.registry.active(("new.log",))
    # The next appender gets the slot, and nothing was appended.
    again = await ws(server.ws_url("new.log", ack=1), "APPEND")
    assert again.status == 101
    assert again.headers["httpfstream-size"] == "0"
    again.sendClose(1000)
    assert await again.done.addTimeout(10, reactor) == 1000


class _HeldFile:
    """An open file whose writes wait until the test lets them through."""

    def __init__(self, file: IStoreFile, store: WriteGatedStore) -> None:
        self._file = file
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._file, name)

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        async def later() -> None:
            if not self._store.writing.called:
                self._store.writing.callback(None)
            await self._store.writes
            await self._file.write(data, sync, fence)

        return Deferred.fromCoroutine(later())


class WriteGatedStore(GatedStore):
    """Opens go through at once; writes wait for ``writes``."""

    def __init__(self, root: FilePath[str]) -> None:
        super().__init__(root)
        self.release()
        self.writing: Deferred[None] = Deferred()
        self.writes: Deferred[None] = Deferred()

    async def _open(self, name, create, expected_size) -> IStoreFile:
        return _HeldFile(await super()._open(name, create, expected_size), self)


async def test_a_post_cut_while_its_body_is_written_gives_the_slot_back(
    make_server, tmp_path
):
    root = FilePath(str(tmp_path)).child("root")
    store = WriteGatedStore(root)
    server = make_server(root, store=store)
    client = await raw(server)
    client.send(
        b"POST /logs/new.log HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    await store.writing.addTimeout(10, reactor)
    with capturedLogs() as events:
        client.transport.abortConnection()
        await client.closed.addTimeout(10, reactor)
        await answered(server)  # the server has seen the cut
        store.writes.callback(None)
        await server.registry.when_idle().addTimeout(10, reactor)
    assert critical(events) == []
    assert not server.registry.active(("new.log",))
    # What was sent is persisted, and the next appender gets the slot.
    again = await ws(server.ws_url("new.log", ack=1), "APPEND")
    assert again.status == 101
    assert again.headers["httpfstream-size"] == "5"
    again.sendClose(1000)
    assert await again.done.addTimeout(10, reactor) == 1000


class Download:
    """A reader over a raw socket that we cut once it has some bytes."""

    def __init__(self, kind: str, request: bytes) -> None:
        self.kind = kind
        self.request = request

    async def run(self, server: Server, cut_after: int) -> None:
        client = await raw(server)
        client.send(self.request)
        await client.until(lambda b: len(b) > cut_after, timeout=20)
        client.transport.abortConnection()
        await client.closed.addTimeout(10, reactor)


async def test_a_hundred_downloads_cut_off_mid_transfer(make_server, tmp_path):
    from twisted.internet.defer import gatherResults

    root = FilePath(str(tmp_path)).child("root")
    root.makedirs()
    content = os.urandom(1 << 20)
    # A small tail and large reads: cursors read the file, so a cut often
    # lands while one of their reads is in flight.  (Before the stream
    # waited for its reads, this caught "Bad file descriptor" in about one
    # run of three; the deterministic regression test is the unit test
    # test_file_is_closed_only_after_the_reads_in_flight.)
    server = make_server(root, tail_size=16 << 10, read_size=256 << 10)
    live = await ws(server.ws_url("live.log", ack=1), "APPEND")
    for i in range(0, len(content), 64 << 10):
        live.sendMessage(content[i : i + (64 << 10)])
    await live.until_ack(len(content), timeout=30)

    def download(i: int) -> Download:
        # Readers of a finished resource each have their own, so that each
        # cut leaves its stream idle: that is when a file was closed under
        # a read still in flight.
        own = f"/logs/done-{i}.log"
        root.child(f"done-{i}.log").setContent(content)
        head = b" HTTP/1.1\r\nHost: x\r\n"
        return [
            Download("websocket, live", upgrade_request("/logs/live.log")),
            Download("follow=1, live", b"GET /logs/live.log?follow=1" + head + b"\r\n"),
            Download("get", b"GET " + own.encode() + head + b"\r\n"),
            Download(
                "follow=1", b"GET " + own.encode() + b"?follow=1" + head + b"\r\n"
            ),
            # No appender: a WebSocket follow is answered with the content.
            Download("websocket", upgrade_request(own)),
        ][i % 5]

    downloads = [download(i) for i in range(100)]
    with capturedLogs() as events:
        await gatherResults(
            [Deferred.fromCoroutine(d.run(server, 100_000)) for d in downloads],
            consumeErrors=True,
        )
        await answered(server)
        live.sendClose(1000)
        assert await live.done.addTimeout(10, reactor) == 1000
        await server.registry.when_idle().addTimeout(20, reactor)
    assert critical(events) == []
    counters = server.registry.counters
    assert counters.readers == 0
    assert sum(counters.open.values()) == 0
    assert server.registry.streams == 0
    assert open_files_under(root) == []
    assert root.child("live.log").getContent() == content


async def test_every_session_logs_one_line_when_it_ends(server):
    from support.clients import close, finished, get

    def sessions(events: list[dict]) -> list[tuple[str, str, int]]:
        return sorted(
            (e["kind"], e["outcome"], e["nbytes"])
            for e in events
            if e.get("log_namespace") == "httpfstream.session"
        )

    with capturedLogs() as events:
        a = await ws(server.ws_url("s.log", ack=1), "APPEND")
        follower = await ws(server.ws_url("s.log"))
        a.sendMessage(b"hello")
        await a.until_ack(5)
        status, _, body = await get(server.url("s.log"))  # a snapshot
        assert (status, body) == (200, b"hello")
        assert await close(a) == 1000
        assert await finished(follower) == 1000
        status, _, body = await get(server.url("s.log", follow=1))
        assert (status, body) == (200, b"hello")
        status, _, _ = await get(server.url("p.log"), method="POST", data=b"posted")
        assert status == 200
    assert sessions(events) == [
        ("append", "1000", 5),
        ("follow-http", "1000", 5),
        ("follow-ws", "1000", 5),
        ("post", "200", 6),
        ("snapshot", "200", 5),
    ]


async def test_followers_at_shutdown_are_logged_with_the_code_they_get(
    make_server,
):
    from support.clients import appender, finished

    server = make_server()
    a = await appender(server, "bye.log")
    follower = await ws(server.ws_url("bye.log"))
    with capturedLogs() as events:
        await server.stop()
    assert await finished(follower) == 1001
    assert await finished(a) == 1001
    outcomes = {
        e["kind"]: e["outcome"]
        for e in events
        if e.get("log_namespace") == "httpfstream.session"
    }
    assert outcomes == {"follow-ws": "1001", "append": "1001"}
