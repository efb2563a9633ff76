"""
Handing an accepted request to Autobahn.

`StreamResource` decides everything that can refuse a WebSocket handshake
itself (so refusals are ordinary HTTP responses with the ``Httpfstream-*``
headers), and only then upgrades the request with `Handoff.upgrade`, giving
the protocol that Autobahn builds its *session* (an append session, or a
held stream to follow) through the factory: ``connectionMade``,
``onConnect`` and ``onOpen`` all run inside ``WebSocketResource.render``.

`WebSocketOptions` is everything a deployment tunes about its WebSockets;
it is given to the resource, not to the registry, which knows no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

__all__ = ["HandedProtocol", "Handoff", "WebSocketOptions"]

_S = TypeVar("_S")


@dataclass(frozen=True)
class WebSocketOptions:
    """
    :ivar ping_interval: seconds between keep-alive pings on idle
        connections (0: none).  Whole seconds: Autobahn's timers round down.
    :ivar ping_timeout: seconds a peer has to answer a ping.
    :ivar handshake_timeout: seconds an opening handshake may take.
    :ivar close_timeout: seconds a closing handshake may take.
    :ivar fin_ends_appender: take an appender's orderly TCP close (a FIN
        after its last message, no Close frame) as a clean end, as the
        original Go appender ends; a crashed appender's FIN then looks the
        same.
    :ivar text_frames: send followers that did not ask (no ``frames=``)
        text messages instead of binary ones, as the original Go follower
        wants.
    :ivar text_frame_size: the most bytes in one text message to a follower
        (0: as many as a binary one, up to the read size).  The original Go
        follower keeps only what its first read of a message returns (at
        most 32 KiB) and drops the rest; at 10236 bytes a message's frame
        (4 header bytes) also fits its 10 KiB read buffer exactly.  Binary
        messages are never cut.
    """

    ping_interval: int = 30
    ping_timeout: int = 30
    handshake_timeout: int = 10
    close_timeout: int = 5
    fin_ends_appender: bool = False
    text_frames: bool = False
    text_frame_size: int = 10 * 1024 - 4

    def autobahn(self) -> dict[str, Any]:
        """The options, as ``setProtocolOptions`` keywords."""
        return {
            "autoPingInterval": self.ping_interval,
            "autoPingTimeout": self.ping_timeout,
            "openHandshakeTimeout": self.handshake_timeout,
            "closeHandshakeTimeout": self.close_timeout,
            # Close with a code (1009, 1002...) instead of dropping TCP.
            "failByDrop": False,
            # setProtocolOptions resets this to False unless given
            # (an Autobahn quirk: "Origin: null" clients would be refused).
            "allowNullOrigin": True,
        }


class HandedProtocol(WebSocketServerProtocol, Generic[_S]):
    """
    A server protocol born with a session from `Handoff`: ``session`` is
    set before ``connectionMade``; ``headers`` go out with the 101.
    """

    session: _S
    headers: dict[str, str]
    clock: IReactorTime

    def onConnect(self, request: Any) -> tuple[None, dict[str, str]]:
        return None, self.headers

    @property
    def _socket(self) -> Any:
        """The TCP (or TLS) transport, as a producer and consumer."""
        return self.transport


class _HandoffFactory(WebSocketServerFactory):
    """Gives the next protocol it builds the session `Handoff` set."""

    handed: tuple[Any, dict[str, str]] | None = None
    clock: IReactorTime

    def buildProtocol(self, addr: Any) -> Any:
        proto: Any = super().buildProtocol(addr)
        assert self.handed is not None
        proto.session, proto.headers = self.handed
        proto.clock = self.clock
        self.handed = None
        return proto


class Handoff(Generic[_S]):
    """
    Upgrades requests to ``protocol``, each with its session.

    :param protocol: the `HandedProtocol` subclass to build.
    :param clock: the reactor, for session timing.
    :param options: the deployment's WebSocket options.
    :param autobahn: more ``setProtocolOptions`` keywords for this kind of
        connection (message limits, UTF-8 checking).
    """

    def __init__(
        self,
        protocol: type[HandedProtocol[_S]],
        clock: IReactorTime,
        options: WebSocketOptions,
        **autobahn: Any,
    ) -> None:
        self._factory = _HandoffFactory()
        self._factory.protocol = protocol
        self._factory.clock = clock
        self._factory.setProtocolOptions(**options.autobahn(), **autobahn)
        self._resource = WebSocketResource(self._factory)

    def upgrade(self, request: Request, session: _S, headers: dict[str, str]) -> bool:
        """
        Upgrade ``request``, giving ``session`` to the new protocol, which
        then owns it.  ``False`` if Autobahn refused the handshake (it has
        answered the request): the session is still the caller's.
        """
        self._factory.handed = (session, headers)
        try:
            body = self._resource.render(request)
        finally:
            taken = self._factory.handed is None
            self._factory.handed = None
        # Autobahn built nothing if the client is gone (no transport) or its
        # factory failed (it has set a 500).
        alive = request.channel is not None and request.channel.transport is not None
        if isinstance(body, bytes) and alive:
            request.write(body)
            request.finish()
        return taken
