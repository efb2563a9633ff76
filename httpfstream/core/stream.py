"""
One live resource, and the cursors that read it.

A `Stream` owns the open file of one resource while anybody uses it
(`tracked.TrackedFile`: closed only after the I/O queued on it), the
appender slot and who holds it (`writes.Appending`), the write queue
(`writes.WriteQueue`), and the fan-out to its readers (`fanout.FanOut`:
the persisted size, the in-memory tail of recent bytes, the cursors).

Data flow::

    appender -> Stream.append -> queue -> one store write in flight
             -> size grows -> tail grows -> every cursor wakes
             -> each cursor sends what it has not sent yet, from the tail
                or, if it has fallen behind the tail, from the file

Nothing is shared between a cursor and the appender but the size, so a slow
reader costs the appender nothing, and a reader's memory is one read buffer.
Readers only ever see persisted bytes.  Growth written by another process
reaches the cursors the same way, through `growth.IGrowthListener`.  (The
names other modules use are importable from here.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol import (
    APPENDER_LOST,
    COMPLETE,
    GOING_AWAY,
    READ_FAILED,
    TOO_BIG,
    WRITE_FAILED,
    ResourceState,
)
from .cursor import Cursor, IFollowerSink
from .derived import Lines, PastTheEnd, Span
from .fanout import FanOut
from .growth import IGrowthListener
from .names import Name
from .store import IStoreFile
from .tail import Tail
from .tracked import TrackedFile
from .writes import (
    AppenderObserver,
    Appending,
    Fenced,
    FsyncPolicy,
    ResourceFull,
    WriteFailed,
    WriteQueue,
    out_of_space,
)

__all__ = [
    "APPENDER_LOST",
    "COMPLETE",
    "GOING_AWAY",
    "READ_FAILED",
    "TOO_BIG",
    "WRITE_FAILED",
    "AppenderObserver",
    "Appending",
    "Cursor",
    "Fenced",
    "FsyncPolicy",
    "IFollowerSink",
    "IGrowthListener",
    "Lines",
    "PastTheEnd",
    "ResourceFull",
    "Span",
    "Stream",
    "Tail",
    "WriteFailed",
]

_log = Logger()


@implementer(IGrowthListener)
class Stream:
    """
    One resource in use: its open file, persisted size, appender slot,
    write queue, in-memory tail and cursors.

    Streams are made and dropped by `StreamRegistry`; a stream lives while
    it has an appender, a cursor or a hold.

    :param name: the resource name.
    :param file: the open file.
    :param fsync: when to sync.
    :param max_size: the most bytes the resource may hold (0: no limit).
    :param tail_size: how many recent bytes to keep in memory for cursors.
    :param queue_size: queued bytes past which `queue_full` pauses the appender.
    :param read_size: the most bytes a cursor sends at once.
    :param on_session_end: called when the appender slot is released.
    :param on_idle: called when nothing uses the stream any more.
    :param clock: the time now, in seconds, for timing I/O.
    :param observe: told how long each write (``"write"``, from queued to
        persisted) and each sync (``"sync"``) took, and of each write that
        found no space left (``"no-space"``).
    """

    def __init__(
        self,
        name: Name,
        file: IStoreFile,
        *,
        fsync: FsyncPolicy = FsyncPolicy.CLOSE,
        max_size: int = 0,
        tail_size: int = 1 << 20,
        queue_size: int = 4 << 20,
        read_size: int = 256 << 10,
        on_session_end: Callable[[Stream], None] = lambda s: None,
        on_idle: Callable[[Stream], None] = lambda s: None,
        clock: Callable[[], float] = lambda: 0.0,
        observe: Callable[[str, float], None] = lambda what, seconds: None,
    ) -> None:
        self.name = name
        #: Whether the last append session ended well (section 9).
        self.complete: bool = file.complete
        self.read_size = read_size
        self._file = TrackedFile(file)
        self._fsync = fsync
        self._max_size = max_size
        self._on_session_end = on_session_end
        self._on_idle = on_idle
        self._clock = clock
        self._observe = observe
        self._out = FanOut(
            name,
            file.size,
            tail_size=tail_size,
            read_size=read_size,
            read=self._file.read,
            grew=self._tell_growth,
            detached=self._check_idle,
        )
        self._queue = WriteQueue(
            self._file.write,
            sync=fsync is FsyncPolicy.ALWAYS,
            limit=queue_size,
            written=self._written,
            failed=self._write_failed,
            clock=clock,
            observe=observe,
        )
        self._flush_waiters: list[tuple[int, Deferred[int]]] = []
        self._appending = Appending.NOBODY
        # The session's observer while HERE or FAILED, else None.
        self._appender: AppenderObserver | None = None
        # Why the session's write failed (FAILED); for lack of space?
        self._failed_why = ""
        self._no_space = False
        self._holds = 0

    def __repr__(self) -> str:
        return f"<Stream {'/'.join(self.name)} size={self.size}>"

    # -- state --------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many bytes the file holds, persisted."""
        return self._out.size

    @property
    def appending(self) -> Appending:
        """Who appends to the resource now."""
        return self._appending

    @property
    def active(self) -> bool:
        """Whether an appender holds the stream, here or elsewhere."""
        return self._appending is not Appending.NOBODY

    @property
    def state(self) -> ResourceState:
        """What a response says about the resource now."""
        return ResourceState(
            self.active, self._out.size, self.complete, self._out.following
        )

    @property
    def last_batch(self) -> bytes:
        """
        The last batch persisted (``b""`` if none yet): the very object every
        caught-up cursor sends, so what is done once for it is done for all.
        """
        return self._out.tail.last

    @property
    def followers(self) -> int:
        """How many cursors read the stream now."""
        return self._out.followers

    @property
    def behind(self) -> int:
        """How many cursors are behind the tail, reading the file."""
        return self._out.behind

    @property
    def fence(self) -> Callable[[], bool] | None:
        """What the session's writes ask first (`begin_session`), if anything."""
        return self._queue.fence

    @property
    def queue_full(self) -> bool:
        """Whether the appender should stop sending until `persisted`."""
        return self._queue.full

    @property
    def idle(self) -> bool:
        return not (
            self._holds
            or self._out.followers
            or self._appender is not None
            or self._queue.in_flight
        )

    def hold(self) -> None:
        """Keep the stream open until the matching `release`."""
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        self._check_idle()

    def _check_idle(self) -> None:
        if self.idle:
            self._on_idle(self)

    def close(self) -> Deferred[None]:
        """Close the file once the I/O queued on it is done (the registry, idle)."""
        return self._file.close()

    # -- the appender -------------------------------------------------------

    def begin_session(
        self, appender: AppenderObserver, fence: Callable[[], bool] | None = None
    ) -> None:
        """
        Give the appender slot to ``appender``.  ``fence``, if given, is
        asked before each of the session's writes whether it may still
        write (a shared lease, `coordination.ISlot.valid`); the session's
        end drops it.
        """
        if self._appender is not None:
            raise RuntimeError(f"{self!r} already has an appender")
        self._appender = appender
        self._appending = Appending.HERE
        self._queue.fence_with(fence)

    def mark(self, complete: bool) -> Deferred[None]:
        """
        Record durably whether the resource is complete: the stream's
        `complete` says so at once when it becomes incomplete (before the
        record is written), and only once written when it becomes complete.
        """
        if complete == self.complete:
            return succeed(None)  # already recorded so
        if not complete:
            self.complete = False
        sync = self._fsync is not FsyncPolicy.NEVER

        def marked(_: None) -> None:
            self.complete = complete

        return self._file.mark(complete, sync).addCallback(marked)

    def check_append(self, nbytes: int) -> None:
        """
        Raise what `append` would raise for ``nbytes`` bytes, without
        appending anything.
        """
        if self._appending is Appending.FAILED:
            raise self._failure()
        queued = self._out.size + self._queue.queued
        if self._max_size and queued + nbytes > self._max_size:
            raise ResourceFull(
                f"the resource would pass its maximum size of {self._max_size} bytes"
            )

    def append(self, data: bytes) -> None:
        """
        Queue ``data`` to be appended.  Bytes that arrive while a write is in
        flight are joined into the next write.

        :raises ResourceFull: the resource would pass its maximum size;
            nothing of ``data`` is appended.
        :raises WriteFailed: an earlier write of this session failed.
        """
        self.check_append(len(data))
        if data:
            self._queue.put(data)

    def flush(self) -> Deferred[int]:
        """
        Fire with the persisted size once every byte queued so far is
        persisted; fail with `WriteFailed` if a write fails first.
        """
        if self._appending is Appending.FAILED:
            return _failed(self._failure())
        size = self._out.size
        target = size + self._queue.queued
        if target == size:
            return succeed(size)
        d: Deferred[int] = Deferred()
        self._flush_waiters.append((target, d))
        return d

    def _written(self, batch: bytes) -> None:
        # The size grows first; the next write starts before the cursors
        # are woken, so the disk works while they send.
        self._out.grow(batch)
        self._queue.write_next()
        self._tell_growth()

    def _tell_growth(self) -> None:
        size = self._out.size
        waiters = [w for w in self._flush_waiters if w[0] <= size]
        self._flush_waiters = [w for w in self._flush_waiters if w[0] > size]
        if self._appender is not None:
            self._appender.persisted(size)
        self._out.wake()
        for _target, d in waiters:
            d.callback(size)
        self._check_idle()

    def _write_failed(self, reason: Failure, logged: bool) -> None:
        self._no_space = out_of_space(reason.value)
        if self._no_space:
            # Not a fault of ours: one line, not a traceback, and a count.
            self._observe("no-space", 0.0)
            _log.error(
                "no space left to append to {name} at {size} bytes: {why}",
                name="/".join(self.name),
                size=self.size,
                why=reason.getErrorMessage(),
            )
        elif logged:
            _log.failure(
                "writing {name} failed at {size} bytes",
                reason,
                name="/".join(self.name),
                size=self.size,
            )
        if self._appending is Appending.HERE:
            self._appending = Appending.FAILED
        self._failed_why = reason.getErrorMessage()
        waiters, self._flush_waiters = self._flush_waiters, []
        for _target, d in waiters:
            d.errback(self._failure())
        if self._appender is not None:
            self._appender.failed(reason)
        self._check_idle()

    def _failure(self) -> WriteFailed:
        return WriteFailed(self._failed_why, no_space=self._no_space)

    def end_session(self, follower_code: int, reason: str = "") -> Deferred[int]:
        """
        The appender is done.  Persist everything it sent (and sync, unless
        the policy is never), then release the slot and let every live
        cursor finish at the final size with ``follower_code``.

        Fires with the final persisted size.
        """
        return Deferred.fromCoroutine(self._end_session(follower_code, reason))

    async def _end_session(self, follower_code: int, reason: str) -> int:
        appender = self._appender
        with contextlib.suppress(WriteFailed):
            # A failed write was reported to the appender; what is
            # persisted stays.
            await self.flush()
        failed = self._appending is Appending.FAILED
        if self._fsync is not FsyncPolicy.NEVER and not failed:
            try:
                started = self._clock()
                await self._file.sync()
                self._observe("sync", self._clock() - started)
            except Exception:
                _log.failure("syncing {name} failed", name="/".join(self.name))
        if appender is not None and self._appender is appender:
            if follower_code == COMPLETE and self._appending is not Appending.FAILED:
                try:
                    await self.mark(True)
                except Exception:
                    _log.failure("recording {name} complete", name="/".join(self.name))
            self._appender = None
            self._appending = Appending.NOBODY
            self._queue.fence_with(None)
            self._on_session_end(self)
            self._out.end_at(self.size, follower_code, reason)
        self._check_idle()
        return self.size

    def shutdown(self) -> None:
        """
        The server is stopping: close every cursor with `GOING_AWAY` now and
        ask the appender to end its session.
        """
        self._out.abort(GOING_AWAY, "server shutting down")
        if self._appender is not None:
            self._appender.shutdown()

    # -- IGrowthListener: growth written by somebody else ---------------------

    def grown(self, size: int) -> None:
        """
        The file holds ``size`` persisted bytes written elsewhere (`FanOut.grown`);
        not while a session here appends: its final ack is its own bytes only.
        """
        if self._appending in (Appending.HERE, Appending.FAILED):
            return
        if size > self._out.size:
            self._file.learned(self._out.size)
        self._out.grown(size)

    def began(self) -> None:
        """An appender elsewhere holds the resource: followers stay live."""
        if self._appending is Appending.NOBODY:
            self._appending = Appending.ELSEWHERE
        self.complete = False

    def ended(
        self, size: int, code: int, reason: str, complete: bool | None = None
    ) -> None:
        """Every live cursor finishes at ``size`` with ``code``."""
        if self._appending in (Appending.HERE, Appending.FAILED):
            return  # a session here outranks news from elsewhere (`grown`)
        if self._appending is Appending.ELSEWHERE:
            self._appending = Appending.NOBODY
        if complete is not None:
            self.complete = complete
        self._out.end_at(size, code, reason)
        self._check_idle()

    # -- lines and times (section 13) ----------------------------------------

    def locate(self, lines: Lines) -> Deferred[Span]:
        """
        Where ``lines`` are in the persisted bytes now; fails with
        `PastTheEnd`.  Costs a binary search and a read of about one
        checkpoint, whatever the resource's size (and, the first time after
        a crash or a lost index, counting what the index missed).
        """
        return self._file.locate(lines, self._out.size, self._writes_derived)

    def line_at(self, offset: int) -> Deferred[int]:
        """The number of the line starting at ``offset`` (a line's start)."""
        return self._file.line_at(offset, self._writes_derived)

    def load_times(self) -> Deferred[None]:
        """Ready `time_of` (the batch times are read once)."""
        return self._file.load_derived()

    def time_of(self, offset: int) -> int:
        """When the byte at ``offset`` was persisted, in ms since the epoch."""
        return self._file.time_of(offset)

    @property
    def _writes_derived(self) -> bool:
        # Only the server whose writer appends (or any, when nobody does)
        # writes the counts it completes.
        return self._appending is not Appending.ELSEWHERE

    # -- readers ------------------------------------------------------------

    def follow(self, sink: IFollowerSink, offset: int) -> Cursor:
        """
        Start a cursor at ``offset`` that follows the stream while it has an
        appender, then ends with the session's code; on a stream with no
        appender it sends what there is and ends with `COMPLETE`.

        The cursor sends nothing until its first `Cursor.wake`: register it
        as the producer of the sink's transport first.
        """
        # Counted as a follower (Httpfstream-Followers) if it follows live.
        end = None if self.active else self.size
        return self._out.start(sink, offset, end, follows=self.active)

    def snapshot(self, sink: IFollowerSink, start: int, stop: int) -> Cursor:
        """
        A cursor that sends bytes ``start`` to ``stop`` and ends; like
        `follow`, it starts at its first `Cursor.wake`.
        """
        return self._out.start(sink, start, stop, follows=False)


def _failed(exc: Exception) -> Deferred[int]:
    d: Deferred[int] = Deferred()
    d.errback(exc)
    return d
