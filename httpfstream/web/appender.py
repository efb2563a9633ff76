"""
The WebSocket appender (docs/PROTOCOL.md section 3): an Autobahn protocol that
drives one `session.AppendSession`.

The resource has claimed the slot and begun the session before the 101;
this protocol owns it from `handoff.Handoff.upgrade` on, and ends it
exactly once.  Its phases (Autobahn keeps the WebSocket's own `state`)::

    CONNECTING --onOpen-----------------------------> OPEN
    CONNECTING --connection lost--------------------> DONE  end(lost)
    OPEN  --message--> OPEN: Stream.append; queue past its mark -> pause
                       reading the socket; a batch persisted -> resume,
                       and with ack=1 send the size as text
    OPEN  --peer's Close----------------------------> CLOSING
          stop reading; end(1000): persist (+ sync), record complete,
          release the slot, finish followers with 1000, final ack.  A
          Close with another code (an interrupted client) ends the
          session as interrupted instead: persisted, not complete,
          followers 4000
    CLOSING --session ended--> DONE: answer the Close (1000)
    OPEN  --message over the limit: Autobahn closes with 1009 itself
    OPEN  --resource over its limit (nothing of that message appended),
            a write failed, the server stopping, or (shared mode) the
            lease lost--> ENDING
          end(1009 | 1011 | 1001 | 1013): persist what came before, release
    ENDING  --session ended--> DONE: our Close (1009, 1011, 1001 or 1013)
    ENDING  --peer's Close crosses ours--> answered after ours is sent
    OPEN  --connection lost-------------------------> DONE  end(lost):
          persist what arrived, release; followers get 4000.  With
          ``fin_ends_appender``, an orderly TCP close (FIN, no Close frame)
          ends it as a clean close instead: end(1000)
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..core.session import AppendSession
from ..core.stream import ResourceFull, WriteFailed
from ..protocol import COMPLETE, GOING_AWAY, LEASE_LOST, TOO_BIG, WRITE_FAILED
from .handoff import HandedProtocol

__all__ = ["AppenderProtocol", "Appending", "Phase"]

#: The most bytes read from an appender's socket at once (see `_fit_reads`).
MAX_READ = 1 << 20
#: Twisted's read size, and the most bytes handed to Autobahn's parser at
#: once (see `dataReceived`).
PARSE = 64 << 10


@dataclass(frozen=True)
class Appending:
    """
    What the resource hands the protocol: the session, ``ack=1``, and
    whether a FIN without a Close ends it cleanly (`WebSocketOptions`).
    """

    session: AppendSession
    ack: bool
    fin_ends_appender: bool = False


class Phase(enum.Enum):
    """Where the appender's session is; see the module docstring."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    ENDING = "ending"
    DONE = "done"


class AppenderProtocol(HandedProtocol[Appending]):
    """The one appender of a stream (see the module docstring)."""

    # Autobahn owns ``log``.
    _log = Logger()
    phase: Phase = Phase.CONNECTING
    _reading_paused = False
    _fin = False
    #: The sizes of the last messages, while any of them was big.
    _recent: deque[int]

    #: Fires once a session we end with an error code has ended.
    _ended: Deferred[None] | None = None

    @property
    def _session(self) -> AppendSession:
        return self.session.session

    def onOpen(self) -> None:
        self.phase = Phase.OPEN
        self._recent = deque(maxlen=8)
        self._session.attach(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.phase is not Phase.OPEN:
            return
        try:
            self._session.append(payload)
        except ResourceFull as e:
            self._end(TOO_BIG, str(e))
            return
        except WriteFailed as e:
            self._end(WRITE_FAILED, f"write failed: {e}")
            return
        if self._session.queue_full:
            self._pause_reading()
        if len(payload) > PARSE // 8 or self._recent:
            self._fit_reads(len(payload))

    def _fit_reads(self, message: int) -> None:
        """
        Size the socket's reads for the smallest of the last eight messages:
        eight of them at once, between 64 KiB and `MAX_READ`.

        Every read costs a reactor turn, a write to the file and a wake of
        the followers: for 64 KiB messages at full speed, reading one at a
        time held the appender to about 300 MB/s on one core, eight at a
        time it goes past 400 (docs/PERFORMANCE.md).  Small messages keep
        64 KiB reads, so no read allocates a megabyte for a few bytes.
        """
        recent = self._recent
        recent.append(message)
        wanted = PARSE
        if len(recent) == recent.maxlen:
            wanted = max(PARSE, min(MAX_READ, 8 * min(recent)))
        if wanted == PARSE and message <= PARSE // 8:
            recent.clear()  # back to small messages: nothing to watch
        # Only a TCP transport reads bufferSize at a time (TLS, through a
        # protocol wrapper, reads 64 KiB whatever this says).
        if isinstance(self._socket, tcp.Connection):
            self._socket.bufferSize = wanted

    def dataReceived(self, data: bytes) -> None:
        """
        Hand Autobahn a big read 64 KiB at a time: after every frame it
        copies what is left of its buffer, so a megabyte of tiny frames in
        one piece would cost it far more than sixteen pieces do.
        """
        if len(data) <= PARSE:
            super().dataReceived(data)
            return
        view = memoryview(data)
        for start in range(0, len(data), PARSE):
            super().dataReceived(bytes(view[start : start + PARSE]))

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self._socket.pauseProducing()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._socket.resumeProducing()

    # stream.AppenderObserver, through the session.

    def persisted(self, size: int) -> None:
        if self.phase is Phase.OPEN and not self._session.queue_full:
            self._resume_reading()
        self._send_ack(size)

    def failed(self, reason: Failure) -> None:
        self._end(WRITE_FAILED, f"write failed: {reason.getErrorMessage()}")

    def shutdown(self) -> None:
        self._end(GOING_AWAY, "server shutting down")

    def lease_lost(self, reason: str) -> None:
        self._end(LEASE_LOST, reason)

    # Endings.

    def _send_ack(self, size: int) -> None:
        if self.session.ack and self.state == self.STATE_OPEN:
            # A few digits: not worth compressing (section 16).
            self.sendMessage(b"%d" % size, isBinary=False, doNotCompress=True)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Any:
        if self.state != self.STATE_OPEN or self.phase is Phase.CLOSING:
            return super().onCloseFrame(code, reasonRaw)
        if self.phase is Phase.ENDING:
            # The peer's Close crossed ours: ours goes out once the session
            # has ended, so the peer learns why; the peer's Close answers it.
            assert self._ended is not None
            self._ended.addCallback(self._crossed_close, code, reasonRaw)
            return None
        # OPEN: the appender is done.  Every byte it sent before this Close
        # is persisted and the slot released before we answer.
        self.phase = Phase.CLOSING
        self._pause_reading()

        def answer(size: int) -> None:
            self.phase = Phase.DONE
            self._send_ack(size)
            WebSocketServerProtocol.onCloseFrame(self, code, reasonRaw)

        if code in (None, COMPLETE):
            ending = self._session.end(COMPLETE)
        else:
            # Any other code (1001 from a client interrupted by Ctrl-C, say)
            # ends the session as interrupted: persisted, not complete.
            why = f"the appender closed with {code}"
            ending = self._session.end(None, why, outcome=f"interrupted {code}")
        ending.addCallback(answer)
        return None

    def _crossed_close(self, _: object, code: int, reasonRaw: bytes) -> None:
        if self.state == self.STATE_CLOSING:
            # Autobahn would abort the connection here (a server closes TCP
            # on the answer to its Close), discarding our unsent Close;
            # close gracefully so it is delivered.
            self.wasClean = True
            self.dropConnection(abort=False)
        elif self.state == self.STATE_OPEN:
            WebSocketServerProtocol.onCloseFrame(self, code, reasonRaw)

    def _end(self, code: int, reason: str) -> None:
        """End the session from our side, then close with ``code``."""
        if self.phase is not Phase.OPEN:
            return
        self.phase = Phase.ENDING
        # Keep reading, so the peer's answering Close is seen; further
        # messages are ignored.
        self._resume_reading()

        def close(size: int) -> None:
            self.phase = Phase.DONE
            self._send_ack(size)
            if self.state == self.STATE_OPEN:
                self.sendCloseFrame(
                    code=code, reasonUtf8=reason.encode()[:123], isReply=False
                )

        self._ended = self._session.end(code, reason).addCallback(close)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # An orderly TCP close (FIN) while the WebSocket was open, as the
        # original Go appender ends; before Autobahn forgets which it was.
        self._fin = self.state == self.STATE_OPEN and bool(reason.check(ConnectionDone))
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.phase is Phase.OPEN and self._fin and self.session.fin_ends_appender:
            self.phase = Phase.DONE
            self._session.end(COMPLETE, outcome="closed by FIN")
        elif self.phase in (Phase.CONNECTING, Phase.OPEN):
            # Lost (or never opened): persist what arrived, release.  An
            # ending already under way (CLOSING, ENDING) finishes by itself.
            self.phase = Phase.DONE
            self._session.end(None, f"connection lost: {reason}")
