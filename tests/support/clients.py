"""
Wire clients for a server in the test's reactor: `Conditions` (how they
wait), the recording WebSocket client (`ws`, `appender`, `close`,
`finished`), treq's `get`, and the raw socket client with hand-written
requests and frames (`raw`, `raw_request`, `upgrade_request`,
`client_frame`).
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable
from typing import Any

import treq
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from support.servers import Server


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
