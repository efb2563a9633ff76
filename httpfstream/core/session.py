"""
`AppendSession`: one appender's hold on a resource, from the claimed slot
to its one ending.  WebSocket APPEND and POST both append through it.

The registry makes it (`StreamRegistry.begin_append`) with the slot taken
and the stream open; the protocol that drives it attaches as its
`listener` when it can (a WebSocket only after the 101).  It is the
stream's `stream.AppenderObserver`, keeps the session's record, tells the
growth feed what it persisted, and ends exactly once.

Endings, by the appender's close code (docs/PROTOCOL.md section 7)::

    end(COMPLETE)            clean close / POST done  -> followers 1000
    end(GOING_AWAY)          server stopping          -> followers 1001
    end(TOO_BIG | WRITE_FAILED, why)                  -> followers 4000
    end(None, why)           connection lost, or the
                             requester went away      -> followers 4000
    end(LEASE_LOST, why)     the slot (a shared lease)
                             could not be kept        -> followers 4000

With a shared slot (a lease, `coordination.ISlot`), the session hands the
stream the slot's `ISlot.valid` as its fence when it begins
(`Stream.begin_session`): the stream asks it before every write, the
store's writing thread again right before the bytes go to the file, and
the stream drops it when the session ends.  A slot that is lost ends the
session with `LEASE_LOST` at once.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..protocol import APPENDER_LOST, COMPLETE, GOING_AWAY, LEASE_LOST
from .coordination import IGrowthFeed, ISlot
from .names import Name
from .records import SessionRecord
from .stream import Stream
from .writes import AppenderObserver, Fenced, StorageUnavailable

__all__ = ["AppendSession", "SessionListener"]

_log = Logger()


class SessionListener(AppenderObserver, Protocol):
    """What the protocol driving a session hears (the WebSocket appender)."""

    def lease_lost(self, reason: str) -> None:
        """The slot was lost: end the session with `LEASE_LOST` now."""


class AppendSession:
    """
    One appender's session on ``stream``; see the module docstring.

    :param slot: the slot it holds; a shared one is asked before every
        write and may be lost (`coordination.ISlot`).
    :ivar listener: who hears of persisted bytes, failures and shutdown (the
        WebSocket protocol), once attached.
    :ivar shut_down: the server asked the session to end before a listener
        was attached.
    """

    def __init__(
        self,
        stream: Stream,
        record: SessionRecord,
        feed: IGrowthFeed,
        slot: ISlot | None = None,
    ) -> None:
        self.stream = stream
        self.record = record
        self.listener: SessionListener | None = None
        self.shut_down = False
        self._feed = feed
        self._counted = stream.size
        self._ending: Deferred[int] | None = None
        self._final: int | None = None
        self._waiters: list[Deferred[int]] = []
        self._lost_why: str | None = None
        stream.begin_session(self, fence=None if slot is None else slot.valid)
        if slot is not None:
            slot.when_lost(self._lost)

    @property
    def name(self) -> Name:
        return self.stream.name

    @property
    def size(self) -> int:
        """The persisted size now."""
        return self.stream.size

    @property
    def queue_full(self) -> bool:
        """Whether the appender should stop sending until bytes persist."""
        return self.stream.queue_full

    @property
    def ending(self) -> bool:
        """Whether `end` has been called."""
        return self._ending is not None

    def attach(self, listener: SessionListener) -> None:
        """Send news to ``listener`` from now on."""
        self.listener = listener
        if self.shut_down:
            listener.shutdown()
        elif self._lost_why is not None:
            listener.lease_lost(self._lost_why)

    def append(self, data: bytes) -> None:
        """
        Queue ``data``; see `Stream.append` for what it raises.
        """
        self.stream.append(data)

    def flush(self) -> Deferred[int]:
        """Fire with the size once everything queued so far is persisted."""
        return self.stream.flush()

    def end(
        self, code: int | None, reason: str = "", outcome: int | str | None = None
    ) -> Deferred[int]:
        """
        End the session: persist (and sync) what was sent, release the
        slot, finish the followers, log the record.  Fires with the final
        size.  ``code`` is the appender's close code (``None``: lost; a
        POST passes its error status); ``outcome``, if given, is what the
        record logs instead (a POST's 200).  Only the first call decides;
        later ones get the same size.
        """
        if self._ending is None:
            if code == COMPLETE:
                follower_code = COMPLETE
            elif code == GOING_AWAY:
                follower_code = GOING_AWAY
            else:
                follower_code = APPENDER_LOST
            # A lost appender's followers are told just that; the log says
            # how it was lost.
            told = "appender lost" if code is None else reason
            self._ending = self.stream.end_session(follower_code, told)
            logged = outcome if outcome is not None else code
            self._ending.addCallback(self._ended, logged, reason, follower_code)
        d: Deferred[int] = Deferred()
        if self._final is None:
            self._waiters.append(d)
        else:
            d.callback(self._final)
        return d

    def _ended(
        self, size: int, code: int | str | None, reason: str, follower_code: int
    ) -> None:
        self._final = size
        self._feed.ended(self.name, size, follower_code, reason)
        self.record.end("lost" if code is None else code, reason)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(size)

    def _lost(self, why: str) -> None:
        if self._ending is not None:
            return
        self._lost_why = why
        if self.listener is not None:
            self.listener.lease_lost(why)
        else:
            self.end(LEASE_LOST, why)

    # stream.AppenderObserver

    def persisted(self, size: int) -> None:
        self.record.add(size - self._counted)
        self._counted = size
        self._feed.grown(self.name, size)
        if self.listener is not None:
            self.listener.persisted(size)

    def failed(self, reason: Failure) -> None:
        error = reason.value
        if isinstance(error, Fenced) and error.at_write:
            self._refused_at_write(error)
        if self.listener is None:
            return
        if reason.check(Fenced, StorageUnavailable):
            # The slot refused the write: the lease is lost, whichever of
            # the fence and the lease's own news came first; or what the
            # bytes go to cannot be reached now (1013, try again, not 1011).
            self.listener.lease_lost(reason.getErrorMessage())
        else:
            self.listener.failed(reason)

    def _refused_at_write(self, error: Fenced) -> None:
        """
        The writing thread's fence said no after the reactor's had let the
        write go: the process (or its storage) stalled until the lease ran
        out.  Worth a line: that is the stall fencing exists for, and if it
        began just after the thread's own check, bytes may have landed
        after another server's (docs/SCALING.md).
        """
        name = "/".join(self.name)
        if error.late:
            _log.error(
                "{name}: the lease ran out while a write was made: its last"
                " {late} bytes may lie after bytes another server appended",
                name=name,
                late=error.late,
            )
        else:
            _log.warn(
                "{name}: the lease ran out between the reactor's check and the"
                " write; {written} bytes of that write reached the file",
                name=name,
                written=error.written,
            )

    def shutdown(self) -> None:
        self.shut_down = True
        if self.listener is not None:
            self.listener.shutdown()
