"""
One appender's lease, as a state machine.

::

    HELD ──release──▶ RELEASING ──end──▶ RELEASED
      │                  ▲
      └──lose──▶ LOST ───┘ release

- **HELD**: renewed every quarter lease; `Lease.valid` while the last
  successful renewal (or the claim) was sent less than three quarters of a
  lease ago.  When that runs out, or Redis refuses a renewal (or growth),
  the lease is lost.
- **LOST**: never valid again; the session is told (`ISlot.when_lost`) and
  must end, which releases the lease.
- **RELEASING**: given back by its session, whose end (final size, close
  code, reason) comes in the same turn (`Lease.end`) and goes to Redis with
  the release, in one script; a release with no session (a claim given
  back) ends alone on the reactor's next turn.
- **RELEASED**: its end handed to the owner.

The transitions are the table `_NEXT`, taken in `Lease._move` only; the
owner learns of them through the callables it gives at construction.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from ..core.coordination import ISlot, Unavailable
from ..protocol import APPENDER_LOST

__all__ = ["Lease", "LeaseState"]

_log = Logger()


class LeaseState(enum.Enum):
    """Where a `Lease` is in its life (see the module docstring)."""

    HELD = "held"
    LOST = "lost"
    RELEASING = "releasing"
    RELEASED = "released"


#: (state, event) -> the next state; an event not listed changes nothing.
_NEXT: dict[tuple[LeaseState, str], LeaseState] = {
    (LeaseState.HELD, "lose"): LeaseState.LOST,
    (LeaseState.HELD, "release"): LeaseState.RELEASING,
    (LeaseState.LOST, "release"): LeaseState.RELEASING,
    (LeaseState.RELEASING, "end"): LeaseState.RELEASED,
}


@implementer(ISlot)
class Lease:
    """
    One held lease of the resource ``path``.

    :param token: its fencing token.
    :param value: the lease key's value while it is ours (``TOKEN SERVER``).
    :param length: seconds the lease lives unrenewed.
    :param sent: when the claim that took it was sent (reactor seconds).
    :param reactor: an ``IReactorTime``.
    :param renew: renew it in Redis: fires ``True`` if renewed, ``False`` if
        the lease is not ours any more; fails with `Unavailable` if Redis
        did not answer.
    :param released: told when it is released (RELEASING).
    :param ended: told its session's end when RELEASED: ``(lease, size,
        code, reason)``, the size ``-1`` if not known.
    """

    def __init__(
        self,
        path: str,
        token: str,
        value: str,
        length: float,
        sent: float,
        reactor: Any,
        renew: Callable[[Lease], Deferred[bool]],
        released: Callable[[Lease], None],
        ended: Callable[[Lease, int, int, str], None],
    ) -> None:
        self.path = path
        self.token = token
        self.value = value
        self.state = LeaseState.HELD
        self._length = length
        self._reactor = reactor
        self._renew_in_redis = renew
        self._released = released
        self._ended = ended
        self._on_lost: Callable[[str], None] | None = None
        self._valid_until = sent + 0.75 * length
        self._deadline: IDelayedCall | None = None
        self._alone: IDelayedCall | None = None
        self._schedule()
        self._renewer = LoopingCall(lambda: Deferred.fromCoroutine(self._renew()))
        self._renewer.clock = reactor
        self._renewer.start(length / 4, now=False)

    def _move(self, event: str) -> bool:
        """Take the transition of ``event`` from the state now, if there is one."""
        to = _NEXT.get((self.state, event))
        if to is None:
            return False
        self.state = to
        self._stop_renewing()  # every transition leaves HELD, or has left it
        return True

    # -- ISlot -------------------------------------------------------------------

    def valid(self) -> bool:
        # Also called in the store's writing thread, right before each
        # write (`writes.write_fenced`), while the reactor may be renewing
        # or losing the lease.  That is safe without a lock: it only reads
        # the state (one reference), `_valid_until` (a float the reactor
        # replaces whole, and only moves later once Redis confirmed a
        # renewal) and the clock (`reactor.seconds` is `time.time` in every
        # reactor Twisted ships), each read atomic; a thread reading just
        # before the reactor moves to LOST writes as a reactor-side check
        # made then would have.
        return (
            self.state is LeaseState.HELD
            and self._reactor.seconds() < self._valid_until
        )

    def when_lost(self, lost: Callable[[str], None]) -> None:
        self._on_lost = lost

    def release(self) -> None:
        if not self._move("release"):
            return
        self._released(self)
        self._alone = self._reactor.callLater(
            0, self.end, -1, APPENDER_LOST, "the claim was given back"
        )

    # -- the rest of its life --------------------------------------------------------

    def lose(self, why: str) -> None:
        """It may not be written under any more: tell the session."""
        if not self._move("lose"):
            return
        _log.warn("{path}: {why}; ending its session", path=self.path, why=why)
        if self._on_lost is not None:
            self._on_lost(why)

    def end(self, size: int, code: int, reason: str) -> None:
        """
        The end of its session (``size`` ``-1`` if not known), told once
        it is released; once only.
        """
        if not self._move("end"):
            return
        if self._alone is not None and self._alone.active():
            self._alone.cancel()
        self._ended(self, size, code, reason)

    # -- renewing ----------------------------------------------------------------

    def _schedule(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        left = max(0.0, self._valid_until - self._reactor.seconds())
        self._deadline = self._reactor.callLater(
            left,
            self.lose,
            "Redis unreachable: the appender's lease could not be renewed",
        )

    async def _renew(self) -> None:
        sent = self._reactor.seconds()
        try:
            ok = await self._renew_in_redis(self)
        except Unavailable:
            return  # tried again next time; the deadline stops us in time
        except Exception:
            _log.failure("renewing the lease of {path}", path=self.path)
            return  # likewise
        if self.state is not LeaseState.HELD:
            return
        if ok:
            self._valid_until = sent + 0.75 * self._length
            self._schedule()
        else:
            self.lose("the appender's lease was lost (expired, or Redis lost it)")

    def _stop_renewing(self) -> None:
        if self._renewer.running:
            self._renewer.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
