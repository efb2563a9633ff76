"""
`ArchiveStore`: one server's storage with ``--archive s3://BUCKET/PREFIX``:
finished resources in the bucket, one object each, the root a cache of
them bounded by ``--cache-size``.  An `IStore` (the registry's one door to
storage) around the plain `FileStore`, so every reader reads a local file
as before:

- **open**: a file on local disk at once (no request to the bucket); a
  resource only in the bucket downloaded first (`fill.fill`); one in
  neither created (an APPEND) or a 404; ``offset=`` checked against the
  true size wherever the bytes are; the bucket needed and not answering:
  `Unavailable` (503 with Retry-After).
- **sessions** (`began`, `ended`): archived at once if it ended well,
  after ``idle`` seconds if not (`uploads.Uploads`); `_upload` sends the
  bytes, then the line data, then writes the record that makes the file
  safe to evict (`evictions.Evictions`).
- **listing, DELETE, --max-age** act on the bucket and the disk together.
- **start-up** reads the root (`local.scan`) and schedules what the
  bucket lacks; **stop** archives what is due, for up to ``drain`` s.

docs/ARCHITECTURE.md ("Archive") has the order of every change and why
it keeps section 9 true across a crash.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ...core.coordination import Unavailable
from ...core.derived import derived_paths
from ...core.names import Name
from ...core.scan import Listing
from ...core.store import (
    FileStore,
    IArchivingStore,
    IStoreFile,
    NotFound,
    SizeMismatch,
    Stored,
)
from ..s3 import ArchiveURL, S3Client, S3Error
from .bucket import Archived, Bucket, BucketLink, reading
from .cache import Cache
from .evictions import Evictions
from .fill import fill
from .lanes import Lanes
from .local import (
    Local,
    Record,
    clear_filling,
    local_state,
    remove_files,
    remove_record,
    scan,
    write_record,
)
from .opened import CachedFile
from .uploads import Uploads

__all__ = ["ArchiveStore"]

_log = Logger()
_T = TypeVar("_T")


def _shown(name: Name) -> str:
    return "/".join(name)


@implementer(IArchivingStore)
class ArchiveStore:
    """
    :param local: the files under the root (started and stopped by this).
    :param archive: the bucket and prefix.
    :param connect: makes the S3 client (`S3Client.from_environment`),
        called at start and again if that failed.
    :param cache_size: the most bytes of resource files on local disk once
        the safe ones can be evicted (0: no limit).
    :param idle: seconds after a session that did not end well before its
        resource is archived (incomplete).
    :param sync: fsync what is downloaded and the records (``--fsync`` is
        not ``never``).
    :param retry_max: the longest wait between two tries of an upload.
    :param drain: the most seconds `stop` spends archiving what is due.
    """

    def __init__(
        self,
        local: FileStore,
        archive: ArchiveURL,
        connect: Callable[[], Deferred[S3Client]],
        *,
        reactor: Any,
        cache_size: int = 0,
        idle: float = 60.0,
        sync: bool = True,
        retry_max: float = 10.0,
        drain: float = 10.0,
        threads: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = local.root
        self.archive = archive
        self.cache = Cache(cache_size)
        self.filled = 0
        self.uploaded = 0
        self._local = local
        self._root = local.root.path
        self._reactor = reactor
        self._idle = idle
        self._sync = sync
        self._drain = drain
        self._clock = clock
        self._pool = ThreadPool(
            minthreads=0, maxthreads=threads, name="httpfstream-archive"
        )
        self._lanes = Lanes()
        self._uploads = Uploads(reactor, self._archive, retry_max)
        self._link = BucketLink(archive, connect, self._answered, self._unreachable)
        self._sessions: Counter[Name] = Counter()
        self._open_files: dict[Name, set[CachedFile]] = {}
        # Uploaded but not yet recorded (the line data failed): not again.
        self._uploaded: dict[Name, Record] = {}
        self._ended_at: dict[Name, float] = {}
        self._started = 0.0
        self._evictions = Evictions(
            self.cache,
            self._lanes,
            self._link,
            self._run,
            self._root,
            sync,
            self._found,
            reactor,
        )
        self._trim = self._evictions.trim

    def _run(self, f: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    # -- the bucket -----------------------------------------------------------

    def _answered(self) -> None:
        """The bucket answered: retries go now, and evicting goes on."""
        self._evictions.answered()
        self._uploads.answered()

    def _unreachable(self) -> None:
        self._evictions.unreachable()

    # -- IStore ---------------------------------------------------------------

    def start(self) -> None:
        self._local.start()
        self._pool.start()
        self._started = self._clock()
        self._link.start()
        d = Deferred.fromCoroutine(self._recover())
        d.addErrback(lambda f: _log.failure("reading the archive's local state", f))

    def stop(self) -> Deferred[None]:
        """
        Archive what is due (for up to ``drain`` seconds), then stop; the
        registry's stop waits for the Deferred.
        """
        due = self._uploads.pending
        if due:
            _log.info(
                "archiving {count} resources before stopping (at most {drain:g}s)",
                count=due,
                drain=self._drain,
            )
            d = self._uploads.drain(self._drain)
        else:
            d = succeed(None)
        d.addBoth(self._stopped)
        return d

    def _stopped(self, _: object) -> None:
        self._evictions.stop()
        self._uploads.stop()
        bucket = self._link.close()
        if bucket is not None:
            _log.info(
                "archive {url}: {requests}; {uploaded} uploads, {filled} fills,"
                " {evicted} evictions",
                url=str(self.archive),
                requests=bucket.summary(),
                uploaded=self.uploaded,
                filled=self.filled,
                evicted=self._evictions.evicted,
            )
        self._pool.stop()
        self._local.stop()

    def open(
        self, name: Name, create: bool, expected_size: int | None
    ) -> Deferred[IStoreFile]:
        return Deferred.fromCoroutine(self._open(name, create, expected_size))

    def stat(self, name: Name) -> Deferred[Stored | None]:
        return Deferred.fromCoroutine(self._stat(name))

    def listing(self, folder: Name) -> Deferred[Listing | None]:
        return Deferred.fromCoroutine(self._listing(folder))

    def remove(self, name: Name) -> Deferred[bool]:
        return self._lanes.run(name, lambda: self._remove(name))

    def older_than(self, seconds_since_epoch: float) -> Deferred[list[Name]]:
        return Deferred.fromCoroutine(self._older_than(seconds_since_epoch))

    # -- IArchivingStore --------------------------------------------------------

    def began(self, name: Name) -> None:
        self._sessions[name] += 1
        self.cache.pending(name)
        self._uploads.cancel(name)

    def ended(self, name: Name, size: int, complete: bool) -> None:
        self._sessions[name] -= 1
        if self._sessions[name] > 0:
            return
        del self._sessions[name]
        self._ended_at[name] = self._clock()
        self._uploads.schedule(name, 0.0 if complete else self._idle)

    # -- opening --------------------------------------------------------------

    async def _open(
        self, name: Name, create: bool, expected_size: int | None
    ) -> IStoreFile:
        if name in self.cache:
            try:
                return await self._open_local(name, create, expected_size)
            except NotFound:
                self.cache.drop(name)  # gone behind our back: look again
        return await self._lanes.run(
            name, lambda: self._open_elsewhere(name, create, expected_size)
        )

    async def _open_local(
        self, name: Name, create: bool, expected_size: int | None
    ) -> IStoreFile:
        self.cache.pin(name)
        try:
            file = await self._local.open(name, create, expected_size)
        except BaseException:
            self.cache.unpin(name)
            raise
        if name in self.cache:
            self.cache.touch(name)
        else:
            self.cache.add(name, file.size, safe=False)
        cached = CachedFile(self.cache, name, file, self._closed)
        self._open_files.setdefault(name, set()).add(cached)
        self._trim()
        return cached

    def _closed(self, result: object, name: Name, cached: CachedFile) -> object:
        self.cache.unpin(name)
        files = self._open_files.get(name)
        if files is not None:
            files.discard(cached)
            if not files:
                del self._open_files[name]
        self._trim()
        return result

    async def _open_elsewhere(
        self, name: Name, create: bool, expected_size: int | None
    ) -> IStoreFile:
        """Open a resource the cache does not know (in the lane of ``name``)."""
        if name in self.cache:  # filled while this waited
            return await self._open_local(name, create, expected_size)
        state = await self._run(local_state, self._root, name)
        if state is not None and not state.torn:
            self._found(name, state)
            return await self._open_local(name, create, expected_size)
        if state is not None:
            await self._drop_torn(name, state)
        bucket = await self._link.bucket()
        archived = await reading(bucket.head(name))
        if archived is None:
            if not create:
                raise NotFound(_shown(name))
            return await self._open_local(name, True, expected_size)
        if expected_size is not None and archived.size != expected_size:
            raise SizeMismatch(archived.size, archived.complete)
        await self._fill(name, archived, bucket)
        return await self._open_local(name, create, expected_size)

    async def _fill(self, name: Name, archived: Archived, bucket: Bucket) -> None:
        """Download ``name`` into the cache (`fill.fill`), room made first."""
        self._trim(room=archived.size)
        started = self._clock()
        await fill(bucket, self._root, name, archived, self._run, self._sync)
        self.cache.add(name, archived.size, safe=True)
        self.filled += 1
        _log.info(
            "filled {name} from the bucket: {size} bytes, {state}, in {took:.3f}s",
            name=_shown(name),
            size=archived.size,
            state="complete" if archived.complete else "incomplete",
            took=self._clock() - started,
        )

    # -- what is on local disk --------------------------------------------------

    def _found(self, name: Name, state: Local) -> None:
        """A file found on local disk: cached, and archived if the bucket lacks it."""
        if state.linked:
            return
        if name not in self.cache:
            self.cache.add(name, state.size, state.safe)
        if not (state.safe or self._sessions[name] or self._uploads.scheduled(name)):
            if state.complete:
                delay = 0.0
            else:
                delay = max(0.0, state.modified + self._idle - self._clock())
            self._uploads.schedule(name, delay)

    async def _drop_torn(self, name: Name, state: Local) -> None:
        assert state.record is not None
        _log.warn(
            "{name} on local disk is shorter than the bucket's copy ({size} <"
            " {archived} bytes): a copy cut short by a crash; the bucket's is used",
            name=_shown(name),
            size=state.size,
            archived=state.record.size,
        )
        await self._run(remove_files, self._root, name)
        self.cache.drop(name)

    async def _recover(self) -> None:
        await self._run(clear_filling, self._root)
        found = await self._run(scan, self._root)
        pending = 0
        for name, state in sorted(found, key=lambda f: f[1].modified):
            if name in self.cache:
                continue
            if state.torn:
                await self._drop_torn(name, state)
                continue
            if not state.safe:
                pending += 1
            self._found(name, state)
        self._evictions.ready = True
        _log.info(
            "archive {url}: {count} resources on local disk ({used} bytes; cache"
            " budget {budget}), {pending} not yet in the bucket",
            url=str(self.archive),
            count=len(self.cache),
            used=self.cache.used,
            budget=self.cache.budget or "unlimited",
            pending=pending,
        )
        self._trim()
        try:
            bucket = await self._link.bucket()
            await bucket.abort_stale(self._started - 60)
        except (S3Error, Unavailable) as e:
            _log.info("archive: open uploads not checked ({error})", error=e)

    # -- archiving ----------------------------------------------------------

    async def _archive(self, name: Name) -> None:
        await self._lanes.run(name, lambda: self._upload(name))

    async def _upload(self, name: Name) -> None:
        """Archive ``name`` if the bucket lacks what its file holds."""
        if self._sessions[name]:
            return  # its end schedules it again
        state = await self._run(local_state, self._root, name)
        if state is None or state.linked:
            self._uploaded.pop(name, None)
            return
        if state.torn:
            await self._drop_torn(name, state)
            return
        if state.safe:
            self.cache.archived(name, state.size)
            return
        bucket = await self._link.bucket()
        for file in list(self._open_files.get(name, ())):
            await file.flush_derived()
        started = self._clock()
        record = Record(state.size, state.complete)
        if self._uploaded.get(name) != record:
            path = os.path.join(self._root, *name)
            await bucket.upload(name, path, record, state.modified)
            self._uploaded[name] = record
        await bucket.upload_derived(name, derived_paths(self._root, name), state.size)
        await self._run(write_record, self._root, name, record, self._sync)
        del self._uploaded[name]
        self.cache.archived(name, state.size)
        self.uploaded += 1
        ended = self._ended_at.pop(name, None)
        now = self._clock()
        _log.info(
            "archived {name}: {size} bytes, {state}, in {took:.3f}s ({since})",
            name=_shown(name),
            size=state.size,
            state="complete" if state.complete else "incomplete",
            took=now - started,
            since="found at start-up"
            if ended is None
            else f"{now - ended:.3f}s after its session ended",
        )
        self._trim()

    # -- the rest of IStore -----------------------------------------------------

    async def _stat(self, name: Name) -> Stored | None:
        stored = await self._local.stat(name)
        if stored is not None:
            return stored
        bucket = await self._link.bucket()
        archived = await reading(bucket.head(name))
        return None if archived is None else Stored(archived.size, archived.complete)

    async def _listing(self, folder: Name) -> Listing | None:
        local = await self._local.listing(folder)
        bucket = await self._link.bucket()
        return await reading(bucket.listing(folder, local))

    async def _remove(self, name: Name) -> bool:
        """DELETE and --max-age (in the lane of ``name``): object first, then file."""
        bucket = await self._link.bucket()
        state = await self._run(local_state, self._root, name)
        if state is None:
            if await reading(bucket.head(name)) is None:
                return False
        else:
            # If the object cannot be deleted, the file is pending again:
            # the resource stays whole, and is archived again.
            await self._run(remove_record, self._root, name, self._sync)
            self.cache.pending(name)
        try:
            await reading(bucket.delete(name))
        except Unavailable:
            if state is not None:
                self._found(name, replace(state, record=None))
            raise
        self._uploads.cancel(name)
        self._uploaded.pop(name, None)
        self._ended_at.pop(name, None)
        await self._run(remove_files, self._root, name)
        self.cache.drop(name)
        return True

    async def _older_than(self, cutoff: float) -> list[Name]:
        found = await self._local.older_than(cutoff)
        try:
            bucket = await self._link.bucket()
            archived = await bucket.older_than(cutoff)
        except (S3Error, Unavailable) as e:
            _log.warn(
                "--max-age: the archive cannot be listed now ({error}); what is"
                " only there is swept next time",
                error=e,
            )
            return found
        local = set(found)
        for name in archived:
            if name in local or name in self.cache:
                continue
            if await self._run(local_state, self._root, name) is None:
                found.append(name)
        return found
