"""
Following a resource: over a WebSocket while an appender holds it, as one
plain GET when none does, resuming from the bytes already received after a
dropped connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.ssl import CertificateOptions
from twisted.python.failure import Failure

from ..protocol import ACTIVE, APPENDER_LOST, COMPLETE, FOLLOW, OFFSET, X_VERB, Param
from ._backoff import Backoff, retryable
from ._client import (
    Credentials,
    connect_ws,
    resolve_reactor,
    response_headers,
    treq_options,
)
from ._errors import ConnectionLost, FollowResult, HTTPError, NotFound, http_error
from ._urls import TEXT_FRAMES, YES, target


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
    reactor = resolve_reactor(reactor)
    creds = Credentials(tls, token)

    async def run() -> FollowResult:
        position = offset
        backoff = Backoff(reactor, give_up_after)
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
                if not waiting and (not retry or not retryable(p.error)):
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
    creds: Credentials,
    timeout: float,
) -> FollowResult:
    frames = TEXT_FRAMES if text_frames else None
    where = target(url, {Param.OFFSET: offset or None, Param.FRAMES: frames})
    try:
        proto = await connect_ws(reactor, where, FOLLOW, timeout, creds)
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
    creds: Credentials,
    timeout: float,
) -> FollowResult:
    """The resource has no appender: fetch its content from ``offset``."""
    where = target(url, {Param.FOLLOW: YES, Param.OFFSET: offset or None})
    response = await treq.get(
        where.http_url,
        headers=creds.http_headers({X_VERB: FOLLOW}),
        timeout=timeout,
        unbuffered=True,
        **treq_options(reactor, creds.tls),
    )
    headers = response_headers(response)
    if response.code != 200:
        await treq.content(response)
        raise _Progress(
            http_error(response.code, response.phrase.decode(), headers), offset, False
        )
    position = int(headers.get(OFFSET.lower(), "0"))
    if headers.get(ACTIVE.lower()) == YES:
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
