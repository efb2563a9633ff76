"""
`LiveFile`: a resource file as the stateless mode's store hands it to the
stream.  Reading is the local copy's (`replica`); appending goes to Redis
first, in the step that checks the appender's lease (`LiveRedis.append`),
and only then to the local copy, so no byte is persisted, acknowledged or
seen by a follower anywhere before the deployment holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ...core.coordination import Unavailable
from ...core.names import Name
from ...core.store import IStoreFile
from ...core.writes import Fence, Fenced, StorageUnavailable
from ..archive.cache import Cache
from ..archive.opened import CachedFile
from ..lease import Lease
from .live import LiveFull, LiveRedis

__all__ = ["LiveFile"]

#: Seconds an append waits for room in Redis before the session ends
#: (1013: try again later).
FULL_WAIT = 30.0

_log = Logger()


class LiveFile(CachedFile):
    """
    :param live: the live bytes in Redis.
    :param gen: the resource's generation.
    :param lease_of: this server's lease of a path, if it holds one.
    :param appended: told the resource's size after each append.
    :param reactor: an ``IReactorTime``.
    """

    def __init__(
        self,
        cache: Cache,
        name: Name,
        file: IStoreFile,
        closed: Callable[[object, Name, CachedFile], object],
        live: LiveRedis,
        gen: str,
        lease_of: Callable[[str], Lease | None],
        appended: Callable[[Name, int], None],
        reactor: Any,
    ) -> None:
        super().__init__(cache, name, file, closed)
        self._reactor = reactor
        self.gen = gen
        self._live = live
        self._path = "/".join(name)
        self._lease_of = lease_of
        self._appended = appended
        #: The size the deployment holds, as this file knows it.
        self.shared = file.size

    async def _append(self, lease: Lease, data: bytes) -> int:
        """
        Append to Redis; while Redis holds ``--live-max`` of it, wait for
        the bucket to take chunks (the appender is held back meanwhile, as
        by a slow disk), for up to `FULL_WAIT` seconds.
        """
        waited = 0.0
        while True:
            try:
                return await self._live.append(
                    self._path, lease.value, lease.token, self.shared, data, self.gen
                )
            except LiveFull as e:
                if waited >= FULL_WAIT:
                    raise StorageUnavailable(str(e)) from None
            await deferLater(self._reactor, 0.1, lambda: None)
            waited += 0.1

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        # The fence here is Redis's, in the same step as the append: the
        # copy's write needs none.
        return Deferred.fromCoroutine(self._write(data, sync))

    async def _write(self, data: bytes, sync: bool) -> None:
        lease = self._lease_of(self._path)
        if lease is None or not lease.valid():
            raise Fenced("the appender's lease was lost")
        try:
            size = await self._append(lease, data)
        except Unavailable as e:
            _log.error(
                "appending to {path} stopped at {size} bytes: {why}",
                path=self._path,
                size=self.shared,
                why=e,
            )
            raise StorageUnavailable(str(e)) from None
        self.shared = size
        await super().write(data, sync)
        self._appended(self._name, size)
