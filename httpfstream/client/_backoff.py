"""
Retrying with backoff: which errors are worth another try, and how long to
wait before it.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..protocol import GOING_AWAY, LEASE_LOST
from ._errors import DROPPED, ConnectionLost, HTTPError, WrongTransport

_log = Logger()

#: Close codes that mean "try again later" to a resuming client: the server
#: stopping, a dropped connection, and (shared mode) an appender's lease
#: lost while Redis was out of reach.
RESUMABLE = frozenset({GOING_AWAY, DROPPED, LEASE_LOST})
#: Statuses that mean the same from a proxy or an overloaded server.
_RETRY_STATUSES = frozenset({502, 503, 504})


def retryable(error: BaseException) -> bool:
    """
    Whether ``error`` may go away if the call is tried again: a dropped
    connection or a server restart, 502-504, or a failure to connect; not
    a mistake of scheme or trust (`WrongTransport`).
    """
    if isinstance(error, WrongTransport):
        return False
    if isinstance(error, ConnectionLost):
        return error.code in RESUMABLE
    if isinstance(error, HTTPError):
        return error.status in _RETRY_STATUSES
    return isinstance(error, net_error.ConnectError | net_error.ConnectionLost)


class Backoff:
    """
    Exponential backoff with jitter, within an overall deadline.

    :param reactor: an ``IReactorTime``.
    :param give_up_after: seconds since the last `reset` after which
        `wait` raises the error instead of waiting.
    """

    def __init__(self, reactor: Any, give_up_after: float) -> None:
        self._reactor = reactor
        self._give_up_after = give_up_after
        self.reset()

    def reset(self) -> None:
        """Start again from the shortest delay and a new deadline."""
        self._delay = 0.25
        self._since = self._reactor.seconds()

    async def wait(self, error: BaseException) -> None:
        """
        Wait before the next try.

        :param error: what went wrong; raised if the deadline has passed.
            The wait never ends past the deadline, so the last try is made
            at it.
        """
        left = self._since + self._give_up_after - self._reactor.seconds()
        if left <= 0:
            raise error
        # Never past the deadline: the last try comes at it.
        delay = min(self._delay * (0.5 + random.random()), left)
        self._delay = min(self._delay * 2, 5.0)
        _log.info(
            "retrying in {delay:.1f}s ({left:.0f}s left) after: {error}",
            delay=delay,
            left=left,
            error=error,
        )
        await deferLater(self._reactor, delay, lambda: None)
