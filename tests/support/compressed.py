"""
Readers of compressed answers over raw sockets, so that tests see the
bytes as they are on the wire (treq decodes gzip behind the test's back):
`GzipReader` (a GET whose body is de-chunked and gunzipped as it arrives,
with ``zlib.decompressobj(wbits=31)``) and `DeflateFollower` (a WebSocket
FOLLOW that offers permessage-deflate and inflates each compressed
message on its own).
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from support.clients import Conditions, client_frame

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Head:
    """An HTTP response head, once it is all there."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw_headers: list[tuple[str, str]] = []

    def parse(self, buffer: bytearray) -> bool:
        """Take the head off ``buffer`` if it is complete; whether it was."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            key, _, value = line.partition(":")
            self.raw_headers.append((key.strip().lower(), value.strip()))
            self.headers[key.strip().lower()] = value.strip()
        return True


class GzipReader(Protocol):
    """
    One request over a raw socket; the answer's head, then its body as it
    arrives: ``wire`` (the body as sent, de-chunked), ``decoded`` (gunzipped
    as it comes when the answer says ``Content-Encoding: gzip``, else the
    body itself).  ``ended`` once the body's framing says it is whole (the
    last chunk, or ``Content-Length`` bytes).
    """

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._buffer = bytearray()
        self.head = _Head()
        self.answered: Deferred[None] = Deferred()
        self.wire = bytearray()
        self.decoded = bytearray()
        self.ended = False
        self.lost = False
        self._chunk: int | None = None  # bytes left of the current chunk
        self._length: int | None = None
        self._inflater: Any = None
        self._conditions = Conditions(
            lambda: f"{len(self.wire)} bytes on the wire, {len(self.decoded)} decoded"
        )

    @property
    def status(self) -> int:
        return self.head.status

    @property
    def headers(self) -> dict[str, str]:
        return self.head.headers

    @property
    def gzipped(self) -> bool:
        return self.headers.get("content-encoding") == "gzip"

    @property
    def whole_gzip(self) -> bool:
        """Whether the gzip stream ended with its trailer, nothing after."""
        inflater = self._inflater
        return inflater is not None and inflater.eof and not inflater.unused_data

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self.head.status:
            if not self.head.parse(self._buffer):
                return
            if self.gzipped:
                self._inflater = zlib.decompressobj(wbits=31)
            if "content-length" in self.headers:
                self._length = int(self.headers["content-length"])
            self.answered.callback(None)
        self._body()
        self._conditions.check()

    def _body(self) -> None:
        chunked = self.headers.get("transfer-encoding") == "chunked"
        if not chunked:
            data, self._buffer = bytes(self._buffer), bytearray()
            self._take(data)
            if self._length is not None and len(self.wire) >= self._length:
                self.ended = True
            return
        while not self.ended:
            if self._chunk is None:
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return
                self._chunk = int(bytes(self._buffer[:end]).split(b";")[0], 16)
                del self._buffer[: end + 2]
                if self._chunk == 0:
                    self.ended = True  # (no trailers are ever sent)
                    return
            need = self._chunk + 2  # the chunk and its CRLF
            if len(self._buffer) < need:
                return
            self._take(bytes(self._buffer[: self._chunk]))
            del self._buffer[:need]
            self._chunk = None

    def _take(self, data: bytes) -> None:
        self.wire += data
        self.decoded += self._inflater.decompress(data) if self._inflater else data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        if not self.answered.called:
            self.answered.errback(AssertionError("no answer"))
        self._conditions.check()
        self._conditions.fail("connection closed")

    def until(self, predicate: Any, timeout: float = 10) -> Deferred[None]:
        return self._conditions.until(predicate, timeout)

    def until_decoded(self, n: int, timeout: float = 10) -> Deferred[None]:
        """Fire once ``n`` bytes have been decoded."""
        return self.until(lambda: len(self.decoded) >= n, timeout)

    def until_ended(self, timeout: float = 10) -> Deferred[None]:
        """Fire once the body is whole by its framing."""
        return self.until(lambda: self.ended, timeout)


async def gzip_get(
    url: str, method: str = "GET", timeout: float = 10, **headers: str
) -> GzipReader:
    """
    ``method`` ``url`` over a raw socket with ``headers`` (underscores for
    dashes; ``Accept_Encoding="gzip"`` unless given); returns once the
    answer's head is in.
    """
    parts = urlsplit(url)
    headers.setdefault("Accept_Encoding", "gzip")
    lines = [
        f"{method} {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {parts.hostname}",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    reader = GzipReader(("\r\n".join(lines) + "\r\n\r\n").encode())
    endpoint = TCP4ClientEndpoint(reactor, parts.hostname, parts.port)
    await connectProtocol(endpoint, reader)
    await reader.answered.addTimeout(timeout, reactor)
    return reader


class DeflateFollower(Protocol):
    """
    A WebSocket FOLLOW that offers ``offer`` (permessage-deflate, by
    default with no parameters), read by hand: each message is kept with
    whether it came compressed (RSV1) and its size on the wire, and a
    compressed one is inflated by a new inflater, alone, as the server's
    ``server_no_context_takeover`` promises it can be.  Answers pings and
    the server's Close.
    """

    def __init__(self, path: str, offer: str | None) -> None:
        key = base64.b64encode(os.urandom(16))
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            "X-Verb: FOLLOW",
        ]
        if offer is not None:
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._accept = accept
        self.head = _Head()
        self.answered: Deferred[None] = Deferred()
        self.window = 15
        self._buffer = bytearray()
        self._message: tuple[int, bool, bytearray] | None = None
        #: (opcode, compressed?, payload bytes on the wire, inflated bytes)
        self.messages: list[tuple[int, bool, int, bytes]] = []
        self.received = bytearray()
        self.close_code: int | None = None
        self.closed = False
        self._conditions = Conditions(
            lambda: f"{len(self.received)} bytes, {len(self.messages)} messages"
        )

    @property
    def extensions(self) -> str:
        return self.head.headers.get("sec-websocket-extensions", "")

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self.head.status:
            if not self.head.parse(self._buffer):
                return
            headers = self.head.headers
            if self.head.status == 101:
                assert headers["sec-websocket-accept"] == self._accept
                for param in self.extensions.split(";"):
                    key, _, value = param.strip().partition("=")
                    if key == "server_max_window_bits":
                        self.window = int(value)
            self.answered.callback(None)
        if self.head.status == 101:
            self._frames()
        self._conditions.check()

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            assert not second & 0x80, "a masked frame from the server"
            length, start = second & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(first, payload)

    def _frame(self, first: int, payload: bytes) -> None:
        assert self.transport is not None
        fin, rsv, opcode = first & 0x80, first & 0x70, first & 0x0F
        assert not self.closed, "a frame after the Close"
        if opcode >= 0x8:
            assert not rsv, "a control frame with reserved bits"
            if opcode == 0x8:
                self.closed = True
                self.close_code = int.from_bytes(payload[:2], "big")
                self.transport.write(client_frame(payload[:2], opcode=0x8))
            elif opcode == 0x9:
                self.transport.write(client_frame(payload, opcode=0xA))
            return
        if opcode:
            assert self._message is None, "a new message inside another"
            assert rsv in (0, 0x40), "reserved bits other than RSV1"
            self._message = (opcode, bool(rsv), bytearray())
        else:
            assert self._message is not None and not rsv
        self._message[2].extend(payload)
        if not fin:
            return
        opcode, compressed, body = self._message
        self._message = None
        if compressed:
            inflater = zlib.decompressobj(-self.window)
            data = inflater.decompress(bytes(body) + b"\x00\x00\xff\xff")
        else:
            data = bytes(body)
        self.messages.append((opcode, compressed, len(body), data))
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self.answered.called:
            self.answered.errback(AssertionError("no answer"))
        self._conditions.fail("connection closed")

    def until_bytes(self, n: int, timeout: float = 10) -> Deferred[None]:
        return self._conditions.until(lambda: len(self.received) >= n, timeout)

    def until_closed(self, timeout: float = 10) -> Deferred[None]:
        return self._conditions.until(lambda: self.closed, timeout)


async def deflate_follower(
    server: Any,
    name: str,
    offer: str | None = "permessage-deflate; client_max_window_bits",
    **query: object,
) -> DeflateFollower:
    """A `DeflateFollower` of ``name`` on ``server``, once answered."""
    url = urlsplit(server.url(name, **query))
    path = url.path + (f"?{url.query}" if url.query else "")
    follower = DeflateFollower(path, offer)
    endpoint = TCP4ClientEndpoint(reactor, *server.address)
    await connectProtocol(endpoint, follower)
    await follower.answered.addTimeout(10, reactor)
    return follower
