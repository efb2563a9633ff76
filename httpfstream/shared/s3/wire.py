"""
`Wire`: the one way a request to S3 goes out and its answer comes back:
signed (`signing`), sent by Twisted's HTTP client over pooled
connections, timed out, tried again while S3 is unavailable, and a
refusal turned into the `errors` it means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from .config import Endpoint
from .errors import S3Error, S3Unavailable, error_from_answer, error_from_failure
from .signing import EMPTY_SHA256, Signer
from .tls import policy_for

__all__ = ["Wire", "drop", "header", "query", "request_id"]

_log = Logger()

#: A body must go at least this fast (bytes a second): a request with a
#: body waits `Wire.timeout` plus its length at this rate for its answer.
_SLOWEST = 256 * 1024
#: The most of an answer's body read into memory (a listing page of 1,000
#: long keys is well under it).
_SMALL_BODY = 16 * 1024 * 1024


def host_of(url: str) -> str:
    """The Host header for ``url``, as SigV4 signs it (no default port)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def query(params: Mapping[str, str | None]) -> str:
    """A query string encoded as SigV4 canonicalises it (a bare name for None)."""
    return "&".join(
        quote(k, safe="-_.~") + ("" if v is None else "=" + quote(v, safe="-_.~"))
        for k, v in sorted(params.items())
    )


def header(response: IResponse, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def request_id(response: IResponse) -> str | None:
    return header(response, "x-amz-request-id")


class Wire:
    """
    Requests to one endpoint.

    :ivar timeout: seconds to connect, and for an answer once a request is
        sent (plus a second per 256 KiB of its body), and for a small
        answer's body.
    :ivar attempts: tries of a request that got no answer or a "not now".
    """

    def __init__(
        self,
        endpoint: Endpoint,
        signer: Signer,
        reactor: Any,
        timeout: float,
        attempts: int,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.attempts = attempts
        self._signer = signer
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        # Under the 20 s or so after which S3 endpoints close idle
        # connections, so a reused one is seldom already closed.
        self._pool.cachedConnectionTimeout = 10
        self._agent = Agent(
            reactor,
            contextFactory=policy_for(endpoint.ca_bundle),
            connectTimeout=timeout,
            pool=self._pool,
        )

    def close(self) -> Deferred[None]:
        d: Deferred[None] = self._pool.closeCachedConnections()
        return d

    async def send(
        self,
        operation: str,
        key: str | None,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], IBodyProducer] | None = None,
        payload_sha256: str = EMPTY_SHA256,
        length: int = 0,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
    ) -> IResponse:
        """
        Sends a signed request, and again while it gets `S3Unavailable` (if
        ``retry``: a quarter second later, then four times longer each
        time, `attempts` tries in all); fires with its answer when its
        status is in ``ok``, else fails with the `S3Error` the answer (or
        its absence) says. ``body`` makes the body's producer anew for each
        try; ``payload_sha256`` is the body's SHA-256.
        """
        attempt = 1
        while True:
            try:
                return await self._send_once(
                    operation,
                    key,
                    method,
                    url,
                    headers or {},
                    body,
                    payload_sha256,
                    length,
                    ok,
                )
            except S3Unavailable as e:
                if not retry or attempt >= self.attempts:
                    raise
                delay = 0.25 * 4 ** (attempt - 1)
                _log.info(
                    "S3 {error}; try {n} of {of} in {delay}s",
                    error=e,
                    n=attempt + 1,
                    of=self.attempts,
                    delay=delay,
                )
                await deferLater(self._reactor, delay, lambda: None)
                attempt += 1

    async def _send_once(
        self,
        operation: str,
        key: str | None,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: Callable[[], IBodyProducer] | None,
        payload_sha256: str,
        length: int,
        ok: tuple[int, ...],
    ) -> IResponse:
        try:
            credentials = await self._signer.frozen()
        except CancelledError:
            raise
        except Exception as e:
            message = f"credentials: {e}"
            raise S3Error(operation, key, message, code="Credentials") from e
        sent = dict(headers, Host=host_of(url))
        if body is not None:
            sent["Content-Length"] = str(length)
        signed = Signer.sign(
            credentials, self.endpoint.region, method, url, sent, payload_sha256
        )
        producer = body() if body is not None else None
        request = self._agent.request(
            method.encode(),
            url.encode("ascii"),
            # The body producer's length makes the Content-Length.
            Headers({k: [v] for k, v in signed.items() if k != "Content-Length"}),
            producer,
        )
        # Who ended the request, if anybody did: Twisted's client reports a
        # cancellation in many guises (a DNSLookupError while resolving).
        ended: list[str] = []

        def end(why: str) -> None:
            ended.append(why)
            request.cancel()

        allowed = self.timeout + length / _SLOWEST
        timer = self._reactor.callLater(allowed, end, "timeout")
        answering: Deferred[IResponse] = Deferred(lambda _: end("caller"))
        request.chainDeferred(answering)
        try:
            response: IResponse = await answering
        except Exception as e:
            if ended == ["caller"]:
                raise CancelledError() from e
            if ended == ["timeout"]:
                message = f"no answer in {allowed:g}s"
                raise S3Unavailable(operation, key, message) from e
            raise error_from_failure(operation, key, Failure()) from e
        finally:
            if timer.active():
                timer.cancel()
        if response.code in ok:
            return response
        answer = await self.read(operation, key, response)
        raise error_from_answer(
            operation, key, response.code, answer, request_id(response)
        )

    async def read(self, operation: str, key: str | None, response: IResponse) -> bytes:
        """A small answer's body (XML, or nothing), within the timeout."""
        small = _Small()
        response.deliverBody(small)
        small.done.addTimeout(self.timeout, self._reactor)
        try:
            return await small.done
        except CancelledError:
            raise
        except Exception as e:
            raise error_from_failure(operation, key, Failure()) from e


class _Small(Protocol):
    """An answer's body, up to `_SMALL_BODY`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._drop())

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > _SMALL_BODY:
            self._drop()
        else:
            self.parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if self.size > _SMALL_BODY:
            self.done.errback(ValueError(f"an answer over {_SMALL_BODY} bytes"))
        elif reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


class _Drop(Protocol):
    """Drops an unwanted body (and its connection) instead of reading it."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


def drop(response: IResponse) -> None:
    """Drops an answer's body unread (and so its connection)."""
    response.deliverBody(_Drop())
