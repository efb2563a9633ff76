"""
In-process servers: a `StreamRegistry` and a site with `StreamResource`
at /logs/ on 127.0.0.1, port 0, in the test's own reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from twisted.internet import reactor
from twisted.python.filepath import FilePath
from twisted.web.resource import Resource

from httpfstream import StreamRegistry, StreamResource
from httpfstream.web.events import KEEPALIVE
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
    event_keepalive: float = KEEPALIVE,
    **options: Any,
) -> Server:
    """
    A registry under ``root`` and a site from `make_site` on 127.0.0.1
    (TLS if given).  ``options`` are the registry's keywords, or a
    `WebSocketOptions` field; ``event_keepalive`` is the resource's.
    """
    websocket = {
        key: options.pop(key)
        for key in list(options)
        if key in WebSocketOptions.__dataclass_fields__
    }
    registry = StreamRegistry(root, **options)
    registry.startService()
    top = Resource()
    resource = StreamResource(
        registry, tokens, WebSocketOptions(**websocket), event_keepalive
    )
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
