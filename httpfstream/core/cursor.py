"""
`Cursor`: one reader of a stream, a byte offset into its file and a sink (a
WebSocket or an HTTP response) to send to.

A cursor only ever sends persisted bytes: from the stream's in-memory tail
(`tail.Tail`) while it holds them, else from the file.  It ends at an *end
offset* with a close code: a snapshot knows its end from the start; a live
follower learns it when the appender's session ends (`COMPLETE` after a
clean close, `APPENDER_LOST` otherwise).

What a cursor needs of its stream is `Source`: the persisted size, the
tail, reads of the file, and a way to say it is done.  `stream.Stream` is
one; this module knows nothing else of it.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..protocol import READ_FAILED
from .names import Name
from .tail import Tail

__all__ = ["Cursor", "IFollowerSink", "Source"]

_log = Logger()


class IFollowerSink(Interface):
    """Where a cursor sends its bytes: a WebSocket or an HTTP response."""

    def send(data: bytes) -> None:
        """Send the next bytes."""

    def finish(code: int, reason: str) -> None:
        """No more bytes will come; ``code`` says why (section 7)."""


class Source(Protocol):
    """What a cursor reads (`stream.Stream`)."""

    @property
    def name(self) -> Name:
        """The resource's name, for the log."""

    @property
    def size(self) -> int:
        """How many bytes the file holds, persisted."""

    @property
    def read_size(self) -> int:
        """The most bytes a cursor sends at once."""

    @property
    def tail(self) -> Tail:
        """The most recent persisted bytes, in memory (always this object)."""

    def read_file(self, offset: int, length: int) -> Deferred[bytes]:
        """Read persisted bytes from the file."""

    def detach(self, cursor: Cursor) -> None:
        """``cursor`` is done: it reads no more."""


@implementer(IPushProducer)
class Cursor:
    """
    One reader of a stream: sends the stream's bytes from ``offset`` to its
    sink as fast as the sink's transport takes them.

    Registered as a streaming producer on the sink's transport: while paused
    it sends nothing, and catches up (from the tail or the file) when
    resumed.  Create cursors with `Stream.follow` or `Stream.snapshot`.

    :param source: the stream it reads.
    :param end: where it finishes, if known now (else `end_at` says).
    :param code: the close code it finishes with at ``end``.
    """

    def __init__(
        self,
        source: Source,
        sink: IFollowerSink,
        offset: int,
        end: int | None,
        code: int,
    ) -> None:
        self.offset = offset
        self._source = source
        # Bound once: the tail is read on every turn of `_pump`.
        self._recent = source.tail.read
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
            self._source.detach(self)

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
        source, recent = self._source, self._recent
        while not (self._paused or self._reading or self._done):
            limit = source.size if self._end is None else self._end
            if self.offset >= limit:
                if self._end is not None:
                    self._done = True
                    source.detach(self)
                    self._sink.finish(self._code, self._reason)
                return
            want = min(limit - self.offset, source.read_size)
            data = recent(self.offset, want)
            if data is None:
                self._reading = True
                source.read_file(self.offset, want).addCallbacks(
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
        _log.failure("reading {name} failed", reason, name="/".join(self._source.name))
        self.abort(READ_FAILED, "reading the resource failed")
