"""
What the client API raises, and how a follow ends (`FollowResult`).

Refusals carry the HTTP status (`HTTPError` and its kinds); connections that
end without the close code that finishes the call carry the WebSocket close
code (`ConnectionLost`, `AppendFailed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import ACTIVE, SIZE

#: The close code a WebSocket library reports for a connection that ended
#: without a Close frame (never sent on the wire, so not in `..protocol`).
DROPPED = 1006
#: ``Httpfstream-Active`` while an appender holds the resource.
ACTIVE_YES = "1"


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
        self.active = headers.get(ACTIVE.lower()) == ACTIVE_YES


class AccessDenied(HTTPError):
    """401 (no valid token) or 403 (the token does not grant this)."""


class NotFound(HTTPError):
    """404: the resource was never written (or its name is not valid)."""


class AppenderConflict(HTTPError):
    """409: another appender holds the resource."""


class OffsetMismatch(HTTPError):
    """
    412: the resource does not hold the ``offset`` bytes asked for.

    :ivar why: when a resuming appender gave up on it, the reason (the
        bytes it holds are not the ones the appender sent, say).
    """

    def __init__(
        self, status: int, message: str, headers: dict[str, str], why: str = ""
    ) -> None:
        super().__init__(status, f"{message}: {why}" if why else message, headers)
        self.why = why


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


_KINDS: dict[int, type[HTTPError]] = {
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    409: AppenderConflict,
    412: OffsetMismatch,
}


def http_error(status: int, message: str, headers: dict[str, str]) -> HTTPError:
    """
    The `HTTPError` of the right kind for a refusal.

    :param status: the HTTP status code.
    :param message: the reason phrase.
    :param headers: the response headers, lowercase names.
    """
    return _KINDS.get(status, HTTPError)(status, message, headers)


@dataclass(frozen=True)
class FollowResult:
    """
    How a follow ended.

    :ivar complete: ``True`` if the appender finished cleanly (close 1000)
        or the resource was already finished and complete
        (``Httpfstream-Complete: 1``, or no such header from an older
        server); ``False`` if the appender was lost or interrupted (close
        4000) or the resource was found finished but incomplete
        (``Httpfstream-Complete: 0``), and, with ``retry``, no new
        appender finished it within ``give_up_after``.
    :ivar code: the close code: 1000 (also for a complete resource served
        whole) or 4000 (also for an incomplete one served whole).
    :ivar offset: the offset after the last byte received.
    :ivar reason: the close reason the server gave, or why the resource is
        not complete.
    """

    complete: bool
    code: int
    offset: int
    reason: str = ""
