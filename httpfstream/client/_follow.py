"""
Following a resource: over a WebSocket while an appender holds it, as one
plain GET when none does, resuming from the bytes already received after a
dropped connection.

How a follow ends (PROTOCOL.md sections 4, 7 and 9):

- a WebSocket closed with 1000, or a resource with no appender whose
  ``Httpfstream-Complete`` is ``1`` (or absent: an older server), is
  complete;
- a WebSocket closed with 4000 (the appender was lost, or interrupted), or
  a resource with no appender and ``Httpfstream-Complete: 0``, is *not
  finished yet*: without ``retry`` the follow ends there, not complete;
  with ``retry`` it keeps what it has, polls (reconnecting with backoff,
  ``offset=`` the bytes it has) until a new appender comes or the resource
  turns complete, and ends not complete if neither happens within
  ``give_up_after``;
- anything else (a dropped connection, 1001) is an error, retried with
  ``retry``.

Where each attempt starts is a `Position`: the first may ask for a line
(``lines=``), every later one for the byte reached; lines stamped with
their time (``timestamps=1``) are resumed at the line reached instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import treq
from twisted.logger import Logger
from twisted.web.client import ResponseFailed

from ..protocol import (
    ACTIVE,
    APPENDER_LOST,
    COMPLETE,
    COMPLETE_HEADER,
    FOLLOW,
    Param,
)
from ._backoff import Backoff, retryable
from ._connections import Connections, as_dropped, discard_body, response_headers
from ._errors import (
    ACTIVE_YES,
    ConnectionLost,
    FollowResult,
    HTTPError,
    NotFound,
    http_error,
)
from ._position import Position
from ._urls import TEXT_FRAMES, YES, target

_log = Logger()

#: ``Httpfstream-Complete`` of a resource whose last session did not end well.
_INCOMPLETE = "0"
#: `FollowResult.reason` for a resource found finished but incomplete.
INCOMPLETE_REASON = (
    "the resource is not complete: its last appender was lost or interrupted"
)


async def follow(
    connections: Connections,
    url: str,
    on_data: Callable[[bytes], object],
    offset: int,
    retry: bool,
    give_up_after: float,
    wait: bool,
    text_frames: bool,
    lines: int | None = None,
    timestamps: bool = False,
) -> FollowResult:
    """`Client.follow`, which documents the parameters."""
    position = Position(offset, lines, timestamps)
    backoff = Backoff(connections.reactor, give_up_after)
    while True:
        try:
            ending = await _follow_once(
                connections, url, on_data, position, text_frames
            )
        except _AppenderAppeared:
            continue
        except _Progress as p:
            waiting = wait and isinstance(p.error, NotFound)
            if not waiting and (not retry or not retryable(p.error)):
                raise p.error from None
            if p.alive:
                backoff.reset()
            await backoff.wait(p.error)
            continue
        result = ending.result
        if result.complete or not retry:
            return result
        # Not finished yet: wait for a new appender, from where we are.
        if ending.live:
            # The time spent following an appender is no time spent
            # waiting for one.
            backoff.reset()
        try:
            await backoff.wait(_NotFinished(result.offset))
        except _NotFinished:
            _log.info(
                "no appender came back within {seconds}s: {url} is not complete",
                seconds=give_up_after,
                url=url,
            )
            return result


class _NotFinished(Exception):
    """The resource is not complete yet; the follow waits for an appender."""

    def __init__(self, offset: int) -> None:
        super().__init__(
            f"{INCOMPLETE_REASON}; waiting for a new appender, at offset {offset}"
        )


@dataclass(frozen=True)
class _Ending:
    """
    How one attempt ended.

    :ivar result: what the follow would fire with if it ended here.
    :ivar live: whether an appender held the resource (a WebSocket follow).
    """

    result: FollowResult
    live: bool


class _AppenderAppeared(Exception):
    """Between a refused WebSocket and the plain GET, an appender arrived."""


class _Progress(Exception):
    """
    A follow attempt failed (its `Position` says how far it got).

    :ivar alive: whether it got anywhere: reached an appender (a WebSocket
        follow) or received bytes; the budget for retrying starts again.
    """

    def __init__(self, error: BaseException, alive: bool) -> None:
        self.error, self.alive = error, alive


def _complete(headers: dict[str, str]) -> bool:
    """
    Whether a response about a resource with no appender says it is
    complete (a server that does not say counts as saying so).
    """
    return headers.get(COMPLETE_HEADER.lower()) != _INCOMPLETE


def _unappended(offset: int, headers: dict[str, str]) -> _Ending:
    """The ending at ``offset`` of a resource with no appender."""
    if _complete(headers):
        return _Ending(FollowResult(True, COMPLETE, offset), False)
    return _Ending(FollowResult(False, APPENDER_LOST, offset, INCOMPLETE_REASON), False)


async def _follow_once(
    connections: Connections,
    url: str,
    on_data: Callable[[bytes], object],
    position: Position,
    text_frames: bool,
) -> _Ending:
    frames = TEXT_FRAMES if text_frames else None
    where = target(url, {**position.params(), Param.FRAMES: frames})
    try:
        proto = await connections.websocket(where, FOLLOW)
    except HTTPError as e:
        if e.status == 200:
            known = position.known
            if known is not None and e.size == known:
                # Nothing new to fetch: the answer says all there is.
                return _unappended(known, e.headers)
            return await _finished(connections, url, on_data, position)
        raise _Progress(e, False) from None
    except Exception as e:
        raise _Progress(e, False) from None
    position.begin(proto.response_headers)
    proto.on_message = lambda payload, is_binary: _hand_on(position, payload, on_data)
    code, reason = await proto.closed
    if code == COMPLETE:
        return _Ending(FollowResult(True, COMPLETE, position.offset, reason), True)
    if code == APPENDER_LOST:
        ending = FollowResult(False, APPENDER_LOST, position.offset, reason)
        return _Ending(ending, True)
    raise _Progress(ConnectionLost(code, reason), True)


def _hand_on(
    position: Position, data: bytes, on_data: Callable[[bytes], object]
) -> None:
    """``data`` received: ``on_data`` gets what it has not had yet."""
    fresh = position.feed(data)
    if fresh:
        on_data(fresh)


async def _finished(
    connections: Connections,
    url: str,
    on_data: Callable[[bytes], object],
    position: Position,
) -> _Ending:
    """The resource has no appender: fetch its content from ``position``."""
    where = target(url, {Param.FOLLOW: YES, **position.params()})
    try:
        response = await connections.get(where, FOLLOW, unbuffered=True)
    except Exception as e:
        raise _Progress(as_dropped(e), False) from None
    headers = response_headers(response)
    if response.code != 200:
        body = await treq.content(response)
        refusal = http_error(response.code, response.phrase.decode(), headers, body)
        raise _Progress(refusal, False)
    if headers.get(ACTIVE.lower()) == ACTIVE_YES:
        # An appender arrived since the WebSocket was refused: follow it
        # over a WebSocket instead, from where this response would start.
        discard_body(response)
        raise _AppenderAppeared()
    start = position.begin(headers)
    try:
        await treq.collect(response, lambda data: _hand_on(position, data, on_data))
    except ResponseFailed as e:
        # Cut off mid-body: what arrived counts, the rest comes on a retry.
        raise _Progress(as_dropped(e), position.offset > start) from None
    return _unappended(position.offset, headers)
