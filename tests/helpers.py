"""Test helpers: a real server on 127.0.0.1 and a recording WebSocket client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import treq
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.python.filepath import FilePath
from twisted.web.resource import Resource
from twisted.web.server import Site

from httpfstream import StreamRegistry, StreamResource

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
        await self.port.stopListening()
        if self.registry.running:
            await self.registry.stopService()


def start_server(root: FilePath[str], **options: Any) -> Server:
    registry = StreamRegistry(root, **options)
    registry.startService()
    top = Resource()
    top.putChild(MOUNT.encode(), StreamResource(registry))
    port = reactor.listenTCP(0, Site(top), interface="127.0.0.1")
    return Server(registry, port, root)


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
        self.is_opened = False
        self.on_message: Any = None

    def onConnect(self, response: Any) -> None:
        self.status = 101
        self.headers = dict(response.headers)

    def onOpen(self) -> None:
        self.is_opened = True
        self.ready.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))
        if isBinary or self.factory.collect_text:
            self.received += payload
        if self.on_message is not None:
            self.on_message(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code, self.close_reason = code, reason
        if not self.ready.called:
            line = getattr(self, "http_status_line", None) or ""
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                self.status = int(parts[1])
                self.headers = dict(getattr(self, "http_headers", {}) or {})
            self.ready.callback(self)
        self.done.callback(code)

    @property
    def acks(self) -> list[int]:
        return [int(p) for p, binary in self.messages if not binary]


@dataclass
class _Options:
    collect_text: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


async def ws(
    url: str,
    verb: str | None = None,
    headers: dict[str, str] | None = None,
    collect_text: bool = True,
    timeout: float = 10,
    **options: Any,
) -> Probe:
    """Open a WebSocket with Autobahn; fires once the handshake is decided."""
    all_headers = dict(headers or {})
    if verb is not None:
        all_headers["X-Verb"] = verb
    factory = WebSocketClientFactory(url, headers=all_headers)
    factory.protocol = Probe
    factory.collect_text = collect_text
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


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    """Poll ``predicate`` each reactor turn (for in-process server state)."""
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError("condition not reached")
        await deferLater(reactor, 0.005, lambda: None)


async def close(probe: Probe, code: int = 1000) -> int | None:
    probe.sendClose(code)
    return await probe.done.addTimeout(10, reactor)
