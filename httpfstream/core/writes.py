"""
The appender's side of a stream: who appends (`Appending`, the stream's
state), `WriteQueue`, which takes appended bytes into the file one write at
a time, the fsync policy, what appending can fail with, and
`AppenderObserver`, what the holder of the appender slot is told.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..protocol import ResourceState

__all__ = [
    "AppenderObserver",
    "Appending",
    "Fenced",
    "FsyncPolicy",
    "ResourceFull",
    "StorageUnavailable",
    "WriteFailed",
    "WriteQueue",
    "out_of_space",
]


#: What a write fails with when the storage has no room for it: no space
#: left, a quota, or a file size limit (``RLIMIT_FSIZE``).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def out_of_space(error: BaseException | None) -> bool:
    """Whether ``error`` says the storage had no room for a write."""
    if isinstance(error, WriteFailed):
        return error.no_space
    return isinstance(error, OSError) and error.errno in _NO_SPACE


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
    """
    A write to the file failed; the session cannot append any more.

    :ivar no_space: whether the storage had no room for it
        (`out_of_space`).
    """

    def __init__(self, message: str, *, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space


class StorageUnavailable(WriteFailed):
    """
    What the bytes go to cannot take them now (Redis unreachable, in the
    stateless mode): not a fault of ours, worth trying again later, and
    said in one line by what raised it (no traceback).
    """


class Fenced(WriteFailed):
    """
    A write refused before it reached the file: the session's slot (a shared
    lease) no longer lets it write.  Not an I/O error.
    """


class AppenderObserver(Protocol):
    """What the stream tells the holder of its appender slot."""

    def persisted(self, size: int) -> None:
        """A batch of writes reached the file; it now holds ``size`` bytes."""

    def failed(self, reason: Failure) -> None:
        """A write failed; nothing more can be appended in this session."""

    def shutdown(self) -> None:
        """The server is stopping: end the session with `GOING_AWAY`."""


class Appending(enum.Enum):
    """
    Who appends to a stream's resource.  A stream is `Stream.active` in
    every state but `NOBODY`.  Transitions::

        NOBODY    -- begin_session -->  HERE
        ELSEWHERE -- begin_session -->  HERE
        HERE      -- a write fails -->  FAILED
        HERE, FAILED -- end_session --> NOBODY   (once the slot is released)
        NOBODY    -- began         -->  ELSEWHERE
        ELSEWHERE -- ended         -->  NOBODY

    A session here outranks news from elsewhere: `began` and `ended` leave
    `HERE` and `FAILED` as they are.
    """

    #: No appender: followers get what there is and finish.
    NOBODY = "nobody"
    #: A session in this process holds the slot; its bytes are written.
    HERE = "here"
    #: That session's write failed: nothing more is written in it.
    FAILED = "failed"
    #: An appender in another process holds the resource.
    ELSEWHERE = "elsewhere"


class WriteQueue:
    """
    Appended bytes on their way into the file.  At most one write is in
    flight, which keeps appends in order (writes to one file from several
    of the store's threads would reorder them); bytes that arrive meanwhile
    are joined into the next write.  While a fence is set (`fence_with`),
    it is asked before every write: a slot that no longer holds stops them.

    :param write: writes a batch to the file, synced if told so.
    :param sync: whether each write is synced (`FsyncPolicy.ALWAYS`).
    :param limit: pending bytes past which `full` says to pause.
    :param written: told each batch once it is in the file; the next write
        starts when it calls `write_next`.
    :param failed: told why a write failed, and whether that is worth a
        log line (a fence's refusal is not), once nothing is queued.
    :param clock: the time now, in seconds.
    :param observe: told how long each write took, from queued to written.
    """

    def __init__(
        self,
        write: Callable[[bytes, bool], Deferred[None]],
        *,
        sync: bool,
        limit: int,
        written: Callable[[bytes], None],
        failed: Callable[[Failure, bool], None],
        clock: Callable[[], float],
        observe: Callable[[str, float], None],
    ) -> None:
        self._write = write
        self._sync = sync
        self._limit = limit
        self._written = written
        self._failed = failed
        self._clock = clock
        self._observe = observe
        self._batches: list[bytes] = []
        #: Bytes waiting for the next write.
        self.pending = 0
        #: Bytes of the write in flight (0: none).
        self.in_flight = 0
        self._fence: Callable[[], bool] | None = None

    @property
    def queued(self) -> int:
        """Bytes taken and not yet in the file."""
        return self.in_flight + self.pending

    @property
    def full(self) -> bool:
        """Whether the appender should stop sending for now."""
        return self.pending >= self._limit

    @property
    def fence(self) -> Callable[[], bool] | None:
        """Asked before every write while set: may the appender still write?"""
        return self._fence

    def fence_with(self, fence: Callable[[], bool] | None) -> None:
        """Ask ``fence`` before every write from now on (``None``: nothing)."""
        self._fence = fence

    def put(self, data: bytes) -> None:
        """Queue ``data`` (not empty) behind everything queued so far."""
        self._batches.append(data)
        self.pending += len(data)
        self.write_next()

    def write_next(self) -> None:
        """Start the next write, unless one is in flight or none is queued."""
        if self.in_flight or not self._batches:
            return
        if self._fence is not None and not self._fence():
            # Not an I/O error: the session is being ended for it already.
            self._fail(Failure(Fenced("the appender's lease was lost")), False)
            return
        batches = self._batches
        batch = batches[0] if len(batches) == 1 else b"".join(batches)
        self._batches = []
        self.pending = 0
        self.in_flight = len(batch)
        self._write(batch, self._sync).addCallbacks(
            self._done, self._broke, callbackArgs=(batch, self._clock())
        )

    def _done(self, _: None, batch: bytes, started: float) -> None:
        self._observe("write", self._clock() - started)
        self.in_flight = 0
        self._written(batch)

    def _broke(self, reason: Failure) -> None:
        # Storage that cannot be reached has said so in its own line.
        self._fail(reason, not reason.check(StorageUnavailable))

    def _fail(self, reason: Failure, logged: bool = True) -> None:
        self.in_flight = 0
        self._batches = []
        self.pending = 0
        self._failed(reason, logged)
