"""
The archive's side of the storage root, for `store.ArchiveStore`.  Every
function here blocks: the store runs them in its own threads.

Beside the completion markers and the line data (`core/scan.py`,
`core/derived.py`), the archive keeps two folders under
``ROOT/.httpfstream/``:

- ``archived/NAME``, the *record* of what the bucket holds of NAME,
  written once its upload is done: ``SIZE COMPLETE`` (``1`` or ``0``).  A
  local file whose size and completion are its record's is *safe*: the
  object in the bucket has exactly its bytes and says the same completion,
  so the file may be evicted.  Any other local file is *pending*: it has
  bytes or a completion the bucket lacks.  Resources only grow, so a size
  says which bytes; a file shorter than its record was torn by a crash
  (a cache copy whose data never reached the disk) and the bucket's copy
  is the true one.
- ``filling/``, downloads under way, each renamed into place once whole;
  emptied at start-up.

The order of each change is what keeps section 9 true after a crash at any
point (docs/ARCHITECTURE.md, "Archive"):

- `install` (a download put in place): the completion marker as the
  object's metadata says, then the line data, then the record, and the
  file last, so a resource never appears with a wrong completion.
- `remove_files` (eviction, DELETE): the file first, so what a crash
  leaves behind (a marker, a record) describes no file; the next fill
  rewrites both.
- A record is removed before the bucket's object is deleted (DELETE), so a
  crash between them leaves a pending file that is archived again: the
  resource stays whole, or goes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass

from ...core.derived import derived_folders, derived_paths
from ...core.names import STATE_FOLDER, Name
from ...core.scan import inside, is_complete, marker

__all__ = [
    "Local",
    "Record",
    "clear_filling",
    "evict",
    "install",
    "local_state",
    "new_temporary",
    "read_record",
    "remove_files",
    "remove_record",
    "scan",
    "write_record",
]

ARCHIVED = "archived"
FILLING = "filling"


@dataclass(frozen=True)
class Record:
    """What the bucket was given of a resource: its size and completion."""

    size: int
    complete: bool


@dataclass(frozen=True)
class Local:
    """
    A resource file on local disk.

    :ivar modified: when its bytes last changed (seconds since the epoch).
    :ivar record: what the bucket holds of it, if this server archived it
        (or filled it from there).
    :ivar linked: the name is a symbolic link: served as it is, never
        archived nor evicted.
    """

    size: int
    complete: bool
    modified: float
    record: Record | None
    linked: bool = False

    @property
    def safe(self) -> bool:
        """The bucket holds exactly these bytes and this completion."""
        return self.record == Record(self.size, self.complete)

    @property
    def torn(self) -> bool:
        """Shorter than what the bucket holds: a copy a crash cut short."""
        return self.record is not None and self.size < self.record.size


def _path(root: str, name: Name) -> str:
    return os.path.join(root, *name)


def record_path(root: str, name: Name) -> str:
    return os.path.join(root, STATE_FOLDER, ARCHIVED, *name)


def _sync_folder(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_record(root: str, name: Name) -> Record | None:
    try:
        with open(record_path(root, name), "rb") as f:
            text = f.read(64)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    size, _, complete = text.strip().partition(b" ")
    if not size.isdigit() or complete not in (b"0", b"1"):
        return None  # damaged: the file counts as pending, and goes up again
    return Record(int(size), complete == b"1")


def write_record(root: str, name: Name, record: Record, sync: bool) -> None:
    """The record, whole or not at all (written aside, then renamed)."""
    path = record_path(root, name)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".record-")
    try:
        os.write(fd, b"%d %d\n" % (record.size, record.complete))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if sync:
        _sync_folder(folder)


def remove_record(root: str, name: Name, sync: bool) -> None:
    path = record_path(root, name)
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if sync:
        _sync_folder(os.path.dirname(path))


def local_state(root: str, name: Name) -> Local | None:
    """The resource's file on local disk, or None if it has none."""
    path = _path(root, name)
    if not inside(root, path):
        return None
    try:
        linked = stat.S_ISLNK(os.lstat(path).st_mode)
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return Local(
        info.st_size,
        is_complete(root, name),
        info.st_mtime,
        read_record(root, name),
        linked,
    )


def scan(root: str) -> list[tuple[Name, Local]]:
    """
    Every resource file under the root that the archive keeps (regular
    files a name can reach; not symbolic links), with its state.
    """
    found: list[tuple[Name, Local]] = []

    def walk(folder: Name) -> None:
        try:
            entries = list(os.scandir(_path(root, folder)))
        except OSError:
            return
        for entry in entries:
            if (not folder and entry.name == STATE_FOLDER) or entry.is_symlink():
                continue
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                continue
            name = (*folder, entry.name)
            try:
                if entry.is_dir():
                    walk(name)
                    continue
            except OSError:
                continue
            state = local_state(root, name)
            if state is not None:
                found.append((name, state))

    walk(())
    return found


def clear_filling(root: str) -> None:
    """Remove what downloads cut short by a crash left."""
    shutil.rmtree(os.path.join(root, STATE_FOLDER, FILLING), ignore_errors=True)


def new_temporary(root: str) -> tuple[int, str]:
    """A new file for a download (its descriptor, open for writing, and path)."""
    folder = os.path.join(root, STATE_FOLDER, FILLING)
    os.makedirs(folder, exist_ok=True)
    return tempfile.mkstemp(dir=folder, prefix="fill-")


def _set_marker(root: str, name: Name, complete: bool, sync: bool) -> None:
    path = marker(root, name)
    folder = os.path.dirname(path)
    if complete:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
    else:
        os.makedirs(folder, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    if sync:
        _sync_folder(folder)


class Occupied(Exception):
    """The name cannot take a file: one of its parents is a file, or it leads out."""


def install(
    root: str,
    name: Name,
    temporary: str,
    derived: tuple[str | None, str | None],
    record: Record,
    modified: float,
    sync: bool,
) -> None:
    """
    Put a download in place as ``name``: its completion marker as
    ``record`` says, its line data (``derived``: downloaded files of line
    counts and batch times, or None), its record, its modification time,
    and the file itself last (renamed from ``temporary``).

    :raises Occupied: the name cannot hold a file here.
    """
    path = _path(root, name)
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Occupied("a parent of the name is a file") from None
    if not inside(root, parent):
        raise Occupied("the name leads outside the storage root")
    if os.path.lexists(path):
        raise Occupied("the name holds a file already")
    _set_marker(root, name, record.complete, sync)
    for downloaded, kept in zip(derived, derived_paths(root, name), strict=True):
        if downloaded is None:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(kept)
        else:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            os.replace(downloaded, kept)
    write_record(root, name, record, sync)
    os.utime(temporary, (modified, modified))
    os.rename(temporary, path)
    if sync:
        _sync_folder(parent)


def remove_files(root: str, name: Name) -> bool:
    """
    Remove the resource's file, then its marker, line data and record, and
    the folders left empty; whether it had a file.
    """
    path = _path(root, name)
    had = False
    if inside(root, os.path.dirname(path)):
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                os.unlink(path)
                had = True
        except (FileNotFoundError, NotADirectoryError):
            pass
    kept = (marker(root, name), *derived_paths(root, name), record_path(root, name))
    for state in kept:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(state)
    bases = (
        root,
        os.path.join(root, STATE_FOLDER, "incomplete"),
        os.path.join(root, STATE_FOLDER, ARCHIVED),
        *derived_folders(root),
    )
    for base in bases:
        for depth in range(len(name) - 1, 0, -1):
            try:
                os.rmdir(os.path.join(base, *name[:depth]))
            except OSError:
                break
    return had


def evict(root: str, name: Name) -> Local | None:
    """
    Remove the resource's local copy if it is safe (checked here, just
    before); None if it went (or was gone), else its state now.
    """
    state = local_state(root, name)
    if state is None:
        return None
    if not state.safe or state.linked:
        return state
    remove_files(root, name)
    return None
