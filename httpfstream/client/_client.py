"""
What every call needs to reach the server (the reactor, TLS settings, a
bearer token), and `read`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ..protocol import X_VERB
from ._errors import http_error
from ._urls import Target, target
from ._websocket import ClientProtocol, connect


@dataclass(frozen=True)
class Credentials:
    """How to reach the server: a TLS context and a bearer token."""

    tls: CertificateOptions | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def http_headers(self, extra: dict[str, str] | None = None) -> Headers:
        """For treq: ours, and ``extra``."""
        return Headers({k: [v] for k, v in {**self.headers(), **(extra or {})}.items()})


def resolve_reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


async def connect_ws(
    reactor: Any, target: Target, verb: str, timeout: float, creds: Credentials
) -> ClientProtocol:
    """Open a WebSocket; fail with `HTTPError` if the server answers non-101."""
    tls = creds.tls if creds.tls is not None else optionsForClientTLS(target.host)
    headers = {X_VERB: verb, **creds.headers()}
    return await connect(reactor, target, headers, timeout, tls)


def response_headers(response: Any) -> dict[str, str]:
    return {
        k.decode("latin-1").lower(): v[0].decode("latin-1")
        for k, v in response.headers.getAllRawHeaders()
    }


def treq_options(reactor: Any, tls: CertificateOptions | None) -> dict[str, Any]:
    """treq keyword arguments: the reactor, and an agent for a custom CA."""
    if tls is None:
        return {"reactor": reactor}

    @implementer(IPolicyForHTTPS)
    class _Policy:
        def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
            return tls

    return {"reactor": reactor, "agent": Agent(reactor, contextFactory=_Policy())}


def read(
    url: str,
    *,
    reactor: Any = None,
    tls: CertificateOptions | None = None,
    token: str | None = None,
    timeout: float = 30,
) -> Deferred[bytes]:
    """
    The resource's persisted bytes now (a snapshot, even while an appender
    is active).

    :raises NotFound: the resource was never written.
    """
    reactor = resolve_reactor(reactor)

    async def get() -> bytes:
        where = target(url)
        response = await treq.get(
            where.http_url,
            headers=Credentials(tls, token).http_headers(),
            timeout=timeout,
            **treq_options(reactor, tls),
        )
        body: bytes = await treq.content(response)
        if response.code != 200:
            raise http_error(
                response.code, response.phrase.decode(), response_headers(response)
            )
        return body

    return Deferred.fromCoroutine(get())
