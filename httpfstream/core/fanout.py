"""
`FanOut`: the persisted bytes of one resource on their way to its readers.
It holds the persisted size, the in-memory tail of recent batches
(`tail.Tail`) and the cursors (`cursor.Cursor`), and it is what each cursor
reads (its `cursor.Source`).

Its stream grows it: with the stream's own writes (`grow`, then `wake`),
and with growth written by another process (`grown`), whose new bytes are
read from the file once, into the tail, for every cursor.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..protocol import COMPLETE
from .cursor import Cursor, IFollowerSink
from .names import Name
from .tail import Tail

__all__ = ["FanOut"]


class FanOut:
    """
    The persisted size, tail and cursors of one resource.

    :param size: the persisted size now.
    :param tail_size: how many recent bytes the tail keeps, at least.
    :param read_size: the most bytes a cursor sends at once.
    :param read: reads the file.
    :param grew: called once growth from elsewhere (`grown`, `jump`) is
        taken: the stream tells its cursors and its appender.
    :param detached: called when a cursor is done.
    """

    def __init__(
        self,
        name: Name,
        size: int,
        *,
        tail_size: int,
        read_size: int,
        read: Callable[[int, int], Deferred[bytes]],
        grew: Callable[[], None],
        detached: Callable[[], None],
    ) -> None:
        self.name = name
        self.size = size
        self.read_size = read_size
        self.tail = Tail(size, tail_size)
        self._tail_size = tail_size
        self._read = read
        self._grew = grew
        self._detached = detached
        self._cursors: set[Cursor] = set()
        # The cursors that follow (not snapshots), for Httpfstream-Followers.
        self._following: set[Cursor] = set()
        # Growth written elsewhere being read into the tail: the size it
        # reaches, and whether that read is under way.
        self._remote_target = 0
        self._catching_up = False

    @property
    def followers(self) -> int:
        """How many cursors read now."""
        return len(self._cursors)

    @property
    def following(self) -> int:
        """How many of the cursors follow (snapshots aside)."""
        return len(self._following)

    @property
    def behind(self) -> int:
        """How many cursors are behind the tail, reading the file."""
        return sum(1 for cursor in self._cursors if cursor.offset < self.tail.start)

    # -- cursors ------------------------------------------------------------

    def start(
        self, sink: IFollowerSink, offset: int, end: int | None, follows: bool
    ) -> Cursor:
        """
        A new cursor from ``offset``, ending at ``end`` with `COMPLETE`;
        ``follows``: a follower's, not a snapshot's.
        """
        cursor = Cursor(self, sink, offset, end, COMPLETE)
        self._cursors.add(cursor)
        if follows:
            self._following.add(cursor)
        return cursor

    def detach(self, cursor: Cursor) -> None:
        """``cursor`` is done (it says so itself): it reads no more."""
        self._cursors.discard(cursor)
        self._following.discard(cursor)
        self._detached()

    def read_file(self, offset: int, length: int) -> Deferred[bytes]:
        """Read persisted bytes from the file."""
        return self._read(offset, min(length, self.size - offset))

    def wake(self) -> None:
        """Every cursor sends what it can."""
        for cursor in list(self._cursors):
            cursor.wake()

    def end_at(self, size: int, code: int, reason: str) -> None:
        """Every live cursor finishes at ``size`` with ``code``."""
        # At once: the cursors are told to end there.
        self.jump(size)
        for cursor in list(self._cursors):
            cursor.end_at(size, code, reason)

    def abort(self, code: int, reason: str) -> None:
        """Every cursor finishes now with ``code``."""
        for cursor in list(self._cursors):
            cursor.abort(code, reason)

    # -- growth ---------------------------------------------------------------

    def grow(self, batch: bytes) -> None:
        """The file now holds ``batch`` too; the tail takes it."""
        self.tail.add(batch)
        self.size += len(batch)

    def jump(self, size: int) -> None:
        """The size is ``size`` now (if that is more); the tail starts again there."""
        if size <= self.size:
            return
        self.tail.reset(size)
        self.size = size
        self._grew()

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
            self.jump(size)
            return
        self._remote_target = size
        self._catch_up()

    def _catch_up(self) -> None:
        start, stop = self.size, self._remote_target
        if self._catching_up or stop <= start:
            return
        self._catching_up = True

        def read(data: bytes) -> None:
            self._catching_up = False
            if self.size == start:
                if len(data) == stop - start:
                    self.grow(data)
                    self._grew()
                else:  # the file does not show it yet: the cursors will
                    self.jump(stop)
            self._catch_up()

        def failed(reason: Failure) -> None:
            self._catching_up = False
            self.jump(stop)

        self._read(start, stop - start).addCallbacks(read, failed)
