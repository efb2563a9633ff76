"""
`Retention`: with ``--max-age``, the periodic removal of resources nobody
appends to whose bytes have not changed for that long.  Removal goes
through the registry's `delete`, so a resource an appender holds (or takes
meanwhile) is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .names import Name
from .records import Counters
from .refusal import Refusal
from .store import IStore

__all__ = ["Retention"]

_log = Logger()


class Retention:
    """
    :param store: where to find the resources unchanged since a time.
    :param delete: removes one, or fails with `Refusal` (held, or gone).
    :param counters: counts each removal (``swept``).
    :param max_age: seconds a resource may stay unchanged.
    :param interval: seconds between sweeps.
    """

    def __init__(
        self,
        store: IStore,
        delete: Callable[[Name], Deferred[None]],
        counters: Counters,
        clock: IReactorTime,
        max_age: float,
        interval: float,
    ) -> None:
        self._store = store
        self._delete = delete
        self._counters = counters
        self._clock = clock
        self.max_age = max_age
        self._loop = LoopingCall(self._sweep_safely)
        self._loop.clock = clock
        self._interval = interval

    def start(self) -> None:
        """Sweep now, then every interval."""
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def sweep(self) -> int:
        """
        Remove every resource with no appender whose bytes have not changed
        for `max_age` seconds; how many went.
        """
        cutoff = self._clock.seconds() - self.max_age
        removed = 0
        for name in await self._store.older_than(cutoff):
            try:
                await self._delete(name)
            except Refusal as refusal:
                if refusal.code == 503:
                    # Redis or the archive's bucket unreachable, or
                    # stopping: the next sweep goes on.
                    _log.warn(
                        "sweeping stopped at {name}: {why}",
                        name="/".join(name),
                        why=refusal.message,
                    )
                    return removed
                if refusal.code not in (404, 409):
                    raise
                continue  # appended to, or gone, meanwhile
            removed += 1
            self._counters.swept += 1
            _log.info(
                "removed {name}: unchanged for over {max_age:.0f}s",
                name="/".join(name),
                max_age=self.max_age,
            )
        return removed

    async def _sweep_safely(self) -> None:
        # A LoopingCall stops for good on its first error: never let one out.
        try:
            await self.sweep()
        except Exception:
            _log.failure(
                "sweeping resources older than {max_age}s", max_age=self.max_age
            )
