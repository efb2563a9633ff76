"""
Following a resource: over a WebSocket while an appender holds it, as one
plain GET when none does, resuming from the bytes already received after a
dropped connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import treq
from twisted.python.failure import Failure

from ..protocol import ACTIVE, APPENDER_LOST, COMPLETE, FOLLOW, OFFSET, Param
from ._backoff import Backoff, retryable
from ._connections import Connections, response_headers
from ._errors import (
    ACTIVE_YES,
    ConnectionLost,
    FollowResult,
    HTTPError,
    NotFound,
    http_error,
)
from ._urls import TEXT_FRAMES, YES, target


async def follow(
    connections: Connections,
    url: str,
    on_data: Callable[[bytes], object],
    offset: int,
    retry: bool,
    give_up_after: float,
    wait: bool,
    text_frames: bool,
) -> FollowResult:
    """`Client.follow`, which documents the parameters."""
    position = offset
    backoff = Backoff(connections.reactor, give_up_after)
    while True:
        try:
            result = await _follow_once(
                connections, url, on_data, position, text_frames
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


class _AppenderAppeared(Exception):
    """Between a refused WebSocket and the plain GET, an appender arrived."""


class _Progress(Exception):
    """A follow attempt failed after reaching ``offset``."""

    def __init__(self, error: BaseException, offset: int, moved: bool) -> None:
        self.error, self.offset, self.moved = error, offset, moved


async def _follow_once(
    connections: Connections,
    url: str,
    on_data: Callable[[bytes], object],
    offset: int,
    text_frames: bool,
) -> FollowResult:
    frames = TEXT_FRAMES if text_frames else None
    where = target(url, {Param.OFFSET: offset or None, Param.FRAMES: frames})
    try:
        proto = await connections.websocket(where, FOLLOW)
    except HTTPError as e:
        if e.status == 200:
            return await _finished(connections, url, on_data, offset)
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
    connections: Connections,
    url: str,
    on_data: Callable[[bytes], object],
    offset: int,
) -> FollowResult:
    """The resource has no appender: fetch its content from ``offset``."""
    where = target(url, {Param.FOLLOW: YES, Param.OFFSET: offset or None})
    response = await connections.get(where, FOLLOW, unbuffered=True)
    headers = response_headers(response)
    if response.code != 200:
        await treq.content(response)
        raise _Progress(
            http_error(response.code, response.phrase.decode(), headers), offset, False
        )
    position = int(headers.get(OFFSET.lower(), "0"))
    if headers.get(ACTIVE.lower()) == ACTIVE_YES:
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
    """A body protocol that stops the body at once."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass
