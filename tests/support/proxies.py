"""
TCP forwarders between a test's clients and a server: `Proxy` in front
of an in-process `Server`, `Forwarder` with a port of its own (it refuses,
cuts, stalls a direction, holds closes and reads the frames passing), and
`Stage`: a ``twistd`` restarted at will behind a `Forwarder`, with the CLIs
run against it.
"""

from __future__ import annotations

import signal
import struct
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import portforward
from zope.interface import implementer

from support.clients import get
from support.processes import APPEND, Child, Twistd
from support.servers import MOUNT, Server


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
