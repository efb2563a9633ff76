"""
Canaries: what httpfstream uses of its libraries beyond their public API
(`httpfstream._borrowed`), checked against the installed versions.  A
failure names the library and its version: read the new release's code and
mend the one function in `_borrowed` that uses the name.
"""

from __future__ import annotations

import socket
from importlib.metadata import version
from typing import Any

import pytest_twisted
import txredisapi
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from httpfstream import _borrowed
from httpfstream.web import wsdeflate


def _pin(library: str) -> str:
    return f"{library} {version(library)} changed what httpfstream._borrowed reads"


class _Collect(Protocol):
    def __init__(self) -> None:
        self.got = b""
        self.enough: Deferred[bytes] = Deferred()
        self.wanted = 0

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= self.wanted and not self.enough.called:
            self.enough.callback(self.got)


@pytest_twisted.ensureDeferred
async def test_twisted_tcp_server_still_has_what_send_now_reads() -> None:
    servers: list[Any] = []

    class Keep(Protocol):
        def connectionMade(self) -> None:
            servers.append(self.transport)

    port = reactor.listenTCP(0, Factory.forProtocol(Keep), interface="127.0.0.1")
    peer = _Collect()
    peer.wanted = 6
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        await connectProtocol(endpoint, peer)
        while not servers:  # accepted on the reactor's next turn
            d: Deferred[None] = Deferred()
            reactor.callLater(0, d.callback, None)
            await d
        transport = servers[0]
        assert isinstance(transport, tcp.Server), _pin("twisted")
        for name in _borrowed.TWISTED_NAMES:
            assert hasattr(transport, name), f"{_pin('twisted')}: no {name}"
        assert _borrowed.FAST_SEND, _pin("twisted")
        assert "straight to idle sockets" in _borrowed.fast_send_report()
        _borrowed.send_now(transport, b"abc")  # sent at once: nothing queued
        assert not transport.dataBuffer and not transport._tempDataLen
        _borrowed.send_now(transport, b"def")
        assert await peer.enough.addTimeout(10, reactor) == b"abcdef"
        assert peer.transport is not None
        peer.transport.loseConnection()
    finally:
        await port.stopListening()


def test_autobahn_prepared_frames_are_wire_bytes() -> None:
    assert _borrowed.frame_bytes(b"hi", text=False) == b"\x82\x02hi", _pin("autobahn")
    assert _borrowed.frame_bytes(b"hi", text=True) == b"\x81\x02hi", _pin("autobahn")


def _client_protocol() -> WebSocketClientProtocol:
    factory = WebSocketClientFactory("ws://127.0.0.1:9/x")
    proto = WebSocketClientProtocol()
    proto.factory = factory
    proto.makeConnection(StringTransport())
    return proto


def test_autobahn_client_keeps_the_handshake_bytes_it_read() -> None:
    proto = _client_protocol()
    proto.processHandshake = lambda: None  # type: ignore[method-assign]
    head = b"HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\n\r\n"
    proto.dataReceived(head + b"taken")
    assert _borrowed.handshake_buffer(proto) == head + b"taken", _pin("autobahn")
    status, headers = _borrowed.parse_http_head(head)
    assert status == "HTTP/1.1 409 Conflict", _pin("autobahn")
    assert headers == {"content-length": "5"}, _pin("autobahn")


def test_autobahn_records_the_peers_close() -> None:
    proto = _client_protocol()
    assert _borrowed.remote_close(proto) == (None, None)
    proto.state = proto.STATE_CLOSED  # as if the connection had just ended
    proto.onCloseFrame(4000, b"lost")
    assert _borrowed.remote_close(proto) == (4000, "lost"), _pin("autobahn")


def _server_handshake(extensions: str | None) -> tuple[Any, bytes]:
    """A server protocol after a client's handshake; what it answered."""
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(perMessageCompressionAccept=wsdeflate.accept)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    proto.dataReceived(
        (
            "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
        ).encode()
    )
    return proto, transport.value()


def test_autobahn_says_which_deflate_a_connection_negotiated() -> None:
    proto, answer = _server_handshake("permessage-deflate; server_max_window_bits=10")
    assert answer.startswith(b"HTTP/1.1 101"), answer
    assert b"server_no_context_takeover" in answer
    assert _borrowed.deflate_window(proto) == 10, _pin("autobahn")
    proto, _ = _server_handshake("permessage-deflate")
    assert _borrowed.deflate_window(proto) == 15, _pin("autobahn")
    proto, answer = _server_handshake(None)
    assert b"Sec-WebSocket-Extensions" not in answer
    assert _borrowed.deflate_window(proto) is None, _pin("autobahn")


@pytest_twisted.ensureDeferred
async def test_txredisapi_handlers_have_a_pool_and_delays() -> None:
    # A port nobody listens on: the handler exists without a server.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    handler = txredisapi.lazyConnection("127.0.0.1", free, reconnect=False)
    try:
        _borrowed.set_reconnect_delays(handler, 0.2, 1.0)
        factory = handler._factory
        assert (factory.initialDelay, factory.maxDelay) == (0.2, 1.0), _pin(
            "txredisapi"
        )
        assert _borrowed.connections(handler) == [], _pin("txredisapi")
    finally:
        await handler.disconnect()


@pytest_twisted.ensureDeferred
async def test_txredisapi_tells_of_its_next_connection() -> None:
    # A listener that never answers is enough: without a password or a
    # database, a connection is usable as soon as it is made.
    accepted: list[Any] = []

    class Silent(Protocol):
        def connectionMade(self) -> None:
            accepted.append(self.transport)

    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    handler = txredisapi.lazyConnection(
        "127.0.0.1", port.getHost().port, reconnect=True
    )
    try:
        waiting = _borrowed.next_connection(handler)
        assert not waiting.called, _pin("txredisapi")  # not connected yet
        conn = await waiting.addTimeout(10, reactor)
        assert conn.connected, _pin("txredisapi")
        turn: Deferred[None] = Deferred()  # it joins the pool in this turn
        reactor.callLater(0, turn.callback, None)
        await turn
        assert _borrowed.connections(handler) == [conn], _pin("txredisapi")
        # Connected now: at once, and the connection stays in the pool.
        again = _borrowed.next_connection(handler)
        assert again.called, _pin("txredisapi")
        assert await again is conn
        assert _borrowed.connections(handler) == [conn], _pin("txredisapi")
    finally:
        await handler.disconnect()
        await port.stopListening()
        for transport in accepted:
            transport.loseConnection()
    # Disconnected for good: it says so instead of waiting.
    gone = _borrowed.next_connection(handler)
    try:
        await gone.addTimeout(10, reactor)
    except txredisapi.ConnectionError:
        pass
    else:
        raise AssertionError(_pin("txredisapi"))
