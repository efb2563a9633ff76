"""
The original Go clients, as they behave on the wire: the appender ends with
an orderly TCP close (FIN) and no Close frame; the follower accepts only
text frames, asks for nothing, and keeps only what its first read of each
message returns (`GoFollower`).  Both get through with the server's options
for them (`WebSocketOptions`, ``--fin-ends-appender``, ``--text-frames``,
``--text-frame-size``), and the strict default stays.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from support.clients import client_frame, finished, get, raw, upgrade_request, ws
from support.processes import Twistd
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import deferLater
from zope.interface import implementer

# The original follower (sourcegraph/httpfstream client.go, on the 2013
# github.com/sqs/go-websocket, a fork of Gary Burd's go-websocket): its
# connection reads through a bufio.Reader of readBufSize (10 KiB), and
# io.Copy hands webSocketReadCloser.Read a 32 KiB buffer.
READ_BUFFER = 10 * 1024
COPY_BUFFER = 32 * 1024


@implementer(IReadDescriptor)
class _Socket:
    """A plain non-blocking socket: one ``recv`` at a time, as asked."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._readable: Deferred[None] | None = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def logPrefix(self) -> str:
        return "go-follower"

    def doRead(self) -> None:
        reactor.removeReader(self)
        readable, self._readable = self._readable, None
        assert readable is not None
        readable.callback(None)

    def connectionLost(self, reason: object) -> None:
        if self._readable is not None:
            self.doRead()

    async def recv(self, n: int) -> bytes:
        """One ``recv(n)``: whatever the kernel holds, up to ``n`` bytes."""
        while True:
            try:
                data = self._sock.recv(n)
            except BlockingIOError:
                self._readable = Deferred()
                reactor.addReader(self)
                await self._readable
                continue
            if not data:
                raise EOFError("connection closed without a Close frame")
            return data

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        self._sock.close()


class GoFollower:
    """
    ``httpfstream-follow`` as it reads, over a raw socket.

    Per message: ``NextReader`` skips what is left of the previous message
    and parses the next frame header, all through the read buffer (a
    ``bufio.Reader`` of `READ_BUFFER`: what it holds, else one ``recv`` of
    at most its size); then ``webSocketReadCloser.Read`` reads the message
    ONCE into io.Copy's `COPY_BUFFER`, and whatever that read did not take
    is dropped by the next ``NextReader``.  The go-websocket of the time
    fills the read it is given (``Conn.read`` loops on the buffer until
    min(32 KiB, payload) bytes are in), so a message of at most 32 KiB is
    kept whole however it arrives; more is cut.

    For its first ``slow_reads`` reads of the socket it lags (each waits
    ``pause`` seconds of the reactor's clock first), so messages queue in
    the kernel and each read takes what is there.
    """

    def __init__(
        self,
        sock: _Socket,
        slow_reads: int = 0,
        pause: float = 0.002,
    ) -> None:
        self._sock = sock
        self._slow_reads = slow_reads
        self._pause = pause
        self._buffered = bytearray()  # what the bufio.Reader holds
        self.kept = bytearray()  # what io.Copy wrote to stdout
        self.messages = 0

    @classmethod
    async def connect(cls, server, path: str, **options: object) -> GoFollower:
        sock = socket.create_connection(server.address)
        sock.setblocking(False)
        follower = cls(_Socket(sock), **options)  # type: ignore[arg-type]
        follower._sock.send(upgrade_request(path, X_Verb="FOLLOW"))
        status = await follower._response_head()
        assert status == 101
        return follower

    async def _recv(self, n: int) -> bytes:
        if self._slow_reads > 0:
            self._slow_reads -= 1
            await deferLater(reactor, self._pause)
        return await self._sock.recv(n)

    async def _response_head(self) -> int:
        # http.ReadResponse on the same bufio.Reader: what follows the
        # head stays buffered.
        while b"\r\n\r\n" not in self._buffered:
            self._buffered += await self._recv(READ_BUFFER - len(self._buffered))
        head, _, rest = bytes(self._buffered).partition(b"\r\n\r\n")
        self._buffered[:] = rest
        return int(head.split()[1])

    async def _read_once(self, n: int) -> bytes:
        """bufio.Reader.Read with ``len(p) == n``."""
        if not self._buffered:
            if n >= READ_BUFFER:
                return await self._recv(n)  # straight into p
            self._buffered += await self._recv(READ_BUFFER)
        taken = bytes(self._buffered[:n])
        del self._buffered[:n]
        return taken

    async def _read_full(self, n: int) -> bytes:
        """go-websocket's ``Conn.read``: buffer reads until ``n`` bytes."""
        data = bytearray()
        while len(data) < n:
            data += await self._read_once(n - len(data))
        return bytes(data)

    async def follow(self) -> int:
        """Read until the server closes; its close code."""
        left = 0  # of the current message, unread
        try:
            while True:
                await self._read_full(left)  # NextReader skips the rest
                head = await self._read_full(2)
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", await self._read_full(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", await self._read_full(8))
                if opcode >= 8:  # control frames are read whole
                    payload = await self._read_full(length)
                    if opcode == 8:
                        return int(struct.unpack("!H", payload[:2])[0])
                    if opcode == 9:
                        self._sock.send(client_frame(payload, opcode=10))
                    left = 0
                    continue
                assert opcode == 1, "websocket op is not text"
                self.messages += 1
                want = min(COPY_BUFFER, length)
                self.kept += await self._read_full(want)
                left = length - want
        finally:
            self._sock.close()


async def go_appender(server, path: str):
    """A raw client that appends as the Go appender does (text frames)."""
    client = await raw(server)
    client.send(upgrade_request(path, X_Verb="APPEND"))
    status, _ = await client.response_head()
    assert status == 101
    return client


@pytest.mark.parametrize(("lenient", "code"), [(True, 1000), (False, 4000)])
async def test_a_fin_after_the_last_message(make_server, lenient, code):
    server = make_server(fin_ends_appender=lenient)
    a = await go_appender(server, "/logs/go.log")
    a.send(client_frame(b"one ", opcode=1))
    follower = await ws(server.ws_url("go.log"))
    assert follower.status == 101
    await follower.until_bytes(4)
    a.send(client_frame(b"two", opcode=1))
    a.transport.loseConnection()  # FIN, no Close frame
    assert await finished(follower) == code
    assert bytes(follower.received) == b"one two"
    _, headers, body = await get(server.url("go.log"))
    assert body == b"one two"
    assert headers["httpfstream-complete"] == ("1" if lenient else "0")


async def test_a_reset_is_never_a_clean_end(make_server):
    server = make_server(fin_ends_appender=True)
    a = await go_appender(server, "/logs/rst.log")
    a.send(client_frame(b"x", opcode=1))
    follower = await ws(server.ws_url("rst.log"))
    await follower.until_bytes(1)
    a.transport.abortConnection()  # RST: a crash, not an ending
    assert await finished(follower) == 4000


@pytest.mark.parametrize(
    ("text_frames", "query", "binary"),
    [(False, {}, True), (True, {}, False), (True, {"frames": "binary"}, True)],
)
async def test_followers_frames(make_server, text_frames, query, binary):
    server = make_server(text_frames=text_frames)
    a = await ws(server.ws_url("t.log"), "APPEND")
    follower = await ws(server.ws_url("t.log", **query))
    a.sendMessage(b"line\n")
    await follower.until_bytes(5)
    assert {is_binary for _, is_binary in follower.messages} == {binary}
    a.sendClose(1000)
    assert await finished(follower) == 1000


async def test_text_messages_are_cut_binary_ones_are_not(make_server):
    server = make_server()
    a = await ws(server.ws_url("t.log"), "APPEND")
    binary = await ws(server.ws_url("t.log"))
    text = await ws(server.ws_url("t.log", frames="text"))
    data = random.Random(1).randbytes(100_000)
    a.sendMessage(data)
    a.sendClose(1000)
    assert await finished(binary) == await finished(text) == 1000
    assert binary.received == text.received == data
    assert [len(m) for m, _ in binary.messages] == [100_000]  # as appended
    assert max(len(m) for m, _ in text.messages) == 10236
    assert {is_binary for _, is_binary in text.messages} == {False}


async def test_the_twistd_options(tmp_path):
    server = Twistd.start(
        tmp_path / "root",
        "--fin-ends-appender",
        "--text-frames",
        "--text-frame-size=1K",
    )
    try:
        a = await go_appender(server, "/go.log")
        a.send(client_frame(b"hello", opcode=1))
        follower = await ws(server.ws_url("go.log"))
        await follower.until_bytes(5)
        assert follower.messages[0][1] is False  # text
        a.send(client_frame(b"x" * 3000, opcode=1))
        await follower.until_bytes(3005)
        assert [len(m) for m, _ in follower.messages] == [5, 1024, 1024, 952]
        a.transport.loseConnection()
        assert await finished(follower) == 1000
    finally:
        server.stop()
    assert (tmp_path / "root" / "go.log").read_bytes() == b"hello" + b"x" * 3000


def _writes(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut as an appender of any sort might write it."""
    sizes = [1, 5, 100, 4095, 8192, 8193, 10_240, 32_768, 32_769, 70_000, 200_000]
    rng = random.Random(seed)
    writes, at = [], 0
    while at < len(data):
        size = rng.choice(sizes)
        writes.append(data[at : at + size])
        at += size
    return writes


@pytest.mark.parametrize(
    ("options", "query", "late", "whole"),
    [
        ({"text_frames": True}, {}, False, True),
        ({"text_frames": True}, {}, True, True),
        # A follower's own frames=text, without the server-wide option.
        ({}, {"frames": "text"}, True, True),
        # Messages as large as binary ones (256 KiB): the original follower
        # keeps at most 32 KiB of each, and still ends as if it had all.
        ({"text_frames": True, "text_frame_size": 256 << 10}, {}, True, False),
    ],
    ids=["live", "late", "frames=text", "256K-messages"],
)
async def test_the_go_follower_reads_every_byte(
    make_server, options, query, late, whole
):
    server = make_server(**options)
    data = random.Random(18).randbytes(2_000_000)
    writes = _writes(data, seed=len(query) + late)
    path = "/logs/go.log" + ("?frames=text" if query else "")
    a = await ws(server.ws_url("go.log"), "APPEND")
    sent = 0
    if late:
        # 1.5 MB persisted first: the follower starts from the file, behind
        # the tail (1 MiB), and reads its way up to the live appends.
        watcher = await ws(server.ws_url("go.log"))
        while sent < 1_500_000:
            a.sendMessage(writes.pop(0))
            sent = len(data) - sum(map(len, writes))
        await watcher.until_bytes(sent)
    go = await GoFollower.connect(server, path, slow_reads=150)
    following = Deferred.fromCoroutine(go.follow())
    for chunk in writes:
        a.sendMessage(chunk)
    a.sendClose(1000)
    assert await following.addTimeout(60, reactor) == 1000
    if whole:
        assert len(go.kept) == len(data)
        assert go.kept == data
    else:
        assert len(go.kept) < len(data)
