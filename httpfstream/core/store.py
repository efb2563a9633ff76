"""
The disk: opening, appending to and reading resource files under the
storage root.

Every blocking call runs in the store's own thread pool and comes back as a
Deferred, so the reactor thread never waits on the disk.  The store does not
order writes itself: its caller (``stream.Stream``) keeps at most one write
per file in flight, which is what keeps appends in order (concurrent
``deferToThread`` appends to one file come out of order).
Reads at an offset (``os.pread``) may run beside a write; they only ever ask
for bytes the caller knows are already written.

Completion (docs/PROTOCOL.md section 9) is kept beside the bytes, outside the
names a request can reach: a resource whose last append session did not end
well has an empty *marker* file at the same relative path under
``ROOT/.httpfstream/incomplete/``.  No marker means complete, so a file put
into the root by other means counts as complete.  A marker is created when
a session begins and removed when it ends well; both survive the server
process (a SIGKILL included), and with ``sync`` the marker's folder is
fsynced too, so they survive a power cut.

Beside them, what is derived from the bytes (section 13: where the lines
start, when the bytes were persisted) is kept by `derived.Derived`, one per
open file: the writing thread tells it of each batch after the batch is
written, and a failure there never fails the write.  Removing a resource
removes them too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.filepath import FilePath
from twisted.python.threadpool import ThreadPool
from zope.interface import Attribute, Interface, implementer

from .derived import Derived, Lines, Span, derived_folders, derived_paths
from .names import STATE_FOLDER, Name
from .pagecache import NOWAIT, Unsupported, open_noatime, read_cached
from .scan import (
    Entry,
    Listing,
    inside,
    is_complete,
    list_folder,
    marker,
    older_than,
)
from .writes import Fence, Fenced, write_fenced

__all__ = [
    "Entry",
    "FileStore",
    "IArchivingStore",
    "IStore",
    "IStoreFile",
    "Listing",
    "NotAResource",
    "NotFound",
    "SizeMismatch",
    "Stored",
]

_T = TypeVar("_T")


class NotFound(Exception):
    """No file exists for this resource name."""


class NotAResource(Exception):
    """
    The name cannot hold a resource: it leads outside the root through a
    symbolic link, or names a directory or other non-regular file, or one of
    its parents is a file.
    """


class SizeMismatch(Exception):
    """
    The resource does not hold the expected number of bytes.

    :ivar size: its real size, or ``None`` when it does not exist.
    :ivar complete: whether its last append session ended well.
    """

    def __init__(self, size: int | None, complete: bool = True) -> None:
        super().__init__(size)
        self.size = size
        self.complete = complete


class Stored(NamedTuple):
    """What the store knows of a resource without opening it."""

    size: int
    complete: bool


class IStoreFile(Interface):
    """One open resource file.  At most one ``write`` may be in flight."""

    size = Attribute("The file's size in bytes when it was opened.")
    complete = Attribute(
        "Whether the resource's last append session ended well, when opened."
    )

    def mark(complete: bool, sync: bool) -> Deferred[None]:
        """
        Record whether the resource is complete, durably (with ``sync``,
        through a power cut too).
        """

    def write(data: bytes, sync: bool, fence: Fence | None = None) -> Deferred[None]:
        """
        Append ``data`` in full (and fsync when ``sync``).  On failure the
        file is cut back to its size before this write, where the system
        allows it, so a failed write leaves no partial bytes behind.
        ``fence`` is asked in the writing thread right before each system
        call that writes; when it says no, the write fails with
        `writes.Fenced`, which says how much of ``data`` is in the file
        (left there: `writes.write_fenced`).
        """

    def read(offset: int, length: int) -> Deferred[bytes]:
        """Read up to ``length`` bytes at ``offset``."""

    def sync() -> Deferred[None]:
        """Flush the file's data to the device."""

    def locate(lines: Lines, size: int, persist: bool) -> Deferred[Span]:
        """
        Where ``lines`` are among the first ``size`` bytes (`Derived.locate`);
        fails with `PastTheEnd`.
        """

    def line_at(offset: int, persist: bool) -> Deferred[int]:
        """The number of the line that starts at ``offset``."""

    def load_derived() -> Deferred[None]:
        """Read the line counts and batch times, once, before `time_of`."""

    def time_of(offset: int) -> int:
        """When the byte at ``offset`` was persisted, in ms since the epoch."""

    def learned(start: int) -> None:
        """Bytes from ``start`` on were just persisted by another process."""

    def flush_derived() -> Deferred[None]:
        """Write the line counts and batch times kept in memory to their files."""

    def close() -> Deferred[None]:
        """Close the file; no call may follow."""


class IStore(Interface):
    """Where resource files live."""

    def start() -> None:
        """Start the worker threads."""

    def stop() -> Deferred[None] | None:
        """
        Stop the worker threads, after the work already queued; a Deferred
        returned is waited for (the archive's last uploads).
        """

    def open(
        name: Name, create: bool, expected_size: int | None
    ) -> Deferred[IStoreFile]:
        """
        Open the resource file for reading and appending.

        :param create: create the file (and its parent directories) if it
            does not exist; otherwise fail with `NotFound`.
        :param expected_size: if not ``None``, fail with `SizeMismatch`
            unless the resource holds exactly this many bytes (a missing
            resource holds 0); checked before anything is created.
        """

    def stat(name: Name) -> Deferred[Stored | None]:
        """The resource's size and completion, or ``None`` if it has no file."""

    def listing(folder: Name) -> Deferred[Listing | None]:
        """What ``folder`` holds, or ``None`` if there is no such folder."""

    def remove(name: Name) -> Deferred[bool]:
        """
        Remove the resource's file and its state, and the folders that are
        left empty; ``False`` if it had no file.
        """

    def older_than(seconds_since_epoch: float) -> Deferred[list[Name]]:
        """Every resource whose bytes last changed before that time."""


class IArchivingStore(IStore):
    """
    A store that also keeps resources elsewhere once their sessions end
    (``--archive``: `shared.archive.ArchiveStore`, finished resources in an
    S3 bucket and the root a bounded cache).  The registry tells it when
    each append session begins and ends; it knows nothing of sessions
    otherwise.
    """

    def began(name: Name) -> None:
        """An append session on ``name`` began (its file is open)."""

    def ended(name: Name, size: int, complete: bool) -> None:
        """
        The session on ``name`` ended: its bytes are persisted (synced,
        unless ``--fsync never``) and its completion recorded.
        """


@implementer(IStoreFile)
class _OpenFile:
    def __init__(
        self, store: FileStore, name: Name, fd: int, size: int, complete: bool
    ) -> None:
        self._store = store
        self._name = name
        self._fd = fd
        self.size = size
        self.complete = complete
        # Where the file ends as the worker thread knows it; only the one
        # write in flight touches it.
        self._written = size
        self._derived = Derived(store.root.path, name, fd)

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        return self._store._run(self._write, data, sync, fence)

    def _write(self, data: bytes, sync: bool, fence: Fence | None) -> None:
        # Where the file ends now: another process (a server on a shared
        # root, or the stateless mode's copy being extended) may have
        # appended since this one last wrote.  A failed write is cut back
        # to here, and the line data counts from here.
        self._written = max(self._written, os.fstat(self._fd).st_size)
        try:
            write_fenced(self._fd, data, fence)
            if sync:
                os.fsync(self._fd)
        except Fenced as refused:
            if refused.written:  # what the fence let through stays, and counts
                if sync:
                    os.fsync(self._fd)
                self._wrote(data[: refused.written])
            raise
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._written)
            raise
        self._wrote(data)

    def _wrote(self, data: bytes) -> None:
        start, self._written = self._written, self._written + len(data)
        try:
            self._derived.written(start, data)
        except Exception:  # pragma: no cover - derived data never fails a write
            self._store.derived_errors += 1

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        if NOWAIT and self._store.read_now:
            try:
                data = read_cached(self._fd, offset, length)
            except Unsupported:
                self._store.read_now = False  # not on this file system or kernel
            else:
                if data is not None:
                    return succeed(data)
        return self._store._run(os.pread, self._fd, length, offset)

    def sync(self) -> Deferred[None]:
        return self._store._run(os.fsync, self._fd)

    def mark(self, complete: bool, sync: bool) -> Deferred[None]:
        return self._store._run(self._store._mark, self._name, complete, sync)

    def locate(self, lines: Lines, size: int, persist: bool) -> Deferred[Span]:
        return self._store._run(self._derived.locate, lines, size, persist)

    def line_at(self, offset: int, persist: bool) -> Deferred[int]:
        return self._store._run(self._derived.line_at, offset, persist)

    def load_derived(self) -> Deferred[None]:
        return self._store._run(self._derived.load)

    def time_of(self, offset: int) -> int:
        return self._derived.time_of(offset)

    def learned(self, start: int) -> None:
        self._derived.learned(start)

    def flush_derived(self) -> Deferred[None]:
        return self._store._run(self._derived.flush)

    def close(self) -> Deferred[None]:
        return self._store._run(self._close)

    def _close(self) -> None:
        try:
            self._derived.close()
        finally:
            os.close(self._fd)


@implementer(IStore)
class FileStore:
    """
    Resource files under a root directory, one file per resource at the
    same relative path.

    :param root: the storage root; created if missing.
    :param reactor: the reactor that Deferreds fire in.
    :param threads: the most worker threads at once.
    """

    def __init__(
        self,
        root: FilePath[str],
        reactor: IReactorFromThreads,
        threads: int = 4,
    ) -> None:
        self.root = root
        self._reactor = reactor
        #: Whether reads try the page cache at once, before a thread.
        self.read_now = True
        #: Unexpected errors keeping derived data (never an append's).
        self.derived_errors = 0
        self._pool = ThreadPool(minthreads=1, maxthreads=threads, name="httpfstream")

    def start(self) -> None:
        self.root.makedirs(ignoreExistingDirectory=True)
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def _run(self, f: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def open(
        self, name: Name, create: bool, expected_size: int | None
    ) -> Deferred[IStoreFile]:
        return self._run(self._open, name, create, expected_size)

    def stat(self, name: Name) -> Deferred[Stored | None]:
        return self._run(self._stat, name)

    def listing(self, folder: Name) -> Deferred[Listing | None]:
        return self._run(list_folder, self.root.path, folder)

    def remove(self, name: Name) -> Deferred[bool]:
        return self._run(self._remove, name)

    def older_than(self, seconds_since_epoch: float) -> Deferred[list[Name]]:
        return self._run(older_than, self.root.path, seconds_since_epoch)

    # Everything below runs in a worker thread.

    def _inside(self, path: str) -> bool:
        return inside(self.root.path, path)

    def _marker(self, name: Name) -> str:
        return marker(self.root.path, name)

    def _complete(self, name: Name) -> bool:
        return is_complete(self.root.path, name)

    def _mark(self, name: Name, complete: bool, sync: bool) -> None:
        marker = self._marker(name)
        folder = os.path.dirname(marker)
        if complete:
            try:
                os.unlink(marker)
            except FileNotFoundError:
                return
        else:
            os.makedirs(folder, exist_ok=True)
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        if sync:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _remove(self, name: Name) -> bool:
        path = os.path.join(self.root.path, *name)
        if not self._inside(os.path.dirname(path)):
            return False
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISDIR(info.st_mode):
            return False
        os.unlink(path)
        for kept in (self._marker(name), *derived_paths(self.root.path, name)):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(kept)
        # Folders left empty go too, in the resources and in the state.
        for base in (
            self.root.path,
            os.path.join(self.root.path, STATE_FOLDER, "incomplete"),
            *derived_folders(self.root.path),
        ):
            for depth in range(len(name) - 1, 0, -1):
                try:
                    os.rmdir(os.path.join(base, *name[:depth]))
                except OSError:
                    break
        return True

    def _stat(self, name: Name) -> Stored | None:
        path = os.path.join(self.root.path, *name)
        if not self._inside(path):
            return None
        try:
            info = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return Stored(info.st_size, self._complete(name))

    def _open(self, name: Name, create: bool, expected_size: int | None) -> IStoreFile:
        path = os.path.join(self.root.path, *name)
        if not self._inside(path):
            raise NotAResource("the name leads outside the storage root")
        if expected_size is not None:
            try:
                size: int | None = os.stat(path).st_size
            except FileNotFoundError:
                size = None
            except NotADirectoryError:
                raise NotAResource("a parent of the name is a file") from None
            if (size or 0) != expected_size:
                raise SizeMismatch(size, self._complete(name))
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK
        if create:
            parent = os.path.dirname(path)
            try:
                os.makedirs(parent, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise NotAResource("a parent of the name is a file") from None
            # A link created meanwhile could lead the new directories out.
            if not self._inside(parent):
                raise NotAResource("the name leads outside the storage root")
            flags |= os.O_CREAT
        try:
            fd = open_noatime(path, flags)
        except FileNotFoundError:
            raise NotFound(path) from None
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENXIO):
                raise NotAResource(os.strerror(e.errno)) from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotAResource("not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return _OpenFile(self, name, fd, info.st_size, self._complete(name))
