"""
`Evictions`: keeping the cache within its budget (``--cache-size``).

`trim` asks the cache (`cache.Cache.victims`) what to evict, least
recently used first, and evicts each in its lane (`lanes.Lanes`, so no
fill or open of it runs meanwhile), only once the bucket has confirmed
with a HEAD that it holds what the local record says: nothing leaves the
disk while the bucket does not answer, and a copy the bucket lost (a
lifecycle rule, a removal by other means) is archived again instead.
While the bucket does not answer (`reachable` false) nothing is evicted,
so what is on local disk can still be read; the disk may then go past its
budget, as it does for what the bucket lacks anyway.  Evicting goes on
when the bucket answers a request again, or `PROBE_AFTER` seconds later
(its HEAD then says whether it does).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ...core.names import Name
from ..s3 import S3Error
from .bucket import BucketLink
from .cache import Cache
from .lanes import Lanes
from .local import Local, evict, local_state, read_record, remove_record

__all__ = ["Evictions"]

_log = Logger()

#: Seconds after the bucket did not answer before evicting tries again
#: (it asks the bucket first anyway), though nothing else asked it.
PROBE_AFTER = 10.0


class Evictions:
    """
    :param run: calls a blocking function in the archive's threads.
    :param found: told of a file that stays (the bucket lacks it, or it is
        pending after all): cached again, and archived.
    :ivar ready: whether the files on local disk are all known (start-up
        read them); nothing is evicted before.
    :ivar reachable: whether the bucket answered last.
    """

    def __init__(
        self,
        cache: Cache,
        lanes: Lanes,
        link: BucketLink,
        run: Callable[..., Deferred[Any]],
        root: str,
        sync: bool,
        found: Callable[[Name, Local], None],
        reactor: Any,
    ) -> None:
        self.cache = cache
        self.ready = False
        self.reachable = True
        self.evicted = 0
        self._lanes = lanes
        self._link = link
        self._run = run
        self._root = root
        self._sync = sync
        self._found = found
        self._reactor = reactor
        self._probe: IDelayedCall | None = None
        self._evicting: set[Name] = set()

    def answered(self) -> None:
        """The bucket answered: evicting goes on."""
        if not self.reachable:
            self.reachable = True
            _log.info("archive: the bucket answers again")
            self.trim()

    def unreachable(self) -> None:
        """The bucket did not answer: nothing is evicted until it does."""
        if self.reachable:
            self.reachable = False
            _log.warn(
                "archive: the bucket does not answer; nothing is evicted until it does"
            )
            self._probe = self._reactor.callLater(PROBE_AFTER, self._again)

    def _again(self) -> None:
        self._probe = None
        if not self.reachable:
            self.reachable = True
            self.trim()

    def stop(self) -> None:
        if self._probe is not None and self._probe.active():
            self._probe.cancel()

    def trim(self, room: int = 0) -> None:
        """Evict what takes the files past the budget (with ``room`` more)."""
        if not (self.ready and self.reachable):
            return
        for name in self.cache.victims(room):
            if name not in self._evicting:
                self._evicting.add(name)
                d = self._lanes.run(name, partial(self._evict, name))
                d.addErrback(self._failed, name)
                d.addBoth(self._done, name)

    @staticmethod
    def _failed(reason: Failure, name: Name) -> None:
        _log.failure("evicting {name}", reason, name="/".join(name))

    def _done(self, _: object, name: Name) -> None:
        self._evicting.discard(name)

    def _evictable(self, name: Name) -> bool:
        return self.cache.safe(name) and not self.cache.pinned(name)

    async def _evict(self, name: Name) -> None:
        if not self._evictable(name):
            return
        bucket = await self._link.bucket()
        try:
            archived = await bucket.head(name)
        except S3Error:
            return  # said, and evicting waits for the bucket to answer
        record = await self._run(read_record, self._root, name)
        if archived is None or record is None or archived.record != record:
            _log.warn(
                "{name}: the bucket lacks what was archived of it; archived again",
                name="/".join(name),
            )
            await self._run(remove_record, self._root, name, self._sync)
            self.cache.pending(name)
            state = await self._run(local_state, self._root, name)
            if state is not None:
                self._found(name, state)
            return
        if not self._evictable(name):
            return  # opened (or appended to) meanwhile
        size = self.cache.size(name)
        self.cache.drop(name)  # opens of it wait in its lane now
        left = await self._run(evict, self._root, name)
        if left is None:
            self.evicted += 1
            _log.info(
                "evicted {name} ({size} bytes) from the cache",
                name="/".join(name),
                size=size,
            )
        else:
            self._found(name, left)
