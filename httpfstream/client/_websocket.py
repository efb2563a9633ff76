"""
The WebSocket side of the client: an Autobahn client protocol that turns
Autobahn's callbacks into Deferreds, and `connect`, which opens one.

Two Autobahn traps shape this: a refused
handshake (any status but 101) never reaches ``onConnect`` and fires no
agent Deferred, so the status is read from ``http_status_line`` in
``onClose``; and Autobahn's timers are whole seconds, so the handshake also
gets a reactor timeout of our own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger

from ._errors import DROPPED, ConnectionLost, http_error
from ._tls import TLSSettings
from ._urls import Target

_log = Logger()

#: Seconds the server may take to answer our Close: it does so only once
#: every byte is persisted (and synced), so Autobahn's 1 s is too short.
_CLOSE_HANDSHAKE_TIMEOUT = 5


class ClientProtocol(WebSocketClientProtocol):
    """
    Turns Autobahn's callbacks into two Deferreds and a message hook.

    :ivar opened: fires with the protocol once the handshake succeeds; fails
        with an `HTTPError` for a refusal, or `ConnectionLost`.
    :ivar closed: fires with ``(code, reason)`` once an open connection
        ends: the server's Close code and reason if one came, else what
        Autobahn reports (1006 for a connection dropped without one).
    :ivar on_message: called with ``(payload, is_binary)`` for each message.
    :ivar response_headers: the 101 response's headers, lowercase names.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[ClientProtocol] = Deferred()
        self.closed: Deferred[tuple[int | None, str]] = Deferred()
        self.on_message: Callable[[bytes, bool], None] = lambda p, b: None
        self.response_headers: dict[str, str] = {}

    def onConnect(self, response: Any) -> None:
        self.response_headers = dict(response.headers)

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            self.on_message(payload, isBinary)
        except Exception:
            _log.failure("handling a message")
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(self._refusal(reason))
            return
        remote = getattr(self, "remoteCloseCode", None)
        if remote is not None:
            # The server's Close says how the session ended, even if its
            # TCP connection then failed to end in time (Autobahn reports
            # that as 1006): its bytes and acknowledgements came before.
            code, reason = remote, getattr(self, "remoteCloseReason", None) or reason
        self.closed.callback((code, reason or ""))

    def _refusal(self, reason: str | None) -> Exception:
        status_line = getattr(self, "http_status_line", None)
        if status_line:
            parts = status_line.split(" ", 2)
            if len(parts) >= 2 and parts[1].isdigit():
                headers = dict(getattr(self, "http_headers", {}) or {})
                message = parts[2] if len(parts) > 2 else ""
                return http_error(int(parts[1]), message, headers)
        return ConnectionLost(DROPPED, reason)


async def connect(
    reactor: Any,
    target: Target,
    headers: Mapping[str, str],
    timeout: float,
    tls: TLSSettings | None,
) -> ClientProtocol:
    """
    Open a WebSocket to ``target.ws_url``.

    :param reactor: the reactor to connect with.
    :param target: where to connect.
    :param headers: request headers (the verb, the token).
    :param timeout: seconds for connecting and for the opening handshake.
    :param tls: the TLS settings, used when ``target.secure``.
    :raises HTTPError: the server answered with a status other than 101.
    :raises ConnectionLost: the handshake failed or timed out.
    """
    factory = WebSocketClientFactory(target.ws_url, headers=dict(headers))
    factory.protocol = ClientProtocol
    factory.setProtocolOptions(
        openHandshakeTimeout=max(2, int(timeout)),
        closeHandshakeTimeout=_CLOSE_HANDSHAKE_TIMEOUT,
        # Appenders' and followers' payloads are bytes, whatever the frame.
        utf8validateIncoming=False,
    )
    endpoint: Any = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if target.secure:
        assert tls is not None, "a wss:// target needs TLS settings"
        endpoint = wrapClientTLS(tls, endpoint)
    proto: ClientProtocol = await endpoint.connect(factory)
    opened = proto.opened
    # Autobahn's own timer rounds to whole seconds;
    # this one makes sure the handshake can never hang.
    opened.addTimeout(timeout + 1, reactor)
    try:
        return await opened
    except CancelledError:
        proto.dropConnection(abort=True)
        raise ConnectionLost(DROPPED, "opening handshake timed out") from None
