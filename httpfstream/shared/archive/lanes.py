"""
`Lanes`: the archive's work on one resource one piece at a time, in the
order asked, while work on other resources runs beside it: a download
filling the cache, an upload attempt, an eviction, a DELETE.  So an
eviction never removes a file that a fill just put there, a DELETE never
races an upload that would bring the object back, and two readers of a
resource that is only in the bucket download it once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredLock

from ...core.names import Name

__all__ = ["Lanes"]

_T = TypeVar("_T")


class Lanes:
    def __init__(self) -> None:
        self._locks: dict[Name, DeferredLock] = {}
        self._users: Counter[Name] = Counter()

    def busy(self, name: Name) -> bool:
        """Whether work on ``name`` runs or waits now."""
        return name in self._locks

    def run(
        self, name: Name, work: Callable[[], Coroutine[Any, Any, _T]]
    ) -> Deferred[_T]:
        """
        ``work()`` once the work asked before on ``name`` has ended; its
        result.  Cancelling the Deferred cancels the work (or its wait).
        """
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = DeferredLock()
        self._users[name] += 1
        d: Deferred[_T] = lock.run(lambda: Deferred.fromCoroutine(work()))

        def done(result: object) -> object:
            self._users[name] -= 1
            if not self._users[name]:
                del self._users[name]
                del self._locks[name]
            return result

        d.addBoth(done)
        return d
