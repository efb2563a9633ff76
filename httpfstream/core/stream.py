"""
One live resource, and the cursors that read it.

A `Stream` owns the open file of one resource while anybody uses it: its
persisted size, the appender slot, the write queue and a bounded in-memory
tail of the most recent persisted bytes.  A `Cursor` is one reader: a byte
offset into the file and a sink (a WebSocket or an HTTP response) to send to.

Data flow::

    appender -> Stream.append -> queue -> one store write in flight
             -> size grows -> tail grows -> every cursor wakes
             -> each cursor sends what it has not sent yet, from the tail
                or, if it has fallen behind the tail, from the file

Nothing is shared between a cursor and the appender but the size, so a slow
reader costs the appender nothing, and a reader's memory is one read buffer.
Readers only ever see persisted bytes.

A cursor ends at an *end offset* with a close code.  A snapshot knows its end
from the start; a live follower learns it when the appender's session ends
(`COMPLETE` after a clean close, `APPENDER_LOST` otherwise).

Growth reaches the cursors through one door, `Stream.grown`: the stream's
own writes go through it, and so can growth written by somebody else (the
`coordination.IGrowthFeed` seam, for several processes on one root): the
stream implements `IGrowthListener`.

The file is closed only once every read and write the stream queued on it
has finished (`Stream.close`), so a descriptor is never closed, and perhaps
reused by another open, under a read still waiting in the store's threads.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..protocol import (
    APPENDER_LOST,
    COMPLETE,
    GOING_AWAY,
    READ_FAILED,
    TOO_BIG,
    WRITE_FAILED,
    ResourceState,
)
from .names import Name
from .store import IStoreFile

__all__ = [
    "APPENDER_LOST",
    "COMPLETE",
    "GOING_AWAY",
    "READ_FAILED",
    "TOO_BIG",
    "WRITE_FAILED",
    "AppenderObserver",
    "Cursor",
    "Fenced",
    "FsyncPolicy",
    "IFollowerSink",
    "IGrowthListener",
    "ResourceFull",
    "Stream",
    "Tail",
    "WriteFailed",
]

_log = Logger()
_T = TypeVar("_T")


class FsyncPolicy(enum.Enum):
    """When appended bytes are synced to the device."""

    #: Never; the operating system writes them back when it likes.
    NEVER = "never"
    #: When the appender's session ends (the default).
    CLOSE = "close"
    #: After every write, before the bytes count as persisted.
    ALWAYS = "always"


class ResourceFull(Exception):
    """
    Appending this would take the resource past its maximum size.

    :ivar state: the resource's state, where the raiser knows it.
    """

    state: ResourceState | None = None


class WriteFailed(Exception):
    """A write to the file failed; the session cannot append any more."""


class Fenced(WriteFailed):
    """
    A write refused before it reached the file: the session's slot (a shared
    lease) no longer lets it write.  Not an I/O error.
    """


class IFollowerSink(Interface):
    """Where a cursor sends its bytes: a WebSocket or an HTTP response."""

    def send(data: bytes) -> None:
        """Send the next bytes."""

    def finish(code: int, reason: str) -> None:
        """No more bytes will come; ``code`` says why (section 7)."""


class IGrowthListener(Interface):
    """
    What a stream is told of its resource's growth.  The stream's own writes
    tell it through the same two methods; a feed of growth written by
    another process (`coordination.IGrowthFeed`) would too.
    """

    def grown(size: int) -> None:
        """The file now holds ``size`` persisted bytes."""

    def began() -> None:
        """
        An appender holds the resource elsewhere (another process): the
        stream is live until `ended`.
        """

    def ended(size: int, code: int, reason: str, complete: bool | None = None) -> None:
        """
        The appender's session ended at ``size`` bytes; followers finish
        there with ``code``.  ``complete``, when given, is whether the
        resource is complete now (read from the shared root).
        """


class AppenderObserver(Protocol):
    """What the stream tells the holder of its appender slot."""

    def persisted(self, size: int) -> None:
        """A batch of writes reached the file; it now holds ``size`` bytes."""

    def failed(self, reason: Failure) -> None:
        """A write failed; nothing more can be appended in this session."""

    def shutdown(self) -> None:
        """The server is stopping: end the session with `GOING_AWAY`."""


@implementer(IPushProducer)
class Cursor:
    """
    One reader of a stream: sends the stream's bytes from ``offset`` to its
    sink as fast as the sink's transport takes them.

    Registered as a streaming producer on the sink's transport: while paused
    it sends nothing, and catches up (from the tail or the file) when
    resumed.  Create cursors with `Stream.follow` or `Stream.snapshot`.
    """

    def __init__(
        self,
        stream: Stream,
        sink: IFollowerSink,
        offset: int,
        end: int | None,
        code: int,
    ) -> None:
        self.offset = offset
        self._stream = stream
        self._sink = sink
        self._end = end
        self._code = code
        self._reason = ""
        self._paused = False
        self._reading = False
        self._pumping = False
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    # IPushProducer

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self.wake()

    def stopProducing(self) -> None:
        self.stop()

    # Called by the stream and the sink.

    def stop(self) -> None:
        """The sink went away: stop without sending anything more."""
        if not self._done:
            self._done = True
            self._stream._detach(self)

    def end_at(self, end: int, code: int, reason: str = "") -> None:
        """Finish with ``code`` once every byte before ``end`` is sent."""
        if self._end is None:
            self._end, self._code, self._reason = end, code, reason
            self.wake()

    def abort(self, code: int, reason: str) -> None:
        """Finish now with ``code``, whatever is left unsent."""
        if not self._done:
            self.stop()
            self._sink.finish(code, reason)

    def wake(self) -> None:
        """Send whatever is available and not sent yet."""
        if self._pumping:
            return
        self._pumping = True
        try:
            self._pump()
        finally:
            self._pumping = False

    def _pump(self) -> None:
        stream = self._stream
        while not (self._paused or self._reading or self._done):
            limit = stream.size if self._end is None else self._end
            if self.offset >= limit:
                if self._end is not None:
                    self._done = True
                    stream._detach(self)
                    self._sink.finish(self._code, self._reason)
                return
            want = min(limit - self.offset, stream.read_size)
            data = stream.recent(self.offset, want)
            if data is None:
                self._reading = True
                stream.read_file(self.offset, want).addCallbacks(
                    self._read_done, self._read_failed
                )
                if self._reading:
                    return  # _read_done carries on
                continue  # the read completed at once
            self.offset += len(data)
            self._sink.send(data)

    def _read_done(self, data: bytes) -> None:
        self._reading = False
        if self._done:
            return
        if not data:
            # The file is shorter than its persisted size: it was truncated
            # or replaced behind the server's back.
            self.abort(READ_FAILED, "resource file shrank on disk")
            return
        self.offset += len(data)
        self._sink.send(data)
        self.wake()

    def _read_failed(self, reason: Failure) -> None:
        self._reading = False
        _log.failure("reading {name} failed", reason, name="/".join(self._stream.name))
        self.abort(READ_FAILED, "reading the resource failed")


#: The most bytes of small batches the tail joins into one.
MERGE = 16 << 10


class Tail:
    """
    The most recent persisted bytes of a stream, kept as the batches that
    were written (not copied into one buffer): at least ``size`` bytes,
    and always the whole last batch, however big the appender's queue let
    it grow, so a cursor that was caught up never falls behind the tail to
    the file just because one write was bigger than the tail.

    Small batches are joined once they are no longer the last (up to
    `MERGE` bytes), so many tiny writes stay a few objects.

    `read` gives a cursor that asks from the start of the last batch that
    batch itself: every caught-up cursor gets the very same bytes object,
    so the bytes are copied, and framed (`followers`), once for all.

    :param start: the offset of the first byte it will hold.
    :param size: how many bytes to keep, at least.
    """

    def __init__(self, start: int, size: int) -> None:
        self._size = size
        self.reset(start)

    def reset(self, start: int) -> None:
        """Hold nothing; the next batch starts at ``start``."""
        self.start = self.end = start
        self._chunks: list[bytes] = []
        self._starts: list[int] = []
        # The chunks before this index were dropped (compacted now and then).
        self._first = 0

    def add(self, batch: bytes) -> None:
        """``batch`` was written at `end`."""
        chunks, starts, first = self._chunks, self._starts, self._first
        # Small batches that are no longer the last are joined, up to
        # MERGE bytes: a tail of a million one-byte writes would cost a
        # Python object each, and a read across it a piece each.
        if len(chunks) - first >= 2 and len(chunks[-2]) + len(chunks[-1]) <= MERGE:
            last = chunks.pop()
            starts.pop()
            chunks[-1] += last
        chunks.append(batch)
        starts.append(self.end)
        self.end += len(batch)
        # Drop the oldest batch while the rest still make ``size`` bytes.
        while first + 1 < len(chunks) and self.end - starts[first + 1] >= self._size:
            chunks[first] = b""  # its bytes are freed now, its slot later
            first += 1
        self.start = starts[first]
        if first > 64 and first * 2 > len(chunks):
            del chunks[:first], starts[:first]
            first = 0
        self._first = first

    def read(self, offset: int, length: int) -> bytes | None:
        """
        At most ``length`` bytes from ``offset``, or ``None`` if they are
        no longer (or not yet) held.
        """
        if not self.start <= offset < self.end:
            return None
        starts, chunks = self._starts, self._chunks
        if offset == starts[-1] and len(chunks[-1]) <= length:
            return chunks[-1]  # a caught-up cursor: the commonest read
        i = bisect.bisect_right(starts, offset, self._first) - 1
        chunk, skip = chunks[i], offset - starts[i]
        whole = not skip and len(chunk) <= length
        if whole and (i + 1 == len(chunks) or len(chunk) == length):
            return chunk  # the same object for every cursor that asks
        pieces: list[memoryview] = []
        wanted = length
        while wanted and i < len(chunks):
            piece = memoryview(chunks[i])[skip : skip + wanted]
            pieces.append(piece)
            wanted -= len(piece)
            i, skip = i + 1, 0
        return b"".join(pieces)


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
    :param queue_size: queued bytes past which `queue_full` says to pause
        the appender.
    :param read_size: the most bytes a cursor sends at once.
    :param on_session_end: called when the appender slot is released.
    :param on_idle: called when nothing uses the stream any more.
    :param on_cursors: called with +1 or -1 as a cursor starts or ends.
    :param clock: the time now, in seconds, for timing I/O.
    :param observe: told how long each write (``"write"``, from queued to
        persisted) and each sync (``"sync"``) took.
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
        on_cursors: Callable[[int], None] = lambda n: None,
        clock: Callable[[], float] = lambda: 0.0,
        observe: Callable[[str, float], None] = lambda what, seconds: None,
    ) -> None:
        self.name = name
        self.size: int = file.size
        #: Whether the last append session ended well (section 9).
        self.complete: bool = file.complete
        self.read_size = read_size
        self._file = file
        self._fsync = fsync
        self._max_size = max_size
        self._tail_size = tail_size
        self._queue_size = queue_size
        self._on_session_end = on_session_end
        self._on_idle = on_idle
        self._on_cursors = on_cursors
        self._clock = clock
        self._observe = observe

        self._tail = Tail(self.size, tail_size)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._in_flight = 0
        self._flush_waiters: list[tuple[int, Deferred[int]]] = []
        self._appender: AppenderObserver | None = None
        # An appender holds the resource in another process (told by the
        # growth feed: `began` until `ended`).
        self._remote = False
        # Growth written elsewhere being read into the tail: the size it
        # reaches, and whether that read is under way.
        self._remote_target = 0
        self._catching_up = False
        #: Asked before every write while set: whether the appender still
        #: holds its slot (a lease that ran out stops every write).
        self.fence: Callable[[], bool] | None = None
        self._failure: Failure | None = None
        self._cursors: set[Cursor] = set()
        self._holds = 0
        # Reads, writes and syncs queued on the file and not yet finished;
        # the file is closed only once there are none.
        self._io = 0
        self._io_done: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<Stream {'/'.join(self.name)} size={self.size}>"

    # -- state --------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether an appender holds the stream, here or elsewhere."""
        return self._appender is not None or self._remote

    @property
    def state(self) -> ResourceState:
        """What a response says about the resource now."""
        return ResourceState(self.active, self.size, self.complete)

    @property
    def followers(self) -> int:
        """How many cursors read the stream now."""
        return len(self._cursors)

    @property
    def behind(self) -> int:
        """How many cursors are behind the tail, reading the file."""
        return sum(1 for cursor in self._cursors if cursor.offset < self._tail.start)

    @property
    def queue_full(self) -> bool:
        """Whether the appender should stop sending until `persisted`."""
        return self._pending_bytes >= self._queue_size

    @property
    def idle(self) -> bool:
        return not (self._holds or self._cursors or self._appender or self._in_flight)

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
        """
        Close the file once every read, write and sync queued on it has
        finished.  Only the registry calls this, once idle.
        """

        async def close() -> None:
            while self._io:
                done: Deferred[None] = Deferred()
                self._io_done.append(done)
                await done
            await self._file.close()

        return Deferred.fromCoroutine(close())

    def _track(self, d: Deferred[_T]) -> Deferred[_T]:
        """Count ``d`` as I/O on the file until it fires."""
        self._io += 1

        def finished(result: _T | Failure) -> _T | Failure:
            self._io -= 1
            if not self._io:
                waiting, self._io_done = self._io_done, []
                for w in waiting:
                    w.callback(None)
            return result

        return d.addBoth(finished)

    # -- the appender -------------------------------------------------------

    def begin_session(self, appender: AppenderObserver) -> None:
        """Give the appender slot to ``appender``."""
        if self._appender is not None:
            raise RuntimeError(f"{self!r} already has an appender")
        self._appender = appender
        self._failure = None

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

        return self._track(self._file.mark(complete, sync)).addCallback(marked)

    def check_append(self, nbytes: int) -> None:
        """
        Raise what `append` would raise for ``nbytes`` bytes, without
        appending anything.
        """
        if self._failure is not None:
            raise WriteFailed(self._failure.getErrorMessage())
        queued = self.size + self._in_flight + self._pending_bytes
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
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._write_next()

    def flush(self) -> Deferred[int]:
        """
        Fire with the persisted size once every byte queued so far is
        persisted; fail with `WriteFailed` if a write fails first.
        """
        if self._failure is not None:
            return _failed(WriteFailed(self._failure.getErrorMessage()))
        target = self.size + self._in_flight + self._pending_bytes
        if target == self.size:
            return succeed(self.size)
        d: Deferred[int] = Deferred()
        self._flush_waiters.append((target, d))
        return d

    def _write_next(self) -> None:
        if self._in_flight or not self._pending:
            return
        if self.fence is not None and not self.fence():
            # Not an I/O error: the session is being ended for it already.
            lost = Failure(Fenced("the appender's lease was lost"))
            self._write_failed(lost, logged=False)
            return
        batch = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._pending_bytes = 0
        self._in_flight = len(batch)
        d = self._track(self._file.write(batch, self._fsync is FsyncPolicy.ALWAYS))
        d.addCallbacks(
            self._written, self._write_failed, callbackArgs=(batch, self._clock())
        )

    def _written(self, _: None, batch: bytes, started: float) -> None:
        self._observe("write", self._clock() - started)
        self._in_flight = 0
        self._grow(batch)
        self._write_next()
        self._tell_growth()

    def _grow(self, batch: bytes) -> None:
        """The file now holds ``batch`` too; the tail takes it."""
        self._tail.add(batch)
        self.size += len(batch)

    def _tell_growth(self) -> None:
        size = self.size
        waiters = [w for w in self._flush_waiters if w[0] <= size]
        self._flush_waiters = [w for w in self._flush_waiters if w[0] > size]
        if self._appender is not None:
            self._appender.persisted(size)
        for cursor in list(self._cursors):
            cursor.wake()
        for _target, d in waiters:
            d.callback(size)
        self._check_idle()

    # IGrowthListener: what the stream's own writes do above, for growth
    # written by somebody else.

    def grown(self, size: int) -> None:
        """
        The file holds ``size`` persisted bytes, written elsewhere.  The new
        bytes are read from the file once, into the tail, for every cursor;
        more than the tail holds, and the tail starts again at ``size`` (the
        cursors read what they lack from the file).
        """
        if size <= max(self.size, self._remote_target):
            return
        if size - self.size > self._tail_size:
            self._jump(size)
            return
        self._remote_target = size
        self._catch_up()

    def _jump(self, size: int) -> None:
        """The size is ``size`` now; the tail starts again there."""
        if size <= self.size:
            return
        self._tail.reset(size)
        self.size = size
        self._tell_growth()

    def _catch_up(self) -> None:
        start, stop = self.size, self._remote_target
        if self._catching_up or stop <= start:
            return
        self._catching_up = True

        def read(data: bytes) -> None:
            self._catching_up = False
            if self.size == start:
                if len(data) == stop - start:
                    self._grow(data)
                    self._tell_growth()
                else:  # the file does not show it yet: the cursors will
                    self._jump(stop)
            self._catch_up()

        def failed(reason: Failure) -> None:
            self._catching_up = False
            self._jump(stop)

        d = self._track(self._file.read(start, stop - start))
        d.addCallbacks(read, failed)

    def began(self) -> None:
        """An appender elsewhere holds the resource: followers stay live."""
        self._remote = True
        self.complete = False

    def ended(
        self, size: int, code: int, reason: str, complete: bool | None = None
    ) -> None:
        """Every live cursor finishes at ``size`` with ``code``."""
        self._remote = False
        if complete is not None:
            self.complete = complete
        # At once: the cursors are told to end there.
        self._jump(size)
        for cursor in list(self._cursors):
            cursor.end_at(size, code, reason)
        self._check_idle()

    def _write_failed(self, reason: Failure, logged: bool = True) -> None:
        if logged:
            _log.failure(
                "writing {name} failed at {size} bytes",
                reason,
                name="/".join(self.name),
                size=self.size,
            )
        self._in_flight = 0
        self._pending = []
        self._pending_bytes = 0
        self._failure = reason
        waiters, self._flush_waiters = self._flush_waiters, []
        for _target, d in waiters:
            d.errback(WriteFailed(reason.getErrorMessage()))
        if self._appender is not None:
            self._appender.failed(reason)
        self._check_idle()

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
        if self._fsync is not FsyncPolicy.NEVER and self._failure is None:
            try:
                started = self._clock()
                await self._track(self._file.sync())
                self._observe("sync", self._clock() - started)
            except Exception:
                _log.failure("syncing {name} failed", name="/".join(self.name))
        if appender is not None and self._appender is appender:
            if follower_code == COMPLETE and self._failure is None:
                try:
                    await self.mark(True)
                except Exception:
                    _log.failure("recording {name} complete", name="/".join(self.name))
            self._appender = None
            self._on_session_end(self)
            self.ended(self.size, follower_code, reason)
        self._check_idle()
        return self.size

    def shutdown(self) -> None:
        """
        The server is stopping: close every cursor with `GOING_AWAY` now and
        ask the appender to end its session.
        """
        for cursor in list(self._cursors):
            cursor.abort(GOING_AWAY, "server shutting down")
        if self._appender is not None:
            self._appender.shutdown()

    # -- readers ------------------------------------------------------------

    def follow(self, sink: IFollowerSink, offset: int) -> Cursor:
        """
        Start a cursor at ``offset`` that follows the stream while it has an
        appender, then ends with the session's code; on a stream with no
        appender it sends what there is and ends with `COMPLETE`.

        The cursor sends nothing until its first `Cursor.wake`: register it
        as the producer of the sink's transport first.
        """
        end = None if self.active else self.size
        return self._start(Cursor(self, sink, offset, end, COMPLETE))

    def snapshot(self, sink: IFollowerSink, start: int, stop: int) -> Cursor:
        """
        A cursor that sends bytes ``start`` to ``stop`` and ends; like
        `follow`, it starts at its first `Cursor.wake`.
        """
        return self._start(Cursor(self, sink, start, stop, COMPLETE))

    def _start(self, cursor: Cursor) -> Cursor:
        self._cursors.add(cursor)
        self._on_cursors(1)
        return cursor

    def _detach(self, cursor: Cursor) -> None:
        if cursor in self._cursors:
            self._cursors.discard(cursor)
            self._on_cursors(-1)
        self._check_idle()

    def recent(self, offset: int, length: int) -> bytes | None:
        """
        The persisted bytes at ``offset`` (at most ``length``) if they are
        still in the in-memory tail, else ``None``.
        """
        return self._tail.read(offset, length)

    def read_file(self, offset: int, length: int) -> Deferred[bytes]:
        """Read persisted bytes from the file."""
        return self._track(self._file.read(offset, min(length, self.size - offset)))


def _failed(exc: Exception) -> Deferred[int]:
    d: Deferred[int] = Deferred()
    d.errback(exc)
    return d
