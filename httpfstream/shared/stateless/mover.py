"""
`ChunkMover`: a live resource's full chunks, from Redis to the bucket, as
its session runs, so that Redis holds at most about one chunk of each
(plus what is appended while one moves, up to ``--live-max``).

Only the server whose session appends moves chunks: it has the bytes in
its local copy, so a chunk goes up from the file (one PUT, read from
disk), then `LiveRedis.moved` drops it from Redis.  A chunk that cannot
go up now (the bucket away) is tried again at the next append, or after
`RETRY` seconds; meanwhile Redis holds more, and an append that would
take it past ``--live-max`` is refused (the appender is told storage is
full, and retries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ...core.names import Name
from ..archive.bucket import Bucket
from .live import LiveRedis
from .replica import chunk_key

__all__ = ["ChunkMover"]

_log = Logger()

#: Seconds before a chunk that could not go up is tried again.
RETRY = 1.0


class ChunkMover:
    """
    :param path_of: the local copy's path of a resource.
    """

    def __init__(
        self,
        live: LiveRedis,
        bucket: Callable[[], Awaitable[Bucket]],
        path_of: Callable[[Name], str],
        reactor: Any,
    ) -> None:
        self._live = live
        self._bucket = bucket
        self._path_of = path_of
        self._reactor = reactor
        #: Resources whose sessions append here, and their sizes.
        self._active: dict[Name, int] = {}
        self._moving: set[Name] = set()
        #: Chunks moved.
        self.moved = 0

    def began(self, name: Name) -> None:
        """A session on ``name`` appends here: its full chunks move."""
        self._active.setdefault(name, 0)

    def ended(self, name: Name) -> None:
        """It does not any more (what is left is archived with the rest)."""
        self._active.pop(name, None)

    def appended(self, name: Name, size: int) -> None:
        """``name`` holds ``size`` bytes now: move what is full."""
        if name not in self._active:
            return
        self._active[name] = size
        if name not in self._moving:
            self._moving.add(name)
            d = Deferred.fromCoroutine(self._move(name))
            d.addErrback(
                lambda f: _log.failure("moving a chunk of {name}", f, name=name)
            )

    async def _move(self, name: Name) -> None:
        path = "/".join(name)
        chunk = self._live.chunk
        try:
            state = await self._live.state(path)
            while state is not None and name in self._active:
                base = state.base
                if base + chunk > self._active[name]:
                    return
                bucket = await self._bucket()
                await bucket.client.put_file(
                    chunk_key(bucket, name, state.gen, base),
                    self._path_of(name),
                    length=chunk,
                    offset=base,
                )
                if await self._live.moved(path, base):
                    self.moved += 1
                state = await self._live.state(path)
        except Exception as e:
            _log.info(
                "a chunk of {name} stays in Redis for now: {error}", name=path, error=e
            )
            self._reactor.callLater(RETRY, self._retry, name)
        finally:
            self._moving.discard(name)

    def _retry(self, name: Name) -> None:
        size = self._active.get(name)
        if size is not None:
            self.appended(name, size)
