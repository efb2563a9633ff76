"""
The client API: every call returns a Deferred (use ``await`` inside
``Deferred.fromCoroutine`` or ``react``).

::

    size = await client.append("http://host:8080/logs/build.log", b"hello\\n")
    data = await client.read("http://host:8080/logs/build.log")
    result = await client.follow(url, sys.stdout.buffer.write, retry=True)
    appender = await client.open_append(url)
    appender.write(b"more\\n")
    size = await appender.close()

URLs are ``http://`` or ``https://`` (the WebSocket calls use ``ws://`` or
``wss://`` to the same place).  Errors are exceptions to catch by kind:
`NotFound`, `AppenderConflict`, `OffsetMismatch`, or `HTTPError` with the
status for the rest; `AppendFailed` when the server ends an appender with a
close code other than 1000.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import treq
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IPushProducer
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ..protocol import (
    ACTIVE,
    APPEND,
    APPENDER_LOST,
    COMPLETE,
    FOLLOW,
    GOING_AWAY,
    OFFSET,
    SIZE,
    TOO_BIG,
    WRITE_FAILED,
    X_VERB,
    Param,
)

__all__ = [
    "AccessDenied",
    "AppendFailed",
    "Appender",
    "AppenderConflict",
    "ConnectionLost",
    "FollowResult",
    "HTTPError",
    "NotFound",
    "OffsetMismatch",
    "append",
    "follow",
    "open_append",
    "read",
]

_log = Logger()

#: The close code a WebSocket library reports for a connection that ended
#: without a Close frame (never sent on the wire, so not in `..protocol`).
_DROPPED = 1006
#: Close codes that mean "try again later" to a resuming client.
_RESUMABLE = {GOING_AWAY, _DROPPED}
#: The value of `Param.FRAMES` asking for text frames.
_TEXT_FRAMES = "text"
#: Header values and query parameters (``ack``, ``follow``) meaning "yes".
_YES = "1"

_CHUNK = 64 << 10


# -- errors -----------------------------------------------------------------


class HTTPError(Exception):
    """
    The server answered with a status that refuses the request.

    :ivar status: the HTTP status code.
    :ivar headers: the response headers, lowercase names.
    :ivar size: ``Httpfstream-Size`` from the response, if it had one.
    :ivar active: whether ``Httpfstream-Active`` said an appender held it.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(f"{status} {message}".strip())
        self.status = status
        self.headers = headers
        size = headers.get(SIZE.lower())
        self.size: int | None = int(size) if size and size.isdigit() else None
        self.active = headers.get(ACTIVE.lower()) == _YES


class AccessDenied(HTTPError):
    """401 (no valid token) or 403 (the token does not grant this)."""


class NotFound(HTTPError):
    """404: the resource was never written (or its name is not valid)."""


class AppenderConflict(HTTPError):
    """409: another appender holds the resource."""


class OffsetMismatch(HTTPError):
    """412: the resource does not hold the ``offset`` bytes asked for."""


class ConnectionLost(Exception):
    """
    The connection ended without the close code that finishes the call.

    :ivar code: the WebSocket close code (1006: dropped without a Close).
    """

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed ({code}): {reason or 'no reason'}")
        self.code = code


class AppendFailed(ConnectionLost):
    """The server closed the appender: 1009 (over a limit), 1011 (write failed)."""


def _http_error(status: int, message: str, headers: dict[str, str]) -> HTTPError:
    kind = {
        401: AccessDenied,
        403: AccessDenied,
        404: NotFound,
        409: AppenderConflict,
        412: OffsetMismatch,
    }.get(status, HTTPError)
    return kind(status, message, headers)


@dataclass(frozen=True)
class FollowResult:
    """
    How a follow ended.

    :ivar complete: ``True`` if the appender finished cleanly (close 1000)
        or the resource was already finished; ``False`` if the appender was
        lost (close 4000).
    :ivar code: the close code (1000 for a finished resource served whole).
    :ivar offset: the offset after the last byte received.
    :ivar reason: the close reason the server gave.
    """

    complete: bool
    code: int
    offset: int
    reason: str = ""


# -- plumbing ---------------------------------------------------------------


@dataclass
class _Target:
    http_url: str
    ws_url: str
    host: str
    port: int
    secure: bool


@dataclass(frozen=True)
class _Credentials:
    """How to reach the server: a TLS context and a bearer token."""

    tls: CertificateOptions | None = None
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def http_headers(self, extra: dict[str, str] | None = None) -> Headers:
        """For treq: ours, and ``extra``."""
        return Headers({k: [v] for k, v in {**self.headers(), **(extra or {})}.items()})


def _target(url: str, params: dict[Param, object] | None = None) -> _Target:
    """
    ``url`` as http and ws URLs, with ``params`` replacing the query
    parameters of those names (a ``None`` value removes one).
    """
    params = params or {}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    secure = parts.scheme == "https"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in params
    ]
    query += [(k.value, str(v)) for k, v in params.items() if v is not None]
    qs = urlencode(query)
    http_url = urlunsplit((parts.scheme, parts.netloc, parts.path, qs, ""))
    ws_url = urlunsplit(("wss" if secure else "ws", parts.netloc, parts.path, qs, ""))
    host = parts.hostname or "localhost"
    return _Target(
        http_url, ws_url, host, parts.port or (443 if secure else 80), secure
    )


def _tls(target: _Target, tls: CertificateOptions | None) -> Any:
    return tls if tls is not None else optionsForClientTLS(target.host)


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


class _ClientProtocol(WebSocketClientProtocol):
    """Turns Autobahn's callbacks into two Deferreds and a message hook."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[_ClientProtocol] = Deferred()
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
        else:
            self.closed.callback((code, reason or ""))

    def _refusal(self, reason: str | None) -> Exception:
        status_line = getattr(self, "http_status_line", None)
        if status_line:
            parts = status_line.split(" ", 2)
            if len(parts) >= 2 and parts[1].isdigit():
                headers = dict(getattr(self, "http_headers", {}) or {})
                message = parts[2] if len(parts) > 2 else ""
                return _http_error(int(parts[1]), message, headers)
        return ConnectionLost(_DROPPED, reason)


async def _connect(
    reactor: Any,
    target: _Target,
    verb: str,
    timeout: float,
    creds: _Credentials,
) -> _ClientProtocol:
    """Open a WebSocket; fail with `HTTPError` if the server answers non-101."""
    factory = WebSocketClientFactory(
        target.ws_url, headers={X_VERB: verb, **creds.headers()}
    )
    factory.protocol = _ClientProtocol
    factory.setProtocolOptions(
        openHandshakeTimeout=max(2, int(timeout)),
        closeHandshakeTimeout=5,
        # Appenders' and followers' payloads are bytes, whatever the frame.
        utf8validateIncoming=False,
    )
    endpoint: Any = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if target.secure:
        endpoint = wrapClientTLS(_tls(target, creds.tls), endpoint)
    proto: _ClientProtocol = await endpoint.connect(factory)
    opened = proto.opened
    # Autobahn's own timer rounds to whole seconds (STACK_NOTES.md 5.5);
    # this one makes sure the handshake can never hang.
    opened.addTimeout(timeout + 1, reactor)
    try:
        return await opened
    except CancelledError:
        proto.dropConnection(abort=True)
        raise ConnectionLost(_DROPPED, "opening handshake timed out") from None


def _headers(response: Any) -> dict[str, str]:
    return {
        k.decode("latin-1").lower(): v[0].decode("latin-1")
        for k, v in response.headers.getAllRawHeaders()
    }


class _Backoff:
    """Exponential backoff with jitter, within an overall deadline."""

    def __init__(self, reactor: Any, give_up_after: float) -> None:
        self._reactor = reactor
        self._give_up_after = give_up_after
        self.reset()

    def reset(self) -> None:
        self._delay = 0.25
        self._since = self._reactor.seconds()

    async def wait(self, error: BaseException) -> None:
        if self._reactor.seconds() - self._since > self._give_up_after:
            raise error
        delay = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, 5.0)
        _log.info("retrying in {delay:.1f}s after: {error}", delay=delay, error=error)
        await deferLater(self._reactor, delay, lambda: None)


def _retryable(e: BaseException) -> bool:
    if isinstance(e, ConnectionLost):
        return e.code in _RESUMABLE
    if isinstance(e, HTTPError):
        return e.status in (502, 503, 504)
    return isinstance(e, net_error.ConnectError | net_error.ConnectionLost)


# -- reading ----------------------------------------------------------------


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
    reactor = _reactor(reactor)

    async def get() -> bytes:
        target = _target(url)
        response = await treq.get(
            target.http_url,
            headers=_Credentials(tls, token).http_headers(),
            timeout=timeout,
            **_treq_options(reactor, tls),
        )
        body: bytes = await treq.content(response)
        if response.code != 200:
            raise _http_error(
                response.code, response.phrase.decode(), _headers(response)
            )
        return body

    return Deferred.fromCoroutine(get())


def _treq_options(reactor: Any, tls: CertificateOptions | None) -> dict[str, Any]:
    """treq keyword arguments: the reactor, and an agent for a custom CA."""
    if tls is None:
        return {"reactor": reactor}

    @implementer(IPolicyForHTTPS)
    class _Policy:
        def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
            return tls

    return {"reactor": reactor, "agent": Agent(reactor, contextFactory=_Policy())}


def follow(
    url: str,
    on_data: Callable[[bytes], object],
    offset: int = 0,
    *,
    retry: bool = False,
    give_up_after: float = 300,
    wait: bool = False,
    text_frames: bool = False,
    reactor: Any = None,
    tls: CertificateOptions | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> Deferred[FollowResult]:
    """
    Follow a resource: call ``on_data(bytes)`` with its bytes from
    ``offset`` (negative: the last ``-offset`` bytes) as they are persisted.

    Fires with a `FollowResult` when the appender finishes (``complete``)
    or is lost (``complete`` false), or at once after the whole content of
    a finished resource.

    :param token: a bearer token, for a server with access control.
    :param retry: after a dropped connection (1006), a server restart
        (1001) or a refused connection, reconnect from the bytes already
        received, with backoff, so ``on_data`` sees every byte exactly once.
    :param give_up_after: seconds of failed reconnecting before the last
        error is raised.
    :param wait: if the resource was never written, wait (retrying with
        backoff, up to ``give_up_after``) for it to be.
    :raises NotFound: the resource was never written (and ``wait`` is
        false, or it still was not after ``give_up_after``).
    :raises ConnectionLost: the connection ended otherwise (without
        ``retry``, or after ``give_up_after``).
    """
    reactor = _reactor(reactor)
    creds = _Credentials(tls, token)

    async def run() -> FollowResult:
        position = offset
        backoff = _Backoff(reactor, give_up_after)
        while True:
            try:
                result = await _follow_once(
                    reactor, url, on_data, position, text_frames, creds, timeout
                )
            except _AppenderAppeared:
                continue
            except _Progress as p:
                position = p.offset
                waiting = wait and isinstance(p.error, NotFound)
                if not waiting and (not retry or not _retryable(p.error)):
                    raise p.error from None
                if p.moved:
                    backoff.reset()
                await backoff.wait(p.error)
                continue
            return result

    return Deferred.fromCoroutine(run())


class _AppenderAppeared(Exception):
    """Between a refused WebSocket and the plain GET, an appender arrived."""


class _Progress(Exception):
    """A follow attempt failed after reaching ``offset``."""

    def __init__(self, error: BaseException, offset: int, moved: bool) -> None:
        self.error, self.offset, self.moved = error, offset, moved


async def _follow_once(
    reactor: Any,
    url: str,
    on_data: Callable[[bytes], object],
    offset: int,
    text_frames: bool,
    creds: _Credentials,
    timeout: float,
) -> FollowResult:
    frames = _TEXT_FRAMES if text_frames else None
    target = _target(url, {Param.OFFSET: offset or None, Param.FRAMES: frames})
    try:
        proto = await _connect(reactor, target, FOLLOW, timeout, creds)
    except HTTPError as e:
        if e.status == 200:
            return await _finished(reactor, url, on_data, offset, creds, timeout)
        raise _Progress(e, offset, False) from None
    except Exception as e:
        raise _Progress(e, offset, False) from None
    position = int(proto.response_headers.get(OFFSET.lower(), offset))
    start = position

    def received(payload: bytes, is_binary: bool) -> None:
        nonlocal position
        position += len(payload)
        on_data(payload)

    proto.on_message = received
    code, reason = await proto.closed
    if code == COMPLETE:
        return FollowResult(True, COMPLETE, position, reason)
    if code == APPENDER_LOST:
        return FollowResult(False, APPENDER_LOST, position, reason)
    raise _Progress(ConnectionLost(code, reason), position, position > start)


async def _finished(
    reactor: Any,
    url: str,
    on_data: Callable[[bytes], object],
    offset: int,
    creds: _Credentials,
    timeout: float,
) -> FollowResult:
    """The resource has no appender: fetch its content from ``offset``."""
    target = _target(url, {Param.FOLLOW: _YES, Param.OFFSET: offset or None})
    response = await treq.get(
        target.http_url,
        headers=creds.http_headers({X_VERB: FOLLOW}),
        timeout=timeout,
        unbuffered=True,
        **_treq_options(reactor, creds.tls),
    )
    headers = _headers(response)
    if response.code != 200:
        await treq.content(response)
        raise _Progress(
            _http_error(response.code, response.phrase.decode(), headers), offset, False
        )
    position = int(headers.get(OFFSET.lower(), "0"))
    if headers.get(ACTIVE.lower()) == _YES:
        # An appender arrived since the WebSocket was refused: follow it
        # over a WebSocket instead, from where this response would start.
        response.original.deliverBody(_Discard())
        raise _AppenderAppeared()

    def received(data: bytes) -> None:
        nonlocal position
        position += len(data)
        on_data(data)

    await treq.collect(response, received)
    return FollowResult(True, COMPLETE, position)


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


# -- appending --------------------------------------------------------------


@implementer(IPushProducer)
class Appender:
    """
    An open APPEND session.  Get one from `open_append`.

    ``write`` queues bytes; ``close`` fires with the final persisted size
    once the server has acknowledged every byte.  For flow control either
    wait on `drained` between writes, or `register_producer` a streaming
    producer (such as standard input), which is paused while the connection
    (or, when resuming, the buffer of unacknowledged bytes) is full.

    :ivar size: the persisted size last acknowledged by the server.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        creds: _Credentials,
        timeout: float,
        retry: bool,
        give_up_after: float,
        buffer_limit: int,
    ) -> None:
        self._reactor = reactor
        self._url = url
        self._creds = creds
        self._timeout = timeout
        self._retry = retry
        self._give_up_after = give_up_after
        self._buffer_limit = buffer_limit
        self.size = 0
        self._sent = 0  # the size the resource will have once all is written
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._unacked_bytes = 0
        self._proto: _ClientProtocol | None = None
        self._closing = False
        self._producer: IPushProducer | None = None
        self._transport_paused = False
        self._waiters: list[Deferred[None]] = []
        self._result: int | Failure | None = None
        self._observers: list[Deferred[int]] = []
        self._error: BaseException | None = None

    async def _open(self, offset: int | None) -> None:
        target = _target(self._url, {Param.ACK: _YES, Param.OFFSET: offset})
        proto = await _connect(
            self._reactor, target, APPEND, self._timeout, self._creds
        )
        self.size = int(proto.response_headers.get(SIZE.lower(), "0"))
        self._sent = self.size
        self._attach(proto)

    def _attach(self, proto: _ClientProtocol) -> None:
        self._proto = proto
        proto.on_message = self._ack
        transport: Any = proto.transport
        transport.registerProducer(self, True)
        proto.closed.addCallback(self._closed)

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append ``data`` (sent as one binary message)."""
        if self._closing:
            raise RuntimeError("write() after close()")
        if self._error is not None:
            raise self._error
        if not data:
            return
        self._sent += len(data)
        if self._retry:
            self._unacked.append((self._sent, data))
            self._unacked_bytes += len(data)
        if self._proto is not None:
            self._proto.sendMessage(data, isBinary=True)
        self._update_flow()

    @property
    def full(self) -> bool:
        """Whether a writer should wait (`drained`) before writing more."""
        return self._transport_paused or self._unacked_bytes > self._buffer_limit

    def drained(self) -> Deferred[None]:
        """Fire when it is time to write more."""
        if self._error is not None:
            d: Deferred[None] = Deferred()
            d.errback(self._error)
            return d
        if not self.full:
            d = Deferred()
            d.callback(None)
            return d
        d = Deferred()
        self._waiters.append(d)
        return d

    def register_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` whenever the appender is `full`."""
        self._producer = producer
        self._update_flow()

    def unregister_producer(self) -> None:
        self._producer = None

    def close(self) -> Deferred[int]:
        """
        End the session: fires with the final size once every byte is
        persisted; fails with `AppendFailed` or `ConnectionLost` if not.
        """
        if not self._closing:
            self._closing = True
            if self._proto is not None and self._proto.state == self._proto.STATE_OPEN:
                self._proto.sendClose(COMPLETE)
        return self.wait()

    @property
    def done(self) -> bool:
        """Whether the session has ended (closed, failed or lost)."""
        return self._result is not None

    def wait(self) -> Deferred[int]:
        """
        Fire like `close` once the session ends, without ending it: with
        the final size, or the error that ended it.
        """
        d: Deferred[int] = Deferred()
        if self._result is None:
            self._observers.append(d)
        elif isinstance(self._result, Failure):
            d.errback(self._result)
        else:
            d.callback(self._result)
        return d

    # IPushProducer, registered on the WebSocket's transport.

    def pauseProducing(self) -> None:
        self._transport_paused = True
        self._update_flow()

    def resumeProducing(self) -> None:
        self._transport_paused = False
        self._update_flow()

    def stopProducing(self) -> None:
        pass

    def _update_flow(self) -> None:
        full = self.full or self._proto is None
        if self._producer is not None:
            if full:
                self._producer.pauseProducing()
            else:
                self._producer.resumeProducing()
        if not full:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    # -- acknowledgements and endings -------------------------------------

    def _ack(self, payload: bytes, is_binary: bool) -> None:
        if is_binary or not payload.isdigit():
            return
        self.size = int(payload)
        while self._unacked and self._unacked[0][0] <= self.size:
            self._unacked_bytes -= len(self._unacked.popleft()[1])
        self._update_flow()

    def _closed(self, result: tuple[int | None, str]) -> None:
        code, reason = result
        self._proto = None
        if code == COMPLETE and self._closing:
            if self.size == self._sent:
                self._finish(self.size, None)
            else:
                # Never report success for bytes the server did not confirm.
                self._finish(
                    None,
                    AppendFailed(
                        code,
                        f"the server acknowledged {self.size} bytes,"
                        f" expected {self._sent}",
                    ),
                )
        elif self._retry and code in _RESUMABLE:
            Deferred.fromCoroutine(self._resume(ConnectionLost(code, reason)))
        elif code in (TOO_BIG, WRITE_FAILED, GOING_AWAY):
            self._finish(None, AppendFailed(code, reason))
        else:
            self._finish(None, ConnectionLost(code, reason))

    async def _resume(self, error: BaseException) -> None:
        backoff = _Backoff(self._reactor, self._give_up_after)
        while True:
            await backoff.wait(error)
            try:
                await self._reconnect()
                return
            except OffsetMismatch as e:
                self._finish(None, e)
                return
            except Exception as e:
                if not _retryable(e):
                    self._finish(None, e)
                    return
                error = e

    async def _reconnect(self) -> None:
        target = _target(self._url, {Param.ACK: _YES, Param.OFFSET: self.size})
        proto = await _connect(
            self._reactor, target, APPEND, self._timeout, self._creds
        )
        self._attach(proto)
        for _end, data in self._unacked:
            proto.sendMessage(data, isBinary=True)
        _log.info("resumed appending at {size}", size=self.size)
        if self._closing:
            proto.sendClose(COMPLETE)
        self._update_flow()

    def _finish(self, size: int | None, error: BaseException | None) -> None:
        if self._result is not None:
            return
        self._error = error
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error or ConnectionLost(COMPLETE, "closed"))
        if error is not None:
            if self._producer is not None:
                self._producer.stopProducing()
            self._result = Failure(error)
        else:
            assert size is not None
            self._result = size
        observers, self._observers = self._observers, []
        for observer in observers:
            if isinstance(self._result, Failure):
                observer.errback(self._result)
            else:
                observer.callback(self._result)


def open_append(
    url: str,
    offset: int | None = None,
    *,
    retry: bool = False,
    give_up_after: float = 300,
    buffer_limit: int = 8 << 20,
    reactor: Any = None,
    tls: CertificateOptions | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> Deferred[Appender]:
    """
    Become the appender of a resource.

    :param offset: expect the resource to hold exactly this many bytes
        (`OffsetMismatch` otherwise).
    :param token: a bearer token, for a server with access control.
    :param retry: after a dropped connection (1006) or a server restart
        (1001), reconnect with ``offset=`` the acknowledged size and send
        the unacknowledged bytes again, with backoff.  Keeps up to
        ``buffer_limit`` unacknowledged bytes in memory.
    :raises AppenderConflict: another appender holds the resource.
    """
    reactor = _reactor(reactor)
    appender = Appender(
        reactor,
        url,
        _Credentials(tls, token),
        timeout,
        retry,
        give_up_after,
        buffer_limit,
    )

    async def run() -> Appender:
        await appender._open(offset)
        return appender

    return Deferred.fromCoroutine(run())


def append(
    url: str,
    data: bytes | IO[bytes] | Iterable[bytes],
    offset: int | None = None,
    **kwargs: Any,
) -> Deferred[int]:
    """
    Append ``data`` (bytes, a binary file object, or an iterable of bytes)
    over a WebSocket and fire with the final persisted size.  Takes the
    keyword arguments of `open_append`.
    """

    async def run() -> int:
        appender = await open_append(url, offset, **kwargs)
        chunks: Iterable[bytes]
        if isinstance(data, bytes | bytearray | memoryview):
            chunks = [bytes(data[i : i + _CHUNK]) for i in range(0, len(data), _CHUNK)]
        elif hasattr(data, "read"):
            chunks = iter(lambda: data.read(_CHUNK), b"")
        else:
            chunks = data
        for chunk in chunks:
            await appender.drained()
            appender.write(chunk)
        return await appender.close()

    return Deferred.fromCoroutine(run())
