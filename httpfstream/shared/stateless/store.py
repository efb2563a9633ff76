"""
`StatelessStore`: storage of the stateless mode (``--redis`` with
``--archive``): live bytes in Redis, finished resources in the bucket, and
a server's root only a cache of copies, so any server serves anything and
none holds what another needs.  An `IArchivingStore`, so the registry,
the streams and the web layer are those of every other mode, reading a
local file as ever:

- **open**: the resource's truth first (its live state in Redis, else
  its object's HEAD), ``offset=`` checked against it, then the local copy
  brought up to it (`replica.copy`; a copy of another generation dropped)
  and opened.  A new resource, or an archived one resumed, is made live in
  Redis at once (an empty append under the new session's lease), so every
  server sees it from then on.
- **append**: `files.LiveFile`, Redis first (fenced), then the copy;
  full chunks move to the bucket as the session runs (`mover.ChunkMover`).
- **growth elsewhere**: the feed calls `pull` before it tells the stream,
  so the stream reads its copy as if the bytes had been written here.
- **archiving**: when a session ends well, at once; a lost one after
  ``--archive-idle``, by any server (`_sweep` finds live resources nobody
  appended to for that long).  One server at a time (`LiveRedis.lock`):
  the copy completed, uploaded as ``PREFIX/NAME`` with its completion and
  generation, its times beside it, then the live data dropped
  (`LiveRedis.finish`, unless a session resumed meanwhile) and the chunk
  objects deleted.
- **listing, DELETE, --max-age**: the bucket's and Redis's together.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ...core.coordination import Unavailable
from ...core.derived import derived_paths
from ...core.names import Name
from ...core.scan import Entry, Listing
from ...core.store import (
    FileStore,
    IArchivingStore,
    IStoreFile,
    NotFound,
    SizeMismatch,
    Stored,
)
from ..archive.bucket import BucketLink, reading
from ..archive.cache import Cache
from ..archive.lanes import Lanes
from ..archive.local import Record, remove_files, scan
from ..archive.opened import CachedFile
from ..archive.uploads import Uploads
from ..lease import Lease
from ..s3 import ArchiveURL, S3Client
from .copies import TRIES, Copies, Truth
from .files import LiveFile
from .live import LOCK, LiveRedis, LiveState, new_generation
from .mover import ChunkMover
from .orphans import SWEEP, Orphans
from .replica import Gone, chunk_key, read_gen, remove_gen

__all__ = ["StatelessStore"]

_log = Logger()
_T = TypeVar("_T")


def _shown(name: Name) -> str:
    return "/".join(name)


def _name_of(path: str) -> Name:
    return tuple(path.split("/"))


@implementer(IArchivingStore)
class StatelessStore:
    """
    :param local: the root's files (started and stopped by this).
    :param archive: the bucket and prefix.
    :param connect: makes the S3 client.
    :param live: the live bytes in Redis.
    :param lease_of: this server's lease of a path, if it holds one.
    :param released: fires once this server's lease of a path has gone
        from Redis (`LeaseSlots.released`).
    :param cache_size: the most bytes of copies kept on local disk, those
        not open (0: no limit).
    :param idle: seconds after a lost session's last append before its
        resource is archived (incomplete).
    """

    def __init__(
        self,
        local: FileStore,
        archive: ArchiveURL,
        connect: Callable[[], Deferred[S3Client]],
        live: LiveRedis,
        lease_of: Callable[[str], Lease | None],
        released: Callable[[str], Deferred[None]],
        *,
        reactor: Any,
        cache_size: int = 0,
        idle: float = 60.0,
        sync: bool = True,
        retry_max: float = 10.0,
        drain: float = 10.0,
        threads: int = 2,
    ) -> None:
        self.root = local.root
        self.archive = archive
        self.live = live
        self.cache = Cache(cache_size)
        self.uploaded = 0
        self._local = local
        self._root = local.root.path
        self._lease_of = lease_of
        self._released = released
        self._reactor = reactor
        self._idle = idle
        self._sync = sync
        self._drain = drain
        self._pool = ThreadPool(
            minthreads=0, maxthreads=threads, name="httpfstream-stateless"
        )
        self._lanes = Lanes()
        self._uploads = Uploads(reactor, self._archive, retry_max)
        self._link = BucketLink(archive, connect, self._uploads.answered, lambda: None)
        self.mover = ChunkMover(live, self._link.bucket, self._path, reactor)
        self.copies = Copies(live, local, self._link.bucket, self._run)
        self.orphans = Orphans(live, self.copies, self._link.bucket)
        self._janitor = LoopingCall(self._sweep_orphans)
        self._janitor.clock = reactor
        self._sessions: Counter[Name] = Counter()
        self._open_files: dict[Name, set[CachedFile]] = {}
        self._ended_at: dict[Name, float] = {}
        self._sweeper = LoopingCall(self._sweep)
        self._sweeper.clock = reactor

    def _run(self, f: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def _path(self, name: Name) -> str:
        return os.path.join(self._root, *name)

    # -- IStore ---------------------------------------------------------------

    def start(self) -> None:
        self._local.start()
        self._pool.start()
        self._link.start()
        self._sweeper.start(max(0.5, min(self._idle / 2, 10.0)), now=False)
        self._janitor.start(SWEEP, now=True)
        d = Deferred.fromCoroutine(self._recover())
        d.addErrback(lambda f: _log.failure("reading the copies on local disk", f))

    async def _recover(self) -> None:
        """Copies left on local disk count in the budget (each is only a copy)."""
        for name, found in await self._run(scan, self._root):
            if name not in self.cache and not found.linked:
                self.cache.add(name, found.size, safe=True)
        _log.info(
            "stateless: {count} copies on local disk ({used} bytes; cache budget"
            " {budget})",
            count=len(self.cache),
            used=self.cache.used,
            budget=self.cache.budget or "unlimited",
        )
        self._trim()

    def stop(self) -> Deferred[None]:
        """Archive what is due (for up to ``drain`` seconds), then stop."""
        for loop in (self._sweeper, self._janitor):
            if loop.running:
                loop.stop()
        d = self._uploads.drain(self._drain) if self._uploads.pending else succeed(None)
        d.addBoth(self._stopped)
        return d

    def _stopped(self, _: object) -> None:
        self._uploads.stop()
        bucket = self._link.close()
        if bucket is not None:
            _log.info(
                "archive {url}: {requests}; {uploaded} uploads, {moved} chunks"
                " moved from Redis, {adopted} resources rebuilt after Redis lost"
                " them",
                url=str(self.archive),
                requests=bucket.summary(),
                uploaded=self.uploaded,
                moved=self.mover.moved,
                adopted=self.orphans.adopted,
            )
        self._pool.stop()
        self._local.stop()

    def open(
        self, name: Name, create: bool, expected_size: int | None
    ) -> Deferred[IStoreFile]:
        return self._lanes.run(name, lambda: self._open(name, create, expected_size))

    def stat(self, name: Name) -> Deferred[Stored | None]:
        return Deferred.fromCoroutine(self._stat(name))

    def settled(self, name: Name) -> Deferred[Stored | None]:
        """
        `stat` for the feed: the size and completion a stream open here
        takes when the feed may have missed growth; a copy here longer
        than the truth (Redis lost the resource) becomes its object first.
        """

        async def settle() -> Stored | None:
            truth = await self.copies.truth(name)
            if truth.state is None and name in self._open_files:
                truth = await self.orphans.contribute(name, truth)
            return Stored(truth.size, truth.complete) if truth.exists else None

        return self._lanes.run(name, settle)

    def listing(self, folder: Name) -> Deferred[Listing | None]:
        return Deferred.fromCoroutine(self._listing(folder))

    def remove(self, name: Name) -> Deferred[bool]:
        return self._lanes.run(name, lambda: self._remove(name))

    def older_than(self, seconds_since_epoch: float) -> Deferred[list[Name]]:
        return Deferred.fromCoroutine(self._older_than(seconds_since_epoch))

    # -- IArchivingStore --------------------------------------------------------

    def began(self, name: Name) -> None:
        self._sessions[name] += 1
        self._uploads.cancel(name)
        self.mover.began(name)

    def ended(self, name: Name, size: int, complete: bool) -> None:
        self._sessions[name] -= 1
        if self._sessions[name] > 0:
            return
        del self._sessions[name]
        self.mover.ended(name)
        self._ended_at[name] = time.time()
        delay = 0.0 if complete else self._idle
        # Archived once our lease has gone from Redis: until then it looks
        # held, and is left to its holder.
        self._released(_shown(name)).addBoth(
            lambda _: self._uploads.schedule(name, delay)
        )

    async def _open(
        self, name: Name, create: bool, expected_size: int | None
    ) -> IStoreFile:
        for attempt in range(TRIES):
            truth = await self.copies.truth(name)
            # A session begins, or a 404: first the bytes Redis lost track of.
            adopting = truth.state is None and (create or not truth.exists)
            if adopting and await self.orphans.adopt(name, truth):
                truth = await self.copies.truth(name)
            if not truth.exists and not create:
                raise NotFound(_shown(name))
            if expected_size is not None and truth.size != expected_size:
                raise SizeMismatch(truth.size if truth.exists else None, truth.complete)
            try:
                await self.copies.bring(name, truth)
            except Gone:
                if attempt == TRIES - 1:
                    raise Unavailable(
                        "the resource kept moving while it was read; try again"
                    ) from None
                continue
            break
        file = await self._local.open(name, create, None)
        gen = await self._run(read_gen, self._root, name) or new_generation()
        if truth.state is None and create:
            # A session begins: live at once, under its lease.
            path = _shown(name)
            lease = self._lease_of(path)
            if lease is not None:
                try:
                    await self.live.append(
                        path, lease.value, lease.token, file.size, b"", gen
                    )
                except BaseException:
                    await file.close()
                    raise
        return self._cached(name, file, gen)

    def _cached(self, name: Name, file: IStoreFile, gen: str) -> IStoreFile:
        self.cache.pin(name)
        if name in self.cache:
            self.cache.touch(name)
        else:
            self.cache.add(name, file.size, safe=True)
        live = LiveFile(
            self.cache,
            name,
            file,
            self._closed,
            self.live,
            gen,
            self._lease_of,
            self.mover.appended,
            self._reactor,
        )
        self._open_files.setdefault(name, set()).add(live)
        return live

    def _closed(self, result: object, name: Name, cached: CachedFile) -> object:
        self.cache.unpin(name)
        # Appends made it pending in the cache's eyes; here every copy is
        # only a copy (its bytes are in Redis or the bucket): evictable.
        size = self.cache.size(name)
        if size is not None:
            self.cache.archived(name, size)
        files = self._open_files.get(name)
        if files is not None:
            files.discard(cached)
            if not files:
                del self._open_files[name]
        self._trim()
        return result

    def _trim(self) -> None:
        """Evict copies past the budget: any not open (each is only a copy)."""
        for name in self.cache.victims():
            if self._lanes.busy(name) or self.cache.pinned(name):
                continue
            self.cache.drop(name)
            d = self._lanes.run(name, partial(self._evict, name))
            d.addErrback(lambda f: _log.failure("evicting a copy", f))

    async def _evict(self, name: Name) -> None:
        if self.cache.pinned(name) or name in self._open_files:
            return
        await self._run(remove_files, self._root, name)
        await self._run(remove_gen, self._root, name)

    # -- growth elsewhere ------------------------------------------------------------

    def pull(self, name: Name, size: int) -> Deferred[None]:
        """
        Bring the local copy of ``name`` (open here) up to ``size`` bytes
        before its stream is told: the feed's step before `grown`/`ended`.
        """
        return self._lanes.run(name, lambda: self._pull(name, size))

    async def _pull(self, name: Name, size: int) -> None:
        added = await self.copies.pull(name, size)
        if added:
            self.cache.grew(name, added)
            for file in self._open_files.get(name, ()):
                if isinstance(file, LiveFile):
                    file.shared = max(file.shared, size)

    # -- archiving -------------------------------------------------------------------

    def _sweep(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._find_idle())
        d.addErrback(
            lambda f: _log.info(
                "archive: idle resources not checked ({why})", why=f.getErrorMessage()
            )
        )
        return d

    def _sweep_orphans(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self.orphans.sweep())
        d.addErrback(
            lambda f: _log.info(
                "stateless: chunk objects not checked ({why})", why=f.getErrorMessage()
            )
        )
        return d

    async def _find_idle(self) -> None:
        """Schedule every live resource nobody appended to for ``idle`` s."""
        before = int((time.time() - self._idle) * 1000)
        for path in await self.live.idle(before):
            name = _name_of(path)
            if not self._sessions[name] and not self._uploads.scheduled(name):
                self._uploads.schedule(name, 0.0)

    async def _archive(self, name: Name) -> None:
        await self._lanes.run(name, lambda: self._upload(name))

    async def _upload(self, name: Name) -> None:
        """Archive ``name`` if it is live and nobody appends to it."""
        if self._sessions[name]:
            return  # its end schedules it again
        path = _shown(name)
        state = await self.live.state(path)
        if state is None or state.held:
            return
        if not await self.live.lock(path, LOCK):
            return  # another server archives it
        try:
            await self._upload_locked(name, state)
        finally:
            await self.live.unlock(path)

    async def _upload_locked(self, name: Name, state: LiveState) -> None:
        path = _shown(name)
        started = time.time()
        await self.copies.bring(name, Truth(state, None))
        bucket = await self._link.bucket()
        for file in list(self._open_files.get(name, ())):
            await file.flush_derived()
        local = self._path(name)
        modified = (await self._run(os.stat, local)).st_mtime
        record = Record(state.size, state.complete)
        await bucket.upload(name, local, record, modified, state.gen)
        await bucket.upload_derived(name, derived_paths(self._root, name), state.size)
        dropped = await self.live.finish(path, state.size)
        if dropped is not None:
            start, base = dropped
            for offset in range(start, base, self.live.chunk):
                await reading(
                    bucket.client.delete(chunk_key(bucket, name, state.gen, offset))
                )
        self.uploaded += 1
        ended = self._ended_at.pop(name, None)
        now = time.time()
        _log.info(
            "archived {name}: {size} bytes, {state}, in {took:.3f}s ({since})",
            name=path,
            size=state.size,
            state="complete" if state.complete else "incomplete",
            took=now - started,
            since="found idle"
            if ended is None
            else f"{now - ended:.3f}s after its session ended",
        )
        self._trim()

    # -- the rest of IStore -----------------------------------------------------

    async def _stat(self, name: Name) -> Stored | None:
        truth = await self.copies.truth(name)
        return Stored(truth.size, truth.complete) if truth.exists else None

    async def _live_entries(self, folder: Name) -> list[Entry]:
        entries = []
        for path, appended in await self.live.paths():
            name = _name_of(path)
            if name[:-1] != folder:
                continue
            state = await self.live.state(path)
            if state is not None:
                entries.append(Entry(name[-1], state.size, state.complete, appended))
        return entries

    async def _listing(self, folder: Name) -> Listing | None:
        live = await self._live_entries(folder)
        bucket = await self._link.bucket()
        local = Listing(sorted(live, key=lambda e: e.name), []) if live else None
        return await reading(bucket.listing(folder, local))

    async def _remove(self, name: Name) -> bool:
        """DELETE and --max-age: live data, then object, then the copy."""
        path = _shown(name)
        bucket = await self._link.bucket()
        truth = await self.copies.truth(name)
        state = truth.state
        if not truth.exists:
            await self._run(remove_files, self._root, name)
            return False
        if state is not None:
            dropped = await self.live.finish(path, -1)
            if dropped is None:
                return False  # held again meanwhile
            start, base = dropped
            for offset in range(start, base, self.live.chunk):
                await reading(
                    bucket.client.delete(chunk_key(bucket, name, state.gen, offset))
                )
        await reading(bucket.delete(name))
        self._uploads.cancel(name)
        await self._run(remove_files, self._root, name)
        await self._run(remove_gen, self._root, name)
        self.cache.drop(name)
        return True

    async def _older_than(self, cutoff: float) -> list[Name]:
        bucket = await self._link.bucket()
        found = await bucket.older_than(cutoff)
        for path in await self.live.idle(int(cutoff * 1000)):
            state = await self.live.state(path)
            if state is not None and not state.held:
                found.append(_name_of(path))
        return found
