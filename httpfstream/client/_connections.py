"""
`Connections`: what every call of one `Client` shares to reach servers (the
reactor, the bearer token, TLS settings, the timeout, and one pooled
twisted.web Agent), and the two ways a call talks to a server: a WebSocket,
or a GET through that Agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers

from ..protocol import X_VERB
from ._errors import DROPPED, ConnectionLost
from ._tls import TLSPolicy
from ._urls import Target
from ._websocket import ClientProtocol, connect


class Connections:
    """
    The plumbing of one `Client`.

    :param reactor: the reactor everything runs on.
    :param policy: the TLS settings per host, for https and wss.
    :param token: a bearer token sent with every request, if given.
    :param timeout: seconds for connecting, for a WebSocket's opening
        handshake, and for an HTTP response.
    :ivar reactor: the reactor.
    """

    def __init__(
        self, reactor: Any, policy: TLSPolicy, token: str | None, timeout: float
    ) -> None:
        self.reactor = reactor
        self._policy = policy
        self._token = token
        self._timeout = timeout
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._http = HTTPClient(Agent(reactor, contextFactory=policy, pool=self._pool))

    def _headers(self, verb: str | None) -> dict[str, str]:
        headers = {X_VERB: verb} if verb is not None else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def websocket(self, target: Target, verb: str) -> ClientProtocol:
        """
        Open a WebSocket to ``target`` for ``verb``.

        :raises HTTPError: the server answered with a status other than 101.
        :raises ConnectionLost: the handshake failed or timed out.
        """
        tls = self._policy.for_host(target.host) if target.secure else None
        return await connect(
            self.reactor, target, self._headers(verb), self._timeout, tls
        )

    def get(
        self,
        target: Target,
        verb: str | None = None,
        *,
        unbuffered: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Deferred[Any]:
        """
        GET ``target`` through the pooled Agent; fires with treq's response.

        :param verb: sent as ``X-Verb`` if given.
        :param unbuffered: do not buffer the body (for streaming it).
        :param headers: more request headers (``Range``, say).
        """
        fields = {**self._headers(verb), **(headers or {})}
        sent = Headers({k: [v] for k, v in fields.items()})
        return self._http.get(
            target.http_url,
            headers=sent,
            timeout=self._timeout,
            unbuffered=unbuffered,
            reactor=self.reactor,
        )

    def close(self) -> Deferred[None]:
        """Close the pool's idle connections; fires once they are closed."""
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed


def response_headers(response: Any) -> dict[str, str]:
    """A treq response's headers: lowercase names, first values."""
    return {
        k.decode("latin-1").lower(): v[0].decode("latin-1")
        for k, v in response.headers.getAllRawHeaders()
    }


#: What twisted.web's Agent fails with when a connection ends mid-request.
_CUT_OFF = (ResponseFailed, ResponseNeverReceived, RequestTransmissionFailed)


def as_dropped(error: Exception) -> Exception:
    """
    ``error``, or a `ConnectionLost` with code 1006 if it says an HTTP
    connection ended before its response did (which a resuming caller
    treats as it treats a dropped WebSocket).

    :param error: what a GET through `Connections.get` failed with.
    """
    if isinstance(error, _CUT_OFF):
        return ConnectionLost(DROPPED, f"HTTP connection ended early: {error}")
    return error


class _Discard:
    """A body protocol that stops the body at once."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: object) -> None:
        pass


def discard_body(response: Any) -> None:
    """Read none of a treq response's body: stop it at once."""
    response.original.deliverBody(_Discard())
