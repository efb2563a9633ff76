"""
A follower over either transport, WebSocket FOLLOW or ``GET ?follow=1``
(`TRANSPORTS`), for tests whose property holds for both: `open_follower`
and how the follow ended (`End`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.client import UNKNOWN_LENGTH

from support.clients import Conditions, client_frame, upgrade_request
from support.servers import Server

if TYPE_CHECKING:
    from support.proxies import Proxy


#: The follower transports: WebSocket FOLLOW and ``GET ?follow=1``.
TRANSPORTS = ("ws", "http")


@dataclass(frozen=True)
class End:
    """
    How a follow ended.  ``clean``: the server ended it as the protocol
    says (a WebSocket Close, the last chunk of a chunked body, a body of
    ``Content-Length`` read whole), rather than the connection being cut or
    the server breaking the protocol (``reason`` says which).  ``code``: the
    WebSocket close code; an HTTP follow has none to give (docs/PROTOCOL.md
    section 5: a chunked stream cannot say how it ended).
    """

    clean: bool
    code: int | None = None
    reason: str = ""


class Follower:
    """
    One follow of a resource over either transport, made by `open_follower`,
    for tests whose property holds for both (STYLE.md habit 7).

    ``status`` and ``headers`` (lower-case names) are the server's answer;
    ``received`` is every byte of the stream, or of the answer's body when
    it is not a live follow (a finished resource, a refusal).
    """

    transport_name: str

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received = bytearray()
        self.end: End | None = None
        self._conditions = Conditions(
            lambda: f"{len(self.received)} bytes received, {self.end or 'open'}"
        )

    @property
    def live(self) -> bool:
        """Whether the server follows the resource live for us."""
        raise NotImplementedError

    @property
    def offset(self) -> int:
        """The absolute offset the bytes start at (``Httpfstream-Offset``)."""
        return int(self.headers["httpfstream-offset"])

    def until_bytes(self, n: int, timeout: float = 10) -> Deferred[None]:
        """Fire once at least ``n`` bytes have arrived."""
        return self._conditions.until(lambda: len(self.received) >= n, timeout)

    def ended(self, timeout: float = 10) -> Deferred[End]:
        """Fire with the `End` once the stream has ended."""
        d = self._conditions.until(lambda: self.end is not None, timeout)
        return d.addCallback(lambda _: self.end)

    def _received(self, data: bytes) -> None:
        self.received += data
        self._conditions.check()

    def _ended(self, end: End) -> None:
        if self.end is None:
            self.end = end
            self._conditions.check()
            self._conditions.fail("the stream ended")


class _HttpFollower(Follower):
    """``GET ?follow=1`` through treq, its body read as it streams."""

    transport_name = "http"

    def __init__(self, response: Any) -> None:
        super().__init__()
        self.status = response.code
        self.headers = {
            k.decode().lower(): v[-1].decode()
            for k, v in response.headers.getAllRawHeaders()
        }
        # twisted.web's client takes Content-Length out of the headers.
        if response.length != UNKNOWN_LENGTH:
            self.headers["content-length"] = str(response.length)
        treq.collect(response, self._received).addCallbacks(
            lambda _: self._ended(End(clean=True)),
            lambda failure: self._ended(
                End(clean=False, reason=failure.getErrorMessage())
            ),
        )

    @property
    def live(self) -> bool:
        # A live follow is one of a resource an appender holds when the
        # server answered.  (Its length tells no more: treq asks for gzip,
        # and a gzipped body has none, live or not.)
        return self.status == 200 and self.headers.get("httpfstream-active") == "1"


class _BrokenProtocol(Exception):
    """The server sent what RFC 6455 forbids a server to send."""


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _WebSocketFollower(Follower, Protocol):
    """
    WebSocket FOLLOW, read off the socket by hand.  Autobahn's client drops
    a handshake answered with anything but 101 without reading the body, and
    a FOLLOW of a resource with no appender is answered 200 with the content
    (docs/PROTOCOL.md section 4); this reads both.  It checks what RFC 6455 says
    a client must (the accept key; unmasked frames without reserved bits;
    whole, short control frames; nothing after the Close), answers pings,
    and answers the server's Close with its own.
    """

    transport_name = "ws"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.answered: Deferred[None] = Deferred()
        self._request = upgrade_request(path)
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", self._request)
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.group(1) + _WS_GUID).digest())
        self._accept = accept.decode()
        self._buffer = bytearray()
        self._length: int | None = None  # of a body, when not upgraded
        self._message: int | None = None  # opcode of a fragmented message
        self._closed = False  # by the server's Close frame, with:
        self._close_code: int | None = None

    @property
    def live(self) -> bool:
        return self.status == 101

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self._buffer += data
        try:
            if not self.status:
                self._head()
            if self.status == 101:
                self._frames()
            elif self.status:
                self._body()
        except _BrokenProtocol as e:
            self._ended(End(clean=False, reason=str(e)))
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.answered.called:
            self.answered.errback(AssertionError("connection lost before an answer"))
        if self._closed:
            self._ended(End(clean=True, code=self._close_code))
        else:
            self._ended(End(clean=False, reason="connection lost"))

    def _head(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        for line in lines[1:]:
            key, _, value = line.partition(":")
            self.headers[key.strip().lower()] = value.strip()
        self.status = int(lines[0].split()[1])
        if self.status == 101:
            if self.headers.get("sec-websocket-accept") != self._accept:
                raise _BrokenProtocol("101 with a wrong Sec-WebSocket-Accept")
        elif "content-length" in self.headers:
            self._length = int(self.headers["content-length"])
        else:
            raise _BrokenProtocol(f"{self.status} without Content-Length")
        self.answered.callback(None)

    def _body(self) -> None:
        assert self._length is not None and self.transport is not None
        data, self._buffer = bytes(self._buffer), bytearray()
        if len(self.received) + len(data) > self._length:
            raise _BrokenProtocol("a body longer than its Content-Length")
        self._received(data)
        if len(self.received) == self._length:
            self._ended(End(clean=True))
            self.transport.loseConnection()

    def _frames(self) -> None:
        buffer, at = self._buffer, 0
        while len(buffer) - at >= 2:
            first, second = buffer[at], buffer[at + 1]
            start, length = at + 2, second & 0x7F
            if length == 126:
                if len(buffer) - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if len(buffer) - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if len(buffer) - start < length:
                break
            at = start + length
            if second & 0x80:
                raise _BrokenProtocol("a masked frame from the server")
            self._frame(first, bytes(buffer[start:at]))
        del buffer[:at]

    def _frame(self, first: int, payload: bytes) -> None:
        assert self.transport is not None
        fin, opcode = first & 0x80, first & 0x0F
        if first & 0x70:
            raise _BrokenProtocol("reserved bits set")
        if self._closed:
            raise _BrokenProtocol("a frame after the Close")
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                raise _BrokenProtocol("a fragmented or long control frame")
            if opcode == 0x8:
                if len(payload) == 1:
                    raise _BrokenProtocol("a Close with a one-byte payload")
                self._closed = True
                if payload:
                    (self._close_code,) = struct.unpack("!H", payload[:2])
                self.transport.write(client_frame(payload[:2], opcode=0x8))
            elif opcode == 0x9:
                self.transport.write(client_frame(payload, opcode=0xA))
            elif opcode != 0xA:
                raise _BrokenProtocol(f"unknown control opcode {opcode:#x}")
            return
        if opcode == 0x0:
            if self._message is None:
                raise _BrokenProtocol("a continuation frame outside a message")
        elif opcode in (0x1, 0x2):
            if self._message is not None:
                raise _BrokenProtocol("a new message inside a fragmented one")
        else:
            raise _BrokenProtocol(f"unknown data opcode {opcode:#x}")
        self._message = None if fin else (opcode or self._message)
        self._received(payload)


async def open_follower(
    server: Server | Proxy,
    name: str,
    transport: str,
    timeout: float = 10,
    **query: object,
) -> Follower:
    """
    Follow ``name`` over ``transport`` (one of `TRANSPORTS`) with the query
    parameters ``query``, from ``server`` or through a `Proxy` in front of
    it; returns once the server has answered, whatever it answered (see
    `Follower.status` and `Follower.live`).
    """
    if transport == "http":
        url = server.url(name, follow=1, **query)
        response = await treq.get(url, unbuffered=True, timeout=timeout)
        return _HttpFollower(response)
    assert transport == "ws", transport
    url = urlsplit(server.url(name, **query))
    follower = _WebSocketFollower(url.path + (f"?{url.query}" if url.query else ""))
    endpoint = TCP4ClientEndpoint(reactor, *server.address)
    await connectProtocol(endpoint, follower)
    await follower.answered.addTimeout(timeout, reactor)
    return follower
