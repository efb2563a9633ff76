"""
Chunk objects that no live state in Redis points at any more (the
stateless mode), and what becomes of them.

Two things leave them: a crash between `LiveRedis.finish` and the
deletion of the chunks (the object holds their bytes: they are deleted),
and Redis losing its data (a restart without persistence) while a
session ran: then the chunks hold bytes that are nowhere else, and they
are *adopted*: the resource's object is rebuilt as the old object (if
any) followed by the chunks that continue it, uploaded as incomplete
with their generation, and the chunks deleted.  So a Redis loss costs
only the bytes that were still in Redis.

It happens in two places: before a session begins on a resource that has
no live state (`Orphans.adopt_before_session`: one LIST of that name's
chunks), so an appender resuming after the loss finds every byte the
bucket had; and in a sweep over every chunk object (`Orphans.sweep`,
every `SWEEP` seconds on each server, and at start-up), for resources
nobody resumes.  Each adoption takes the resource's archiving lock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twisted.logger import Logger

from ...core.names import STATE_FOLDER, Name
from ..archive.bucket import Archived, Bucket, reading, s3_time
from ..archive.local import Record
from .copies import Copies, Truth
from .live import LOCK, LiveRedis
from .replica import chunk_prefix

__all__ = ["Orphans"]

_log = Logger()

#: Seconds between two sweeps of the chunk objects.
SWEEP = 300.0
#: A chunk object younger than this may belong to a move under way.
_YOUNG = 60.0
_CHUNK = re.compile(r"^(?P<last>.+)\.(?P<gen>[0-9a-f]{16})\.(?P<offset>\d+)$")


@dataclass(frozen=True)
class _Chunk:
    name: Name
    gen: str
    offset: int
    size: int
    key: str


class Orphans:
    def __init__(
        self,
        live: LiveRedis,
        copies: Copies,
        bucket: Callable[[], Awaitable[Bucket]],
    ) -> None:
        self._live = live
        self._copies = copies
        self._bucket = bucket
        self.adopted = 0

    def _folder(self, bucket: Bucket) -> str:
        return bucket.archive.key((STATE_FOLDER, "live")) + "/"

    def _parse(self, bucket: Bucket, key: str, size: int) -> _Chunk | None:
        rest = key[len(self._folder(bucket)) :].split("/")
        found = _CHUNK.match(rest[-1])
        if found is None:
            return None
        name = (*rest[:-1], found["last"])
        return _Chunk(name, found["gen"], int(found["offset"]), size, key)

    async def _chunks_of(self, bucket: Bucket, name: Name) -> list[_Chunk]:
        prefix = chunk_prefix(bucket, name)
        found = []
        for info in await reading(bucket.client.list(prefix)):
            chunk = self._parse(bucket, info.key, info.size)
            if chunk is not None and chunk.name == name:
                found.append(chunk)
        return found

    async def adopt(self, name: Name, truth: Truth) -> bool:
        """
        Adopt the orphaned chunks of ``name`` (which has no live state),
        if any, before a session begins on it or a 404 says it does not
        exist; whether the truth changed.
        """
        bucket = await self._bucket()
        chunks = await self._chunks_of(bucket, name)
        if not chunks:
            return False
        return await self._settle(bucket, name, chunks, truth.archived)

    async def contribute(self, name: Name, truth: Truth) -> Truth:
        """
        The copy of ``name`` open here knows more than the deployment
        (Redis lost the resource's live data, and the bucket has less):
        its bytes, every one persisted once, become the object,
        incomplete.  Of several servers holding copies, each uploads only
        if its copy is longer than the object then, so the longest stays.
        """
        path = "/".join(name)
        gen = await self._copies.gen(name)
        have = await self._copies.size(name)
        if truth.state is not None or have <= truth.size or gen is None:
            return truth
        if truth.archived is not None and truth.archived.gen != gen:
            return truth
        if not await self._live.lock(path, LOCK):
            return truth
        try:
            bucket = await self._bucket()
            archived = await reading(bucket.head(name))
            if await self._live.state(path) is not None or (
                archived is not None and (archived.gen != gen or archived.size >= have)
            ):
                return await self._copies.truth(name)
            archived = await bucket.upload(
                name, self._copies.path(name), Record(have, False), time.time(), gen
            )
            await self._live.announce(path, have, "rebuilt after Redis lost it")
        finally:
            await self._live.unlock(path)
        self.adopted += 1
        _log.warn(
            "{name}: Redis had lost its live data; this server's copy of"
            " {size} bytes is its object now, incomplete",
            name=path,
            size=have,
        )
        return Truth(None, archived)

    async def sweep(self) -> None:
        """Settle every orphaned chunk object old enough not to be moving."""
        bucket = await self._bucket()
        groups: dict[Name, list[_Chunk]] = {}
        young = time.time() - _YOUNG
        for info in await reading(bucket.client.list(self._folder(bucket))):
            chunk = self._parse(bucket, info.key, info.size)
            if chunk is not None:
                groups.setdefault(chunk.name, []).append(chunk)
                if s3_time(info.last_modified) > young:
                    groups[chunk.name] = []  # a move may be under way: later
        for name, chunks in groups.items():
            if not chunks or await self._live.state("/".join(name)) is not None:
                continue
            archived = await reading(bucket.head(name))
            await self._settle(bucket, name, chunks, archived)

    async def _settle(
        self,
        bucket: Bucket,
        name: Name,
        chunks: list[_Chunk],
        archived: Archived | None,
    ) -> bool:
        path = "/".join(name)
        if not await self._live.lock(path, LOCK):
            return False
        try:
            if await self._live.state(path) is not None:
                return False  # live again: its chunks are its own
            have = archived.size if archived is not None else 0
            # Of each generation, the chunks that continue the object from
            # its end without a gap; the longest run is adopted.  Every
            # other chunk can never continue it: left over, deleted.
            usable: list[_Chunk] = []
            for gen in {c.gen for c in chunks}:
                if archived is not None and archived.gen not in ("", gen):
                    continue  # another resource's, since deleted
                run: list[_Chunk] = []
                for chunk in sorted(chunks, key=lambda c: c.offset):
                    if chunk.gen == gen and chunk.offset == have + sum(
                        c.size for c in run
                    ):
                        run.append(chunk)
                if sum(c.size for c in run) > sum(c.size for c in usable):
                    usable = run
            if usable:
                await self._adopt(bucket, name, archived, usable)
            for chunk in chunks:
                await reading(bucket.client.delete(chunk.key))
            return bool(usable)
        finally:
            await self._live.unlock(path)

    async def _adopt(
        self,
        bucket: Bucket,
        name: Name,
        archived: Archived | None,
        chunks: list[_Chunk],
    ) -> None:
        """The object rebuilt as itself followed by ``chunks``, incomplete."""
        await self._copies.bring(name, Truth(None, archived))
        size = await self._copies.append_objects(
            name, [(c.key, c.size) for c in chunks]
        )
        local = self._copies.path(name)
        await bucket.upload(
            name, local, Record(size, False), time.time(), chunks[0].gen
        )
        await self._live.announce("/".join(name), size, "rebuilt after Redis lost it")
        self.adopted += 1
        _log.warn(
            "{name}: Redis had lost its live data; rebuilt from the bucket as"
            " {size} bytes, incomplete (what Redis alone held is lost)",
            name="/".join(name),
            size=size,
        )
