"""
What is derived from one resource's bytes (docs/PROTOCOL.md section 13):
where its lines start (`lines.LineIndex`) and when its bytes were persisted
(`times.BatchTimes`), in memory and in two files beside the completion
markers, outside the namespace::

    ROOT/.httpfstream/lines/NAME   8 bytes per 64 KiB of the resource
    ROOT/.httpfstream/times/NAME   16 bytes per millisecond of appending

Nothing here is needed to serve the bytes, and nothing here can fail an
append: the writer counts each batch after its ``os.write`` succeeded and
keeps the records in memory, writing them to their files at most once a
second (and when the file closes).  So after a crash the files lag the
resource by at most a second of appending: the counts are completed from
the resource's bytes the first time a line is asked for, and the bytes
whose times were lost take the time of the last record before them (a
little early, never late).  A missing or damaged file of counts is rebuilt
from the resource's bytes; bytes no time record covers take the file's
modification time.  An error writing them drops them, to be rebuilt.

Threads: everything but `time_of` runs in the store's threads, under the
object's lock (the writer and a reader asking for a line may run at once).
The reactor only reads `time_of`, which takes no lock.

Who writes the files: the server whose writer appends to the resource, and,
when nobody appends, a server that completed the counts (it replaces the
file whole, so two servers doing so at once cannot interleave their
writes).  A server reading a resource appended by another (shared mode)
only reads them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .lines import LineIndex, Position
from .names import STATE_FOLDER, Name
from .times import BatchTimes

__all__ = ["FLUSH_EVERY", "Derived", "Lines", "PastTheEnd", "Span", "derived_paths"]

#: Seconds between two writes of the records to their files.
FLUSH_EVERY = 1.0

#: The writer completes counts that lag by at most this many bytes before
#: it counts a batch (more: a request for lines does it, off the writer).
_CATCH_UP_HERE = 16 << 20

#: A reader completing the counts of a resource appended elsewhere first
#: reloads the file of counts if it lags by more than this many bytes.
_RELOAD_AFTER = 4 << 20

_KINDS = ("lines", "times")


def derived_paths(root: str, name: Name) -> tuple[str, str]:
    """The files of ``name``'s line counts and batch times."""
    return (
        os.path.join(root, STATE_FOLDER, "lines", *name),
        os.path.join(root, STATE_FOLDER, "times", *name),
    )


def derived_folders(root: str) -> list[str]:
    """The folders that hold derived files (emptied ones are pruned)."""
    return [os.path.join(root, STATE_FOLDER, kind) for kind in _KINDS]


class PastTheEnd(ValueError):
    """A line asked for is past the end (416)."""

    def __init__(self, message: str, lines: int) -> None:
        super().__init__(message)
        self.lines = lines


@dataclass(frozen=True)
class Lines:
    """
    What ``lines=`` asks: ``-N`` (the N last lines: ``Lines(N,
    tail=True)``), ``N`` (from line N on: ``Lines(N)``) or ``A-B`` (lines A
    to B: ``Lines(A, B)``).
    """

    first: int
    last: int | None = None
    tail: bool = False

    @classmethod
    def parse(cls, text: str) -> Lines:
        """:raises ValueError: with a message for the client."""
        head, dash, tail = text.partition("-")
        if head == "" and dash and tail.isdigit() and len(tail) < 19:
            return cls(int(tail), tail=True)
        if not (head.isdigit() and len(head) < 19) or int(head) < 1:
            raise ValueError(
                "lines must be -N (the last N), N (from line N) or A-B"
                " (lines A to B), with lines numbered from 1"
            )
        if not dash:
            return cls(int(head))
        if not (tail.isdigit() and len(tail) < 19) or int(tail) < int(head):
            raise ValueError("lines=A-B needs A <= B")
        return cls(int(head), int(tail))


@dataclass(frozen=True)
class Span:
    """
    Where the lines asked for are among the first ``size`` bytes: the
    number and offset of the first, and the offset just past the last
    (``None``: up to the end, and on as the resource grows).
    """

    line: int
    start: int
    stop: int | None
    size: int


class Derived:
    """
    The line counts and batch times of one open resource.

    :param root: the storage root.
    :param name: the resource.
    :param fd: the resource file's descriptor, to read its bytes.
    :param clock: the time now, in seconds since the epoch.
    """

    def __init__(
        self,
        root: str,
        name: Name,
        fd: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lines_path, self._times_path = derived_paths(root, name)
        self._fd = fd
        self._clock = clock
        self._lock = threading.Lock()
        self._index: LineIndex | None = None  # None until loaded
        # Read by the reactor (`time_of`) without the lock: replaced whole.
        self._times = BatchTimes()
        self._counts_out = bytearray()
        self._times_out = bytearray()
        self._flushed = 0.0
        self._appending: dict[str, int] = {}  # open files of records
        self._broken = False

    def _read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    # -- the writer ---------------------------------------------------------

    def written(self, start: int, batch: bytes) -> None:
        """``batch`` was just persisted at ``start`` (the writer's thread)."""
        now = self._clock()
        with self._lock:
            if self._index is None:
                self._load()
                assert self._index is not None
            index = self._index
            if index.size < start and start - index.size <= _CATCH_UP_HERE:
                # The bytes after the last stored count (a checkpoint's
                # worth after a clean close, a second's after a crash).
                index = self._caught_up(start, persist=True)
            if index.size == start:
                self._counts_out += index.add(batch)
            # else the counts lag by more (their file was lost): they are
            # completed from the file when a line is asked for.
            self._times_out += self._times.add(start, int(now * 1000))
            if now - self._flushed >= FLUSH_EVERY:
                self._flush(now)

    def close(self) -> None:
        """Write what is kept in memory, and close the files of records."""
        with self._lock:
            self._flush(self._clock())
            for fd in self._appending.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._appending.clear()

    # -- readers ------------------------------------------------------------

    def load(self) -> None:
        """Read the files of records, if not yet read."""
        with self._lock:
            if self._index is None:
                self._load()

    def time_of(self, offset: int) -> int:
        """When the byte at ``offset`` was persisted, in ms (any thread)."""
        return self._times.at(offset)

    def learned(self, start: int) -> None:
        """
        Bytes from ``start`` on were persisted just now by another process
        (shared mode: the feed told of them): their time, kept in memory.
        """
        self._times.add(start, int(self._clock() * 1000))

    def locate(self, lines: Lines, size: int, persist: bool) -> Span:
        """
        Where ``lines`` are among the first ``size`` bytes.  ``persist``:
        whether this server may write the counts it completes (nobody
        appends elsewhere).

        :raises PastTheEnd: the first line asked for is past the end.
        """
        with self._lock:
            index = self._caught_up(size, persist)
            read = self._read
            if lines.tail:
                start = index.start_of_last(lines.first, size, read)
                return Span(start.line, start.offset, None, size)
            total = index.total_lines(size, read)
            if lines.last is None:
                if lines.first > total + 1:
                    raise PastTheEnd(
                        f"line {lines.first} is past the end: the resource"
                        f" holds {total} lines",
                        total,
                    )
                start = index.start_of(lines.first, size, read)
                return Span(start.line, start.offset, None, size)
            if lines.first > total:
                raise PastTheEnd(
                    f"line {lines.first} is past the end: the resource holds"
                    f" {total} lines",
                    total,
                )
            start = index.start_of(lines.first, size, read)
            stop: Position = index.start_of(min(lines.last, total) + 1, size, read)
            return Span(start.line, start.offset, stop.offset, size)

    def line_at(self, offset: int, persist: bool) -> int:
        """The number of the line that starts at ``offset`` (a line start)."""
        with self._lock:
            index = self._caught_up(offset, persist)
            return index.newlines_before(offset, self._read) + 1

    # -- under the lock -----------------------------------------------------

    def _caught_up(self, size: int, persist: bool) -> LineIndex:
        if self._index is None or (
            not persist and self._index.size + _RELOAD_AFTER < size
        ):
            self._load()
        assert self._index is not None
        index = self._index
        if index.size < size:
            try:
                added = index.catch_up(size, self._read)
            except ValueError:
                # The counts claim bytes the file does not hold (it was
                # replaced behind the server's back): counted again.
                index = self._index = LineIndex()
                added = index.catch_up(size, self._read)
            if persist and added and not self._broken:
                self._replace_counts(index)
        return index

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        try:
            index = LineIndex.load(_read_all(self._lines_path))
            if index.size > size:
                raise ValueError("the counts describe a longer resource")
        except ValueError:
            index = LineIndex()
        self._index = index
        self._counts_out.clear()
        mtime = int(os.fstat(self._fd).st_mtime_ns // 1_000_000)
        times = BatchTimes.load(_read_all(self._times_path), mtime)
        if times.starts and times.starts[-1] >= max(size, 1):
            times = BatchTimes(mtime)  # records of another, longer file
        self._times = times

    def _flush(self, now: float) -> None:
        self._flushed = now
        if self._broken:
            return
        try:
            for kind, out in (("lines", self._counts_out), ("times", self._times_out)):
                if out:
                    os.write(self._file(kind), out)
                    out.clear()
        except OSError:
            self._drop()

    def _file(self, kind: str) -> int:
        fd = self._appending.get(kind)
        if fd is None:
            path = self._lines_path if kind == "lines" else self._times_path
            os.makedirs(os.path.dirname(path), exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = self._appending[kind] = os.open(path, flags, 0o644)
        return fd

    def _replace_counts(self, index: LineIndex) -> None:
        """Write the counts whole, in place of their file."""
        temporary = f"{self._lines_path}.{os.getpid()}.{threading.get_ident()}"
        try:
            os.makedirs(os.path.dirname(self._lines_path), exist_ok=True)
            with open(temporary, "wb") as f:
                f.write(index.counts.tobytes())
            os.replace(temporary, self._lines_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            return
        self._counts_out.clear()
        fd = self._appending.pop("lines", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _drop(self) -> None:
        """Writing failed (no space, say): stop, and let them be rebuilt."""
        self._broken = True
        self._counts_out.clear()
        self._times_out.clear()
        for path in (self._lines_path, self._times_path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def _read_all(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return b""
    except OSError:
        return b""
