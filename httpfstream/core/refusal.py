"""
`Refusal`: the one way the core (and the request table above it) says no.

A refusal carries everything its response needs: the status, a one-line
message, extra headers, and the resource's state as it was when the
refusal was decided, so that nobody has to ask again or patch it in later.
Raised by the registry (which turns what the store, the streams and the
coordination seams report into refusals, `StreamRegistry`, its work
wrapped in `refusing`) and by the web layer's own checks; answered and
counted in one place, `web.resource.StreamResource`.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable
from typing import TypeVar

from twisted.logger import Logger

from ..protocol import ResourceState
from .coordination import Unavailable
from .records import Counters
from .writes import out_of_space

__all__ = ["RETRY_SOON", "Refusal", "refusing"]

_log = Logger()
_T = TypeVar("_T")

#: ``Retry-After`` for refusals that are worth trying again soon.
RETRY_SOON = {b"Retry-After": b"5"}


class Refusal(Exception):
    """
    A request turned down.

    :param code: the response's status.
    :param message: one line for the response body.
    :param headers: extra response headers (``Retry-After``,
        ``Content-Range``, ``Allow``...).
    :param state: the resource's state the refusal was decided on; if
        ``None``, the response looks it up (for a named resource).
    :param reveal: whether the response says the resource's state at all;
        refusals that are about the server rather than the resource (access
        denied, shutting down, Redis unreachable) do not.
    """

    def __init__(
        self,
        code: int,
        message: str,
        headers: dict[bytes, bytes] | None = None,
        state: ResourceState | None = None,
        *,
        reveal: bool = True,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.state = state
        self.reveal = reveal

    def __repr__(self) -> str:
        return f"Refusal({self.code}, {self.message!r})"


async def refusing(work: Awaitable[_T], counters: Counters) -> _T:
    """
    ``work``'s result, with what turns a request down for reasons of the
    server rather than of the resource made a `Refusal`.
    """
    try:
        return await work
    except Unavailable as e:
        # Shared mode: Redis cannot be reached; nothing was decided.
        retry = {b"Retry-After": b"%d" % e.retry_after}
        raise Refusal(503, f"try again later: {e}", retry, reveal=False) from None
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            raise Refusal(
                503, "the server is out of file descriptors", RETRY_SOON
            ) from None
        if out_of_space(e):
            # Making a resource's folders or its completion marker.
            counters.no_space += 1
            _log.error("no space left on the storage: {why}", why=e)
            raise Refusal(507, f"no space left on the server: {e.strerror}") from None
        raise
