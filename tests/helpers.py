"""Test helpers: a real server on 127.0.0.1, and real clients to talk to it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

import treq
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import portforward
from twisted.python.filepath import FilePath
from twisted.web.client import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from zope.interface import implementer

from httpfstream import StreamRegistry, StreamResource
from httpfstream.web.handoff import WebSocketOptions
from httpfstream.web.site import make_site

MOUNT = "logs"


@dataclass
class Server:
    """A registry and a Site with `StreamResource` at /logs/, on port 0."""

    registry: StreamRegistry
    port: Any
    root: FilePath[str]

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port.getHost().port

    def url(self, name: str, scheme: str = "http", **query: object) -> str:
        host, port = self.address
        qs = ("?" + urlencode(query)) if query else ""
        return f"{scheme}://{host}:{port}/{MOUNT}/{quote(name)}{qs}"

    def ws_url(self, name: str, **query: object) -> str:
        return self.url(name, "ws", **query)

    def file(self, name: str) -> FilePath[str]:
        return self.root.preauthChild(name)

    async def stop(self) -> None:
        if self.port.connected:
            await self.port.stopListening()
        if self.registry.running:
            await self.registry.stopService()


def start_server(
    root: FilePath[str],
    port: int = 0,
    tls: Any = None,
    tokens: Any = None,
    site_timeout: float | None = None,
    header_timeout: float = 30,
    **options: Any,
) -> Server:
    """
    A registry under ``root`` and a site from `make_site` on 127.0.0.1
    (TLS if given).  ``options`` are the registry's keywords, or a
    `WebSocketOptions` field.
    """
    websocket = {
        key: options.pop(key)
        for key in list(options)
        if key in WebSocketOptions.__dataclass_fields__
    }
    registry = StreamRegistry(root, **options)
    registry.startService()
    top = Resource()
    resource = StreamResource(registry, tokens, WebSocketOptions(**websocket))
    top.putChild(MOUNT.encode(), resource)
    site = make_site(
        top,
        registry,
        idle_timeout=site_timeout or 0,
        header_timeout=header_timeout,
    )
    if tls is not None:
        listening = reactor.listenSSL(port, site, tls, interface="127.0.0.1")
    else:
        listening = reactor.listenTCP(port, site, interface="127.0.0.1")
    return Server(registry, listening, root)


class Conditions:
    """
    The one way in-reactor tests wait: ``until(predicate)`` is a Deferred
    that fires once ``predicate()`` holds, or fails after ``timeout``
    seconds.  The owner (a client protocol) calls `check` whenever what the
    predicates read may have changed (bytes or a message arrived), and
    `fail` once nothing more will change (the connection is gone), so a
    wait costs nothing between events, never sleeps, and fails as soon as
    it cannot come true.

    :param state: describes the owner's state, for the failure messages.
    """

    def __init__(self, state: Callable[[], str]) -> None:
        self._state = state
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self._over: str | None = None

    def until(
        self, predicate: Callable[[], bool], timeout: float = 10
    ) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
            return d
        if self._over is not None:
            d.errback(self._failure())
            return d
        self._waiting.append((predicate, d))

        def timed_out(result: Any, timeout: float) -> None:
            raise TimeoutError(f"not so after {timeout}s: {self._state()}")

        return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    def check(self) -> None:
        """Fire the waits whose predicate now holds."""
        # Decide first, fire after: a fired wait's callbacks may wait again.
        ready, still = [], []
        for predicate, d in self._waiting:
            if d.called:  # it timed out
                continue
            if predicate():
                ready.append(d)
            else:
                still.append((predicate, d))
        self._waiting = still
        for d in ready:
            d.callback(None)

    def fail(self, why: str) -> None:
        """Fail every wait, now and later: ``why`` nothing more will change."""
        self._over = why
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            if not d.called:
                d.errback(self._failure())

    def _failure(self) -> AssertionError:
        return AssertionError(f"{self._over} while waiting: {self._state()}")


class Probe(WebSocketClientProtocol):
    """
    Records everything: the handshake answer, messages, the close.

    ``ready`` fires once the handshake is decided (open or refused);
    ``done`` fires with the close code once the connection is closed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ready: Deferred[Probe] = Deferred()
        self.done: Deferred[int | None] = Deferred()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.messages: list[tuple[bytes, bool]] = []
        self.received = bytearray()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._conditions = Conditions(
            lambda: f"{len(self.received)} bytes received, acks {self.acks[-1:]}"
        )

    def onConnect(self, response: Any) -> None:
        self.status = 101
        self.headers = dict(response.headers)

    def onOpen(self) -> None:
        self.ready.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        self.received += payload
        self._conditions.check()

    def until(
        self, predicate: Callable[[], bool], timeout: float = 10
    ) -> Deferred[None]:
        """Fire once ``predicate()`` holds, checked after each message."""
        return self._conditions.until(predicate, timeout)

    def until_bytes(self, n: int, timeout: float = 10) -> Deferred[None]:
        """Fire once at least ``n`` bytes have arrived."""
        return self.until(lambda: len(self.received) >= n, timeout)

    def until_ack(self, size: int, timeout: float = 10) -> Deferred[None]:
        """Fire once the server has acknowledged ``size`` bytes."""
        return self.until(lambda: bool(self.acks) and self.acks[-1] >= size, timeout)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        if not self.ready.called:
            line = getattr(self, "http_status_line", None) or ""
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                self.status = int(parts[1])
                self.headers = dict(getattr(self, "http_headers", {}) or {})
            self.ready.callback(self)
        self._conditions.fail(f"closed ({code} {reason})")
        self.done.callback(code)

    @property
    def acks(self) -> list[int]:
        return [int(p) for p, binary in self.messages if not binary]


async def ws(
    url: str,
    verb: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
    **options: Any,
) -> Probe:
    """Open a WebSocket with Autobahn; fires once the handshake is decided."""
    all_headers = dict(headers or {})
    if verb is not None:
        all_headers["X-Verb"] = verb
    factory = WebSocketClientFactory(url, headers=all_headers)
    factory.protocol = Probe
    # The server answers an appender's Close only once every byte is
    # persisted and synced; Autobahn's default 1 s close timeout, rounded
    # down to whole seconds, can be nearly nothing.
    options.setdefault("closeHandshakeTimeout", 5)
    factory.setProtocolOptions(utf8validateIncoming=False, **options)
    host, port = factory.host, factory.port
    proto: Probe = await TCP4ClientEndpoint(reactor, host, port).connect(factory)
    return await proto.ready.addTimeout(timeout, reactor)


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """A treq request: (status, lowercase headers, body)."""
    method = kwargs.pop("method", "GET")
    response = await treq.request(method, url, **kwargs)
    body = await treq.content(response)
    headers = {
        k.decode().lower(): v[-1].decode()
        for k, v in response.headers.getAllRawHeaders()
    }
    return response.code, headers, body


async def appender(server: Server, name: str, **query: object) -> Probe:
    probe = await ws(server.ws_url(name, **query), "APPEND")
    assert probe.status == 101, (probe.status, probe.close_reason)
    return probe


async def close(probe: Probe, code: int = 1000) -> int | None:
    probe.sendClose(code)
    return await probe.done.addTimeout(10, reactor)


async def finished(probe: Probe, timeout: float = 10) -> int | None:
    """The close code, once the server has closed ``probe``."""
    return await probe.done.addTimeout(timeout, reactor)


class Raw(Protocol):
    """A plain TCP client for bytes no well-behaved client would send."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[None] = Deferred()
        self._conditions = Conditions(lambda: f"got {bytes(self.received)[-500:]!r}")

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._conditions.check()

    def connectionLost(self, reason: Any = None) -> None:
        self._conditions.fail("connection closed")
        self.closed.callback(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def until(
        self, predicate: Callable[[bytes], bool], timeout: float = 10
    ) -> Deferred[None]:
        """Fire once ``predicate(received)`` holds, checked as bytes arrive."""
        return self._conditions.until(lambda: predicate(bytes(self.received)), timeout)

    async def response_head(self) -> tuple[int, dict[str, str]]:
        """Wait for an HTTP response head; its status and headers."""
        await self.until(lambda b: b"\r\n\r\n" in b)
        head = bytes(self.received).split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def body(self) -> bytes:
        return bytes(self.received).split(b"\r\n\r\n", 1)[1]


async def raw(server: Server) -> Raw:
    """Connect a `Raw` client to ``server``."""
    host, port = server.address
    proto: Raw = await connectProtocol(TCP4ClientEndpoint(reactor, host, port), Raw())
    return proto


def upgrade_request(path: str, **headers: str) -> bytes:
    """A WebSocket opening handshake for ``path``, written by hand."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 2, fin: bool = True) -> bytes:
    """A masked client frame (mask of zeros, so the payload reads as is)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


async def raw_request(
    server: Server, method: str, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """
    One request over a raw socket, answered and closed: the exact status,
    headers (treq's Agent hides Content-Length) and undecoded body.
    """
    client = await raw(server)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    client.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    await client.closed.addTimeout(10, reactor)
    status, head = await client.response_head()
    return status, head, client.body()


# -- a follower over either transport ----------------------------------------

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
        # A live follow is streamed (chunked); anything else has a length.
        return self.status == 200 and "content-length" not in self.headers


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


BIN = Path(sys.executable).parent


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if that has not ended it in 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """
    A throwaway certificate authority and a certificate for ``localhost``
    in ``folder``: the key, the certificate and the authority, as PEM files.
    """
    import trustme

    authority = trustme.CA()
    cert = authority.issue_cert("localhost")
    key_pem, cert_pem, ca = folder / "key.pem", folder / "cert.pem", folder / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    authority.cert_pem.write_to_path(str(ca))
    return key_pem, cert_pem, ca


def poll_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.05
) -> None:
    """
    Block until ``predicate()`` holds, calling it every ``interval``
    seconds; `TimeoutError` after ``timeout``.

    Only for what another process does that gives this one no event to wait
    on (its entries under /proc, its memory while it runs): everything a
    test's own connections see is waited on with `Conditions` instead.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not so after {timeout}s")
        time.sleep(interval)


def read_line(stream: IO[bytes], timeout: float = 15) -> bytes:
    """One line from a subprocess pipe, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"no complete line within {timeout}s: {line!r}")
        byte = os.read(stream.fileno(), 1)
        if not byte:
            return line
        line += byte
    return line


@dataclass
class Twistd:
    """A ``twistd -n httpfstream`` subprocess on 127.0.0.1, port 0."""

    process: subprocess.Popen[bytes]
    port: int
    root: Path

    log: list[bytes] = field(default_factory=list)

    scheme: str = "http"

    #: Notified (under its lock) each time a line is added to ``log``.
    log_changed: threading.Condition = field(default_factory=threading.Condition)
    #: Every port it listens on, in the order its ``--port``s were given
    #: (``port`` is the first); filled in from its log as each starts.
    ports: list[int] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        root: Path,
        *options: str,
        port: str = "tcp:0",
        max_file_size: int | None = None,
        max_open_files: int | None = None,
        twistd_options: tuple[str, ...] = (),
    ) -> Twistd:
        """
        Start it; ``max_file_size`` sets RLIMIT_FSIZE, so writes past it
        fail in the kernel as on a full disk (CPython ignores SIGXFSZ).
        ``twistd_options`` are twistd's own (``--logger=...``), given
        before ``httpfstream``; ``options`` are the plugin's.
        """

        def limit() -> None:
            if max_file_size is not None:
                resource.setrlimit(
                    resource.RLIMIT_FSIZE, (max_file_size, max_file_size)
                )
            if max_open_files is not None:
                resource.setrlimit(
                    resource.RLIMIT_NOFILE, (max_open_files, max_open_files)
                )

        process = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                *twistd_options,
                "httpfstream",
                f"--root={root}",
                f"--port={port}:interface=127.0.0.1",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
        assert process.stdout is not None
        log: list[bytes] = []
        log_changed = threading.Condition()
        found_port: list[int] = []
        started = threading.Event()

        def drain() -> None:
            # Read the log for as long as the server runs, so a full pipe
            # never blocks it.
            assert process.stdout is not None
            for line in process.stdout:
                with log_changed:
                    log.append(line)
                    log_changed.notify_all()
                found = re.search(rb"Site (?:\(TLS\) )?starting on (\d+)", line)
                if found:
                    found_port.append(int(found.group(1)))
                    started.set()
            started.set()
            with log_changed:
                log_changed.notify_all()
            process.stdout.close()

        threading.Thread(target=drain, daemon=True).start()
        if not started.wait(30) or not found_port:
            process.kill()
            raise RuntimeError(b"twistd did not start:\n" + b"".join(log))
        scheme = "https" if port.startswith("ssl:") else "http"
        return cls(process, found_port[0], root, log, scheme, log_changed, found_port)

    def wait_for_log(
        self, pattern: bytes, count: int = 1, timeout: float = 30
    ) -> list[bytes]:
        """
        Block until ``count`` lines of the log match ``pattern`` (a regular
        expression); they are returned.  Raises `TimeoutError` after
        ``timeout`` seconds, or once the server has exited without them.
        """
        deadline = time.monotonic() + timeout
        with self.log_changed:
            while True:
                found = [line for line in self.log if re.search(pattern, line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(
                        f"{count} log lines matching {pattern!r} within {timeout}s;"
                        f" got {len(found)}"
                    )
                self.log_changed.wait(min(left, 1.0))

    def until_logged(
        self, pattern: bytes, count: int = 1, timeout: float = 30
    ) -> Deferred[list[bytes]]:
        """`wait_for_log` in a thread, for tests that keep the reactor turning."""
        return threads.deferToThread(self.wait_for_log, pattern, count, timeout)

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def url(self, name: str, **query: object) -> str:
        qs = ("?" + urlencode(query)) if query else ""
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}/{quote(name)}{qs}"

    def ws_url(self, name: str, **query: object) -> str:
        return self.url(name, **query).replace("http", "ws", 1)

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert kib is not None
        return int(kib.group(1)) * 1024

    def stop(self) -> None:
        stop_process(self.process)


class _RecordingProxyFactory(portforward.ProxyFactory):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.connections: list[portforward.ProxyServer] = []

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        self.connections.append(proto)
        return proto


class Proxy:
    """A TCP forwarder in front of ``server`` whose connections we can cut."""

    def __init__(self, server: Server) -> None:
        self._factory = _RecordingProxyFactory(*server.address)
        self._port = reactor.listenTCP(0, self._factory, interface="127.0.0.1")

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self._port.getHost().port

    def url(self, name: str, **query: object) -> str:
        host, port = self.address
        qs = ("?" + urlencode(query)) if query else ""
        return f"http://{host}:{port}/{MOUNT}/{quote(name)}{qs}"

    def cut(self) -> None:
        """Drop every connection through the proxy, as a network fault would."""
        for proto in self._factory.connections:
            if proto.transport is not None:
                proto.transport.abortConnection()
        self._factory.connections.clear()

    async def stop(self) -> None:
        self.cut()
        await self._port.stopListening()


def require(what: str, found: object, install: str) -> None:
    """
    Skip the test when a real component it needs (a browser, nginx, Redis)
    is missing from this machine, saying how to get it; under CI (CI=true),
    where .ci/run installs every one of them, a missing one fails instead.
    """
    import pytest

    if found:
        return
    message = f"{what} is not installed here ({install})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must install it (.ci/packages.txt)")
    pytest.skip(message)


# -- a forwarder with a port of its own, and subprocesses as Deferreds --------


class _Frames:
    """
    The WebSocket frames in one direction of a connection, after its HTTP
    head: ``feed`` bytes, get ``(opcode, payload)`` pairs (unmasked).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._in_head = True

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        if self._in_head:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return frames
            del self._buffer[: end + 4]
            self._in_head = False
        while True:
            b = self._buffer
            if len(b) < 2:
                return frames
            n, i = b[1] & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return frames
                n, i = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return frames
                n, i = struct.unpack("!Q", b[2:10])[0], 10
            mask = b""
            if b[1] & 0x80:
                mask, i = bytes(b[i : i + 4]), i + 4
            if len(b) < i + n:
                return frames
            payload = bytes(b[i : i + n])
            if mask and n:
                key = (mask * (n // 4 + 1))[:n]
                unmasked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
                payload = unmasked.to_bytes(n, "big")
            frames.append((b[0] & 0x0F, payload))
            del b[: i + n]


#: Directions of a forwarded connection.
TO_SERVER = "to server"
TO_CLIENT = "to client"


@implementer(IPushProducer)
class _Reading:
    """
    A transport's reading, as the producer of the other side's writing: a
    full buffer pauses it; a side that closes does not close it (as the
    transport itself would), the forwarder decides that.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _Inbound(Protocol):
    """The client's side of one forwarded connection."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.peer: _Outbound | None = None
        self.early: list[bytes] = []
        self.frames = {TO_SERVER: _Frames(), TO_CLIENT: _Frames()}

    def connectionMade(self) -> None:
        assert self.transport is not None
        target = self.forwarder.target
        if target is None:  # the server is down: refused, as a port would
            self.transport.abortConnection()
            return
        self.forwarder.connections.append(self)
        self.transport.pauseProducing()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", target, timeout=5)
        connectProtocol(endpoint, _Outbound(self)).addErrback(
            lambda _: self.transport.abortConnection()
        )

    def peer_connected(self, peer: _Outbound) -> None:
        assert self.transport is not None and peer.transport is not None
        self.peer = peer
        # Each side's reading stops while the other's sending is full.
        self.transport.registerProducer(_Reading(peer.transport), True)
        peer.transport.registerProducer(_Reading(self.transport), True)
        for data in self.early:
            peer.transport.write(data)
        self.early = []
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.forwarder.passing(self, TO_SERVER, data)
        if self.forwarder.stalled[TO_SERVER]:
            return
        if self.peer is None:
            self.early.append(data)
        else:
            assert self.peer.transport is not None
            self.peer.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.forwarder.connections:
            self.forwarder.connections.remove(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _Outbound(Protocol):
    """The server's side of one forwarded connection."""

    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound

    def connectionMade(self) -> None:
        self.inbound.peer_connected(self)

    def dataReceived(self, data: bytes) -> None:
        forwarder = self.inbound.forwarder
        forwarder.passing(self.inbound, TO_CLIENT, data)
        if not forwarder.stalled[TO_CLIENT]:
            assert self.inbound.transport is not None
            self.inbound.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        forwarder = self.inbound.forwarder
        if forwarder.hold_closes and self.inbound in forwarder.connections:
            forwarder.held.append(self.inbound)
        elif self.inbound.transport is not None:
            self.inbound.transport.loseConnection()


class _ForwarderFactory(Factory):
    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def buildProtocol(self, addr: Any) -> _Inbound:
        return _Inbound(self.forwarder)


class Forwarder:
    """
    A TCP forwarder on 127.0.0.1 with a port of its own, in front of a
    server whose port may change (a ``twistd`` restarted on port 0), so
    clients keep one URL across restarts.

    On demand it refuses connections (``target`` ``None``: the server is
    down), cuts every connection, stalls a direction (drops what passes),
    holds the server's closes (the client's side stays open until
    `release`), and reads the WebSocket frames passing through (``frames``).

    :param target: the server's port, or ``None``.
    :param frames: parse the frames, for `until_frame`.
    """

    def __init__(self, target: int | None = None, frames: bool = False) -> None:
        self.target = target
        self.frames = frames
        self.connections: list[_Inbound] = []
        self.stalled = {TO_SERVER: False, TO_CLIENT: False}
        self.hold_closes = False
        self.held: list[_Inbound] = []
        self._watchers: list[tuple[Any, Deferred[tuple[str, int, bytes]]]] = []
        self._port = reactor.listenTCP(
            0, _ForwarderFactory(self), interface="127.0.0.1"
        )

    @property
    def port(self) -> int:
        return int(self._port.getHost().port)

    def url(self, name: str, **query: object) -> str:
        qs = ("?" + urlencode(query)) if query else ""
        return f"http://127.0.0.1:{self.port}/{quote(name)}{qs}"

    def passing(self, conn: _Inbound, direction: str, data: bytes) -> None:
        if not self.frames:
            return
        for opcode, payload in conn.frames[direction].feed(data):
            still = []
            for predicate, d in self._watchers:
                if predicate(direction, opcode, payload):
                    d.callback((direction, opcode, payload))
                else:
                    still.append((predicate, d))
            self._watchers = still

    def until_frame(
        self, predicate: Any, timeout: float = 30
    ) -> Deferred[tuple[str, int, bytes]]:
        """
        Fire with ``(direction, opcode, payload)`` of the first frame to
        pass from now on for which ``predicate`` of those holds.
        """
        assert self.frames, "a Forwarder(frames=True)"
        d: Deferred[tuple[str, int, bytes]] = Deferred()
        self._watchers.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def until_ack(self, size: int, timeout: float = 30) -> Deferred[Any]:
        """Fire once the server has sent an appender an acknowledgement of ``size``."""
        return self.until_frame(
            lambda direction, opcode, payload: (
                direction == TO_CLIENT
                and opcode == 1
                and payload.isdigit()
                and int(payload) >= size
            ),
            timeout,
        )

    def cut(self) -> None:
        """Abort every connection, both sides, as a network fault would."""
        for conn in [*self.connections, *self.held]:
            for side in (conn, conn.peer):
                if side is not None and side.transport is not None:
                    side.transport.abortConnection()
        self.connections.clear()
        self.held.clear()

    def release(self) -> None:
        """
        Hold closes no more, and close the client's side of connections
        whose server side closed.
        """
        self.hold_closes = False
        held, self.held = self.held, []
        for conn in held:
            if conn.transport is not None:
                conn.transport.loseConnection()

    async def stop(self) -> None:
        self.cut()
        await self._port.stopListening()


class Child:
    """
    A subprocess (one of the CLIs) seen from the reactor: threads read its
    output and wait for its exit, and report to the reactor, so a test
    awaits Deferreds (`until`, ``ended``) instead of blocking on pipes.

    :ivar ended: fires with the exit status, once all output is read.
    """

    def __init__(self, *argv: str) -> None:
        self.argv = argv
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ended: Deferred[int] = Deferred()
        self._watchers: list[tuple[Any, Deferred[None]]] = []
        readers = [
            threading.Thread(target=self._read, args=(pipe, buffer), daemon=True)
            for pipe, buffer in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in readers:
            reader.start()

        def wait() -> None:
            code = self.process.wait()
            for reader in readers:
                reader.join()
            reactor.callFromThread(self._exited, code)

        threading.Thread(target=wait, daemon=True).start()

    def __repr__(self) -> str:
        return f"<Child {' '.join(self.argv[1:])} {self.process.returncode}>"

    def _read(self, pipe: IO[bytes], buffer: bytearray) -> None:
        while chunk := os.read(pipe.fileno(), 65536):
            reactor.callFromThread(self._got, buffer, chunk)
        pipe.close()

    def _got(self, buffer: bytearray, chunk: bytes) -> None:
        buffer += chunk
        self._check()

    def _check(self) -> None:
        still = []
        for predicate, d in self._watchers:
            if predicate():
                d.callback(None)
            else:
                still.append((predicate, d))
        self._watchers = still

    def _exited(self, code: int) -> None:
        for predicate, d in self._watchers:
            if predicate():
                d.callback(None)
            else:
                d.errback(AssertionError(f"{self!r} exited first: {self.stderr!r}"))
        self._watchers = []
        self.ended.callback(code)

    def until(self, predicate: Any, timeout: float = 30) -> Deferred[None]:
        """Fire once ``predicate()`` holds, checked as output arrives."""
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
        elif self.ended.called:
            d.errback(AssertionError(f"{self!r} exited: {self.stderr!r}"))
        else:
            self._watchers.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def until_stderr(self, text: bytes, timeout: float = 30) -> Deferred[None]:
        """Fire once standard error holds ``text``."""
        return self.until(lambda: text in self.stderr, timeout)

    def until_stdout(self, size: int, timeout: float = 30) -> Deferred[None]:
        """Fire once ``size`` bytes have come out on standard output."""
        return self.until(lambda: len(self.stdout) >= size, timeout)

    def exit_status(self, timeout: float = 60) -> Deferred[int]:
        """``ended``, failing after ``timeout`` seconds."""
        d: Deferred[int] = Deferred()

        def fire(code: int) -> int:
            if not d.called:
                d.callback(code)
            return code

        self.ended.addCallback(fire)
        return d.addTimeout(timeout, reactor)

    def write(self, data: bytes) -> None:
        """Write to standard input now (small amounts: it blocks)."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def reap(self) -> None:
        """Kill it if it still runs, and wait for it (after a test)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()


APPEND = str(BIN / "httpfstream-append")
FOLLOW = str(BIN / "httpfstream-follow")


class Stage:
    """
    A ``twistd`` on one root, killed and started again at will, behind a
    `Forwarder` whose URL stays the same; and the CLIs run against it.
    """

    def __init__(self, root: Path, frames: bool = False) -> None:
        self.root = root
        self.server: Twistd | None = None
        self.forwarder = Forwarder(frames=frames)
        self.children: list[Child] = []

    async def start(self, connect: bool = True) -> Twistd:
        """Start the server (in a thread: it blocks until it listens)."""
        self.server = await threads.deferToThread(Twistd.start, self.root)
        if connect:
            self.connect()
        return self.server

    def connect(self) -> None:
        """Forward to the running server."""
        assert self.server is not None
        self.forwarder.target = self.server.port

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        """
        Stop the server with ``sig`` (SIGKILL if it has not exited 20 s
        after another); the forwarder refuses until the next start.
        """
        assert self.server is not None
        self.forwarder.target = None
        process = self.server.process
        process.send_signal(sig)
        try:
            await threads.deferToThread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()
            await threads.deferToThread(process.wait, 10)

    def url(self, name: str) -> str:
        """The resource's URL through the forwarder."""
        return self.forwarder.url(name)

    def direct_url(self, name: str) -> str:
        """The resource's URL on the running server itself."""
        assert self.server is not None
        return self.server.url(name)

    def file(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    async def complete(self, name: str) -> str:
        """``Httpfstream-Complete`` of a HEAD now."""
        status, headers, _ = await get(self.direct_url(name), method="HEAD")
        assert status == 200
        return headers["httpfstream-complete"]

    def run(self, *argv: str) -> Child:
        child = Child(*argv)
        self.children.append(child)
        return child

    async def appender(self, *argv: str) -> Child:
        """An ``httpfstream-append -v``, once it holds the resource."""
        child = self.run(APPEND, "-v", *argv)
        await child.until_stderr(b"appending to")
        return child

    async def close(self) -> None:
        for child in self.children:
            child.reap()
        await self.forwarder.stop()
        if self.server is not None:
            await threads.deferToThread(self.server.stop)
