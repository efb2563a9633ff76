"""
`ArchiveStore`: one server's storage with ``--archive s3://BUCKET/PREFIX``:
finished resources in the bucket, one object each, and the root a cache of
them bounded by ``--cache-size``.  It is an `IStore` (the registry's only
door to storage) around the plain `FileStore`, so the core and the web
layer serve every reader from a local file as before:

- **open**: a file on local disk is opened at once (no request to the
  bucket); a resource only in the bucket is first downloaded into the
  cache (streamed to a file under ``.httpfstream/filling/``, renamed into
  place once whole, with its line data and completion), then opened.  A
  resource in neither is created (an APPEND) or is a 404; an ``offset=``
  is checked against the true size wherever the bytes are.  The bucket
  unreachable when it is needed: `Unavailable` (503 with Retry-After).
- **sessions** (`began`, `ended`, `core.store.IArchivingStore`): a session
  that ended well is archived at once, one that did not after ``idle``
  seconds (`uploads.Uploads`), so an appender that resumes does so first.
- **archiving** one resource (`_upload`): its line data flushed, the
  file's bytes uploaded as one object with its completion in the
  metadata, the line data beside it, then the record that the local file
  is safe (`local.Record`).  Only then may the file be evicted.
- **the cache** (`cache.Cache`): least recently used files go once the
  files pass the budget, never one that is open or not yet safe.
- **listing, DELETE, --max-age** act on both: a listing merges the
  bucket's resources (their state from HEADs, remembered) with the local
  ones (which win: they are never older); DELETE removes the object, then
  the file; the sweep finds old objects as well as old files.
- **start-up**: leftovers of downloads are removed; every local file is
  put in the cache, oldest first, and those the bucket lacks (a session
  or an upload cut short by a crash) are scheduled; an upload a crash
  left open in the bucket is aborted.
- **stop**: what is scheduled is archived now, for up to ``drain``
  seconds; the rest waits on local disk for the next start.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ...core.coordination import Unavailable
from ...core.derived import Lines, Span, derived_paths
from ...core.names import Name
from ...core.scan import Entry, Listing
from ...core.store import (
    FileStore,
    IArchivingStore,
    IStoreFile,
    NotAResource,
    NotFound,
    SizeMismatch,
    Stored,
)
from ..s3 import ArchiveURL, S3Client, S3Error, S3NotFound
from .bucket import DERIVED, Archived, Bucket
from .cache import Cache
from .lanes import Lanes
from .local import (
    Local,
    Occupied,
    Record,
    clear_filling,
    evict,
    install,
    local_state,
    new_temporary,
    remove_files,
    remove_record,
    scan,
    write_record,
)
from .uploads import Uploads
from .writer import FileWriter

__all__ = ["ArchiveStore"]

_log = Logger()
_T = TypeVar("_T")


def _shown(name: Name) -> str:
    return "/".join(name)


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@implementer(IStoreFile)
class _CachedFile:
    """
    An open resource file: pinned in the cache until it is closed, its
    appended bytes counted there.
    """

    def __init__(self, store: ArchiveStore, name: Name, file: IStoreFile) -> None:
        self._store = store
        self._name = name
        self._file = file
        self.size = file.size
        self.complete = file.complete

    def write(self, data: bytes, sync: bool) -> Deferred[None]:
        d = self._file.write(data, sync)
        d.addCallback(self._wrote, len(data))
        return d

    def _wrote(self, result: None, added: int) -> None:
        self._store.cache.grew(self._name, added)
        return result

    def mark(self, complete: bool, sync: bool) -> Deferred[None]:
        self._store.cache.pending(self._name)
        return self._file.mark(complete, sync)

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        return self._file.read(offset, length)

    def sync(self) -> Deferred[None]:
        return self._file.sync()

    def locate(self, lines: Lines, size: int, persist: bool) -> Deferred[Span]:
        return self._file.locate(lines, size, persist)

    def line_at(self, offset: int, persist: bool) -> Deferred[int]:
        return self._file.line_at(offset, persist)

    def load_derived(self) -> Deferred[None]:
        return self._file.load_derived()

    def time_of(self, offset: int) -> int:
        return self._file.time_of(offset)

    def learned(self, start: int) -> None:
        self._file.learned(start)

    def flush_derived(self) -> Deferred[None]:
        return self._file.flush_derived()

    def close(self) -> Deferred[None]:
        d = self._file.close()
        d.addBoth(self._store._closed, self._name, self)
        return d


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
        self.evicted = 0
        self.filled = 0
        self.uploaded = 0
        self._local = local
        self._root = local.root.path
        self._connect = connect
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
        self._bucket: Bucket | None = None
        self._connecting = False
        self._bucket_waiters: list[Deferred[Bucket]] = []
        self._sessions: Counter[Name] = Counter()
        self._open_files: dict[Name, set[_CachedFile]] = {}
        # Uploaded but not yet recorded (the line data failed): not again.
        self._uploaded: dict[Name, Record] = {}
        self._ended_at: dict[Name, float] = {}
        self._started = 0.0
        self._ready = False

    def _run(self, f: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    # -- the bucket -----------------------------------------------------------

    def _connect_now(self) -> None:
        if self._connecting or self._bucket is not None:
            return
        self._connecting = True

        def made(client: S3Client) -> None:
            self._connecting = False
            self._bucket = Bucket(client, self.archive, self._uploads.answered)
            waiters, self._bucket_waiters = self._bucket_waiters, []
            for d in waiters:
                d.callback(self._bucket)

        def failed(reason: Failure) -> None:
            self._connecting = False
            _log.error(
                "archive {url}: no S3 client: {error}",
                url=str(self.archive),
                error=reason.getErrorMessage(),
            )
            waiters, self._bucket_waiters = self._bucket_waiters, []
            for d in waiters:
                d.errback(Unavailable("the archive cannot be reached now"))

        self._connect().addCallbacks(made, failed)

    async def _bucket_now(self) -> Bucket:
        """The bucket, once its client is made; `Unavailable` if it cannot be."""
        if self._bucket is not None:
            return self._bucket
        d: Deferred[Bucket] = Deferred()
        self._bucket_waiters.append(d)
        self._connect_now()
        return await d

    async def _reading(self, work: Awaitable[_T]) -> _T:
        """
        ``work``'s result, with S3's refusals as the store's: a missing
        object `NotFound`, anything else `Unavailable` (503), logged.
        """
        try:
            return await work
        except S3NotFound as e:
            raise NotFound(str(e)) from None
        except S3Error as e:
            _log.warn("archive {url}: {error}", url=str(self.archive), error=e)
            raise Unavailable("the archive cannot be reached now") from None

    # -- IStore ---------------------------------------------------------------

    def start(self) -> None:
        self._local.start()
        self._pool.start()
        self._started = self._clock()
        self._connect_now()
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
        self._uploads.stop()
        bucket, self._bucket = self._bucket, None
        if bucket is not None:
            client = bucket.client
            by_operation = ", ".join(
                f"{k} {v}" for k, v in sorted(client.requests.items())
            )
            _log.info(
                "archive {url}: {count} S3 requests ({by_operation}), {sent} bytes"
                " sent, {received} received; {uploaded} uploads, {filled} fills,"
                " {evicted} evictions",
                url=str(self.archive),
                count=sum(client.requests.values()),
                by_operation=by_operation or "none",
                sent=client.bytes_sent,
                received=client.bytes_received,
                uploaded=self.uploaded,
                filled=self.filled,
                evicted=self.evicted,
            )
            bucket.close()
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
        cached = _CachedFile(self, name, file)
        self._open_files.setdefault(name, set()).add(cached)
        self._trim()
        return cached

    def _closed(self, result: object, name: Name, cached: _CachedFile) -> object:
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
        bucket = await self._bucket_now()
        archived = await self._reading(bucket.head(name))
        if archived is None:
            if not create:
                raise NotFound(_shown(name))
            return await self._open_local(name, True, expected_size)
        if expected_size is not None and archived.size != expected_size:
            raise SizeMismatch(archived.size, archived.complete)
        await self._fill(name, archived, bucket)
        return await self._open_local(name, create, expected_size)

    async def _fill(self, name: Name, archived: Archived, bucket: Bucket) -> None:
        """Download ``name`` into the cache: its bytes, line data and state."""
        self._trim(room=archived.size)
        started = self._clock()
        temporaries: list[str] = []
        try:
            fd, path = await self._run(new_temporary, self._root)
            temporaries.append(path)
            writer = FileWriter(fd, self._run)
            try:
                await self._reading(bucket.download(name, writer, archived.size))
            finally:
                await writer.finish(self._sync)
            derived: list[str | None] = []
            for kind in DERIVED:
                fd, kept = await self._run(new_temporary, self._root)
                temporaries.append(kept)
                writer = FileWriter(fd, self._run)
                try:
                    found = await bucket.download_derived(kind, name, writer)
                except S3Error as e:
                    _log.warn(
                        "filling {name}: its {kind} not read ({error}); rebuilt"
                        " or dated by the file",
                        name=_shown(name),
                        kind=kind,
                        error=e,
                    )
                    found = False
                finally:
                    await writer.finish(False)
                derived.append(kept if found else None)
            try:
                await self._run(
                    install,
                    self._root,
                    name,
                    path,
                    (derived[0], derived[1]),
                    archived.record,
                    archived.modified,
                    self._sync,
                )
            except Occupied as e:
                raise NotAResource(str(e)) from None
        finally:
            await self._run(_unlink_all, temporaries)
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
        self._ready = True
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
        await self._abort_stale_uploads()

    async def _abort_stale_uploads(self) -> None:
        """Abort multipart uploads that a server stopped or killed left open."""
        try:
            bucket = await self._bucket_now()
            uploads = await bucket.client.uploads(self.archive.key_prefix)
            for upload in uploads:
                begun = _iso_seconds(upload.initiated)
                if begun is not None and begun < self._started - 60:
                    await bucket.client.abort_upload(upload.key, upload.upload_id)
                    _log.info("aborted an upload of {key} left open", key=upload.key)
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
        bucket = await self._bucket_now()
        for file in list(self._open_files.get(name, ())):
            await file.flush_derived()
        started = self._clock()
        record = Record(state.size, state.complete)
        if self._uploaded.get(name) != record:
            path = os.path.join(self._root, *name)
            await bucket.upload(name, path, record, state.modified)
            self._uploaded[name] = record
        await bucket.upload_derived(name, derived_paths(self._root, name))
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

    # -- the cache's bound --------------------------------------------------------

    def _trim(self, room: int = 0) -> None:
        """Evict what takes the files past the budget (with ``room`` more)."""
        if not self._ready:
            return
        for name in self.cache.victims(room):
            size = self.cache.size(name) or 0
            self.cache.drop(name)  # opens of it wait in its lane now
            self._lanes.run(name, partial(self._evict, name, size)).addErrback(
                self._evict_failed, name
            )

    @staticmethod
    def _evict_failed(reason: Failure, name: Name) -> None:
        _log.failure("evicting {name}", reason, name=_shown(name))

    async def _evict(self, name: Name, size: int) -> None:
        if name in self.cache or self.cache.pinned(name):
            return  # back in use meanwhile
        left = await self._run(evict, self._root, name)
        if left is None:
            self.evicted += 1
            _log.info(
                "evicted {name} ({size} bytes) from the cache",
                name=_shown(name),
                size=size,
            )
        else:
            self._found(name, left)

    # -- the rest of IStore -----------------------------------------------------

    async def _stat(self, name: Name) -> Stored | None:
        stored = await self._local.stat(name)
        if stored is not None:
            return stored
        bucket = await self._bucket_now()
        archived = await self._reading(bucket.head(name))
        return None if archived is None else Stored(archived.size, archived.complete)

    async def _listing(self, folder: Name) -> Listing | None:
        local = await self._local.listing(folder)
        bucket = await self._bucket_now()
        objects, folders = await self._reading(bucket.folder(folder))
        if local is None and not objects and not folders:
            return None
        entries = {e.name: e for e in (local.resources if local else [])}
        others = [(n, info) for n, info in objects if n not in entries]
        states = await self._reading(bucket.describe([info for _, info in others]))
        for (n, _), archived in zip(others, states, strict=True):
            if archived is not None:
                entries[n] = Entry(
                    n, archived.size, archived.complete, archived.modified
                )
        return Listing(
            sorted(entries.values(), key=lambda e: e.name),
            sorted({*(local.folders if local else []), *folders}),
        )

    async def _remove(self, name: Name) -> bool:
        """DELETE and --max-age (in the lane of ``name``): object first, then file."""
        bucket = await self._bucket_now()
        state = await self._run(local_state, self._root, name)
        if state is None:
            if await self._reading(bucket.head(name)) is None:
                return False
        else:
            # If the object cannot be deleted, the file is pending again:
            # the resource stays whole.
            await self._run(remove_record, self._root, name, self._sync)
            self.cache.pending(name)
        await self._reading(bucket.delete(name))
        self._uploads.cancel(name)
        self._uploaded.pop(name, None)
        self._ended_at.pop(name, None)
        await self._run(remove_files, self._root, name)
        self.cache.drop(name)
        return True

    async def _older_than(self, cutoff: float) -> list[Name]:
        found = await self._local.older_than(cutoff)
        try:
            bucket = await self._bucket_now()
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


def _iso_seconds(text: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
