"""
Appending: `Appender`, one APPEND session over a WebSocket with
acknowledgements, flow control and (optionally) resuming after a dropped
connection; `open_appender` and `send_all`, the bodies of
`Client.open_append` and `Client.append`.

An `Appender` is in one of these states (`_State`):

``CONNECTING``
    the opening handshake is under way (``Client.open_append`` hands the
    appender out only once it is ``OPEN``).
``OPEN``
    connected: ``write`` sends at once.
``RESUMING``
    the connection dropped (1006) or the server went away (1001), and
    ``retry`` is on: reconnecting with backoff; ``write`` only keeps bytes
    to send again once reconnected.
``CLOSING``
    ``close`` was called while connected: our Close (1000) is sent, and the
    server answers it once every byte is persisted.
``CLOSING_RESUMING``
    as ``RESUMING``, but ``close`` has been called: once reconnected, the
    unacknowledged bytes are sent again and then the Close.
``INTERRUPTING``
    ``interrupt`` was called while connected: our Close (1001,
    "interrupted") is sent; the server persists every byte, records the
    resource as not complete, gives its followers 4000, and answers.
``ENDED``
    the session ended before ``close`` was called (the server closed it,
    the connection was lost, or resuming gave up); always with an error.
``CLOSED``
    ``close`` (or ``interrupt``) was called and the session has ended:
    with the final size, or the error that ended it.

Transitions (an event not listed leaves the state as it is)::

    state              event                                  next state
    -----------------  -------------------------------------  ----------------
    CONNECTING         handshake accepted (101)               OPEN
    CONNECTING         handshake refused or failed            ENDED
    OPEN               close()                                CLOSING
    OPEN               interrupt()                            INTERRUPTING
    OPEN               closed 1001/1006, retry                RESUMING
    OPEN               closed otherwise                       ENDED
    RESUMING           close()                                CLOSING_RESUMING
    RESUMING           interrupt()                            CLOSED
    RESUMING           reconnected                            OPEN
    RESUMING           412, the bytes past the ack are ours   RESUMING (again
                                                              at once)
    RESUMING           gave up (deadline, 412, not retryable) ENDED
    CLOSING            closed 1000                            CLOSED
    CLOSING            closed 1001/1006, retry                CLOSING_RESUMING
    CLOSING            closed otherwise                       CLOSED
    CLOSING_RESUMING   reconnected (bytes again, then Close)  CLOSING
    CLOSING_RESUMING   interrupt()                            CLOSED
    CLOSING_RESUMING   412, the bytes past the ack are ours   CLOSING_RESUMING
    CLOSING_RESUMING   gave up (deadline, 412, not retryable) CLOSED
    INTERRUPTING       closed                                 CLOSED
    ENDED              close() or interrupt()                 CLOSED

"Closed 1000" in ``CLOSING`` ends with the final size if the server
acknowledged every byte written, else with `AppendFailed`; "closed
otherwise" ends with `AppendFailed` for 1001, 1009 and 1011, and with
`ConnectionLost` for any other code.  ``INTERRUPTING`` ends with the final
size if every byte was acknowledged, else with that error; ``interrupt()``
while resuming ends at once with `ConnectionLost` (what was not
acknowledged may not be persisted).

Resuming reconnects with ``offset=`` the acknowledged size.  A 412 there
is not always someone else's doing: bytes the server persisted but had not
yet acknowledged when the connection ended (a SIGKILLed server) make the
resource longer than the acknowledged size.  When the size the 412 reports
lies between the acknowledged size and the size sent, those bytes are read
back (a ``Range`` GET) and compared with the ones still held: equal, they
count as acknowledged and resuming goes on from there; different, or a
size outside those bounds, ends the session with `OffsetMismatch` saying
why.  A 409 while resuming is tried again (within ``give_up_after``): most
often it is the appender's own old session, which the server has not yet
seen end.

What each method does in each state:

- ``write``: sends in ``OPEN``; keeps the bytes in ``RESUMING``; raises the
  error that ended the session in ``ENDED``; raises `RuntimeError` in
  ``CONNECTING`` and once ``close`` or ``interrupt`` was called.  It never
  raises Autobahn's ``Disconnected``: in ``OPEN`` while the connection is
  closing (the server's Close has arrived, its end not yet), the bytes are
  kept with ``retry`` (and sent once resumed) and refused without it, with
  `AppendFailed` or `ConnectionLost`.
- ``close``: as in the table; in ``CONNECTING`` it raises `RuntimeError`;
  in ``CLOSING``, ``CLOSING_RESUMING``, ``INTERRUPTING`` and ``CLOSED`` it
  only waits.
- ``interrupt``: as in the table; in ``CONNECTING`` it raises
  `RuntimeError`; in ``CLOSING`` (a clean close already asked for),
  ``INTERRUPTING`` and ``CLOSED`` it only waits.
- ``drained``: fails with the error in ``ENDED`` or a failed ``CLOSED``;
  otherwise fires once the appender is not `Appender.full`.
- A registered producer is paused whenever the appender is full or not
  connected (any state but ``OPEN`` and ``CLOSING``).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from typing import IO, Any

import treq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol import (
    APPEND,
    COMPLETE,
    GOING_AWAY,
    SIZE,
    TOO_BIG,
    WRITE_FAILED,
    Param,
)
from ._backoff import RESUMABLE, Backoff, retryable
from ._connections import Connections, as_dropped, response_headers
from ._errors import (
    DROPPED,
    AppenderConflict,
    AppendFailed,
    ConnectionLost,
    OffsetMismatch,
    http_error,
)
from ._urls import YES, target
from ._websocket import ClientProtocol

_log = Logger()

#: How much of ``append``'s data goes in one message.
_CHUNK = 64 << 10


class _State(enum.Enum):
    """Where an `Appender` is in its session (the module docstring)."""

    CONNECTING = "connecting"
    OPEN = "open"
    RESUMING = "resuming"
    CLOSING = "closing"
    CLOSING_RESUMING = "closing, resuming"
    INTERRUPTING = "interrupting"
    ENDED = "ended"
    CLOSED = "closed"


#: States with a connection to the server.
_CONNECTED = frozenset({_State.OPEN, _State.CLOSING, _State.INTERRUPTING})
#: States in which a registered producer may produce.
_PRODUCING = frozenset({_State.OPEN, _State.CLOSING})
#: States without a connection, reconnecting.
_RESUMING = frozenset({_State.RESUMING, _State.CLOSING_RESUMING})
#: States after ``close()`` or ``interrupt()`` was called.
_CLOSE_CALLED = frozenset(
    {_State.CLOSING, _State.CLOSING_RESUMING, _State.INTERRUPTING, _State.CLOSED}
)
#: States in which the session has ended.
_DONE = frozenset({_State.ENDED, _State.CLOSED})
#: Close codes with which the server ends an appender's session itself.
_SERVER_ENDINGS = frozenset({TOO_BIG, WRITE_FAILED, GOING_AWAY})
#: The reason our Close gives when `Appender.interrupt` ends the session.
_INTERRUPTED = b"interrupted"


def _ending_error(code: int | None, reason: str | None) -> ConnectionLost:
    """
    The error for a session the server ended with ``code`` (`AppendFailed`)
    or that ended otherwise (`ConnectionLost`).
    """
    if code in _SERVER_ENDINGS:
        return AppendFailed(code, reason)
    return ConnectionLost(code, reason)


@implementer(IPushProducer)
class Appender:
    """
    An open APPEND session.  Get one from `Client.open_append`.

    ``write`` queues bytes; ``close`` fires with the final persisted size
    once the server has acknowledged every byte; ``interrupt`` ends the
    session as not complete (every byte persisted, followers told the
    appender is gone).  For flow control either
    wait on `drained` between writes, or `register_producer` a streaming
    producer (such as standard input), which is paused while the connection
    (or, when resuming, the buffer of unacknowledged bytes) is full.

    :ivar size: the persisted size last acknowledged by the server.
    """

    def __init__(
        self,
        connections: Connections,
        url: str,
        retry: bool,
        give_up_after: float,
        buffer_limit: int,
    ) -> None:
        self._connections = connections
        self._url = url
        self._retry = retry
        self._give_up_after = give_up_after
        self._buffer_limit = buffer_limit
        self._state = _State.CONNECTING
        self.size = 0
        self._sent = 0  # the size the resource will have once all is written
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._unacked_bytes = 0
        # The connection while the state is in _CONNECTED.
        self._proto: ClientProtocol | None = None
        self._producer: IPushProducer | None = None
        self._transport_paused = False
        self._waiters: list[Deferred[None]] = []
        # How the session ended, once the state is in _DONE.
        self._outcome: int | BaseException | None = None
        self._observers: list[Deferred[int]] = []

    def __repr__(self) -> str:
        return f"<Appender {self._url} {self._state.value} size={self.size}>"

    async def _open(self, offset: int | None) -> None:
        if self._state is not _State.CONNECTING:
            raise RuntimeError(f"cannot open an appender that is {self._state.value}")
        where = target(self._url, {Param.ACK: YES, Param.OFFSET: offset})
        try:
            proto = await self._connections.websocket(where, APPEND)
        except BaseException as e:
            self._finish(None, e)
            raise
        self.size = int(proto.response_headers.get(SIZE.lower(), "0"))
        self._sent = self.size
        self._attach(proto, _State.OPEN)

    def _attach(self, proto: ClientProtocol, state: _State) -> None:
        """Use ``proto`` from now on, in ``state`` (one of `_CONNECTED`)."""
        self._state = state
        self._proto = proto
        proto.on_message = self._ack
        transport: Any = proto.transport
        transport.registerProducer(self, True)
        proto.closed.addCallback(self._closed)

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Append ``data`` (sent as one binary message).

        :raises AppendFailed: the server ended the session (1001, 1009,
            1011), or (without ``retry``) is ending it.
        :raises ConnectionLost: the session ended otherwise, or (without
            ``retry``) its connection is ending.
        :raises RuntimeError: the appender is not open yet, or ``close``
            or ``interrupt`` was called.
        """
        if self._state in _CLOSE_CALLED:
            raise RuntimeError("write() after close()")
        if self._state is _State.ENDED:
            assert isinstance(self._outcome, BaseException)
            raise self._outcome
        if self._state is _State.CONNECTING:
            raise RuntimeError("write() before the appender is open")
        if not data:
            return
        sending = self._state is _State.OPEN and self._sendable()
        if self._state is _State.OPEN and not sending and not self._retry:
            # The connection is ending; its end has not been reported yet.
            raise self._closing_error()
        self._sent += len(data)
        if self._retry:
            # Kept until acknowledged: sent again once resumed, if need be.
            self._unacked.append((self._sent, data))
            self._unacked_bytes += len(data)
        if sending:
            assert self._proto is not None
            self._proto.sendMessage(data, isBinary=True)
        self._update_flow()

    def _sendable(self) -> bool:
        """Whether the connection can still carry messages."""
        proto = self._proto
        return proto is not None and proto.state == proto.STATE_OPEN

    def _closing_error(self) -> ConnectionLost:
        """The error of a connection that is ending: the server's Close, if any."""
        proto = self._proto
        code = getattr(proto, "remoteCloseCode", None) or DROPPED
        reason = getattr(proto, "remoteCloseReason", None) or "the connection is ending"
        return _ending_error(code, reason)

    @property
    def full(self) -> bool:
        """Whether a writer should wait (`drained`) before writing more."""
        return self._transport_paused or self._unacked_bytes > self._buffer_limit

    def drained(self) -> Deferred[None]:
        """Fire when it is time to write more."""
        d: Deferred[None] = Deferred()
        if isinstance(self._outcome, BaseException):
            d.errback(self._outcome)
        elif not self.full:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def register_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` whenever the appender is `full`."""
        self._producer = producer
        self._update_flow()

    def unregister_producer(self) -> None:
        self._producer = None

    def close(self) -> Deferred[int]:
        """
        End the session: fires with the final size once every byte is
        persisted; fails with `AppendFailed` or `ConnectionLost` if not.
        """
        if self._state is _State.CONNECTING:
            raise RuntimeError("close() before the appender is open")
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            assert self._proto is not None
            # Unless the server has begun closing (its Close then decides).
            if self._sendable():
                self._proto.sendClose(COMPLETE)
        elif self._state is _State.RESUMING:
            self._state = _State.CLOSING_RESUMING
        elif self._state is _State.ENDED:
            self._state = _State.CLOSED
        return self.wait()

    def interrupt(self) -> Deferred[int]:
        """
        End the session as interrupted (not complete): a Close with 1001.
        The server persists every byte sent, records the resource as not
        complete (``Httpfstream-Complete: 0``), closes its followers with
        4000, and answers.

        Fires with the final size once the server has answered, if it had
        acknowledged every byte; fails with `AppendFailed` or
        `ConnectionLost` if not.  While resuming there is no connection to
        close: it fails at once with `ConnectionLost` (the bytes not
        acknowledged may not be persisted).  After ``close``, it only waits
        for the close.
        """
        if self._state is _State.CONNECTING:
            raise RuntimeError("interrupt() before the appender is open")
        if self._state is _State.OPEN:
            self._state = _State.INTERRUPTING
            self._update_flow()
            assert self._proto is not None
            # Autobahn's sendClose refuses 1001, which a client may send.
            if self._sendable():
                self._proto.sendCloseFrame(
                    code=GOING_AWAY, reasonUtf8=_INTERRUPTED, isReply=False
                )
        elif self._state in _RESUMING:
            unsent = self._sent - self.size
            self._state = _State.INTERRUPTING  # so it ends CLOSED
            self._finish(
                None,
                ConnectionLost(
                    DROPPED,
                    f"interrupted while reconnecting: {unsent} bytes sent"
                    " were not acknowledged",
                ),
            )
        elif self._state is _State.ENDED:
            self._state = _State.CLOSED
        return self.wait()

    @property
    def done(self) -> bool:
        """Whether the session has ended (closed, failed or lost)."""
        return self._state in _DONE

    def wait(self) -> Deferred[int]:
        """
        Fire like `close` once the session ends, without ending it: with
        the final size, or the error that ended it.
        """
        d: Deferred[int] = Deferred()
        if self._state not in _DONE:
            self._observers.append(d)
        else:
            self._report(d)
        return d

    def _report(self, d: Deferred[int]) -> None:
        """Fire ``d`` with the outcome (in `_DONE`)."""
        if isinstance(self._outcome, BaseException):
            d.errback(Failure(self._outcome))
        else:
            assert self._outcome is not None
            d.callback(self._outcome)

    # IPushProducer, registered on the WebSocket's transport.

    def pauseProducing(self) -> None:
        self._transport_paused = True
        self._update_flow()

    def resumeProducing(self) -> None:
        self._transport_paused = False
        self._update_flow()

    def stopProducing(self) -> None:
        pass

    def _update_flow(self) -> None:
        full = self.full or self._state not in _PRODUCING
        if self._producer is not None:
            if full:
                self._producer.pauseProducing()
            else:
                self._producer.resumeProducing()
        if not full:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    # -- acknowledgements and endings -------------------------------------

    def _ack(self, payload: bytes, is_binary: bool) -> None:
        if is_binary or not payload.isdigit():
            return
        self._acknowledge(int(payload))
        self._update_flow()

    def _acknowledge(self, size: int) -> None:
        """
        The resource holds ``size`` bytes: forget what is kept before that
        (so the first kept bytes are the ones at ``size``).
        """
        self.size = size
        while self._unacked:
            end, data = self._unacked[0]
            start = end - len(data)
            if end <= size:
                self._unacked.popleft()
                self._unacked_bytes -= len(data)
            else:
                if start < size:
                    self._unacked[0] = (end, data[size - start :])
                    self._unacked_bytes -= size - start
                break

    def _closed(self, result: tuple[int | None, str]) -> None:
        """The connection ended, with ``(code, reason)``."""
        if self._state not in _CONNECTED:
            return
        code, reason = result
        self._proto = None
        if self._state is _State.INTERRUPTING:
            if self.size == self._sent:
                self._finish(self.size, None)
            else:
                self._finish(
                    None,
                    _ending_error(
                        code,
                        f"interrupted: the server acknowledged {self.size}"
                        f" bytes of {self._sent} ({reason or 'no reason'})",
                    ),
                )
        elif code == COMPLETE and self._state is _State.CLOSING:
            if self.size == self._sent:
                self._finish(self.size, None)
            else:
                # Never report success for bytes the server did not confirm.
                self._finish(
                    None,
                    AppendFailed(
                        code,
                        f"the server acknowledged {self.size} bytes,"
                        f" expected {self._sent}",
                    ),
                )
        elif self._retry and code in RESUMABLE:
            self._state = (
                _State.CLOSING_RESUMING
                if self._state is _State.CLOSING
                else _State.RESUMING
            )
            Deferred.fromCoroutine(self._resume(ConnectionLost(code, reason)))
        else:
            self._finish(None, _ending_error(code, reason))

    async def _resume(self, error: BaseException) -> None:
        """Reconnect (state in `_RESUMING`) until it works or gives up."""
        backoff = Backoff(self._connections.reactor, self._give_up_after)
        wait = True
        while self._state in _RESUMING:
            if wait:
                try:
                    await backoff.wait(error)
                except Exception as e:  # past give_up_after: the last error
                    self._finish(None, e)
                    return
                if self._state not in _RESUMING:
                    return  # interrupted meanwhile
            wait = True
            try:
                await self._reconnect()
                return
            except OffsetMismatch as mismatch:
                try:
                    await self._take_back(mismatch)
                except OffsetMismatch as e:
                    self._finish(None, e)
                    return
                except Exception as e:
                    if not retryable(e):
                        self._finish(None, e)
                        return
                    error = e
                else:
                    # Those bytes were ours: again at once, from there.
                    wait, error = False, mismatch
            except AppenderConflict as e:
                # Most often our own old session, not yet seen to end.
                error = e
            except Exception as e:
                if not retryable(e):
                    self._finish(None, e)
                    return
                error = e

    async def _reconnect(self) -> None:
        where = target(self._url, {Param.ACK: YES, Param.OFFSET: self.size})
        proto = await self._connections.websocket(where, APPEND)
        if self._state not in _RESUMING:
            # Interrupted while connecting: this session ends at once.
            proto.sendCloseFrame(
                code=GOING_AWAY, reasonUtf8=_INTERRUPTED, isReply=False
            )
            return
        closing = self._state is _State.CLOSING_RESUMING
        self._attach(proto, _State.CLOSING if closing else _State.OPEN)
        for _end, data in self._unacked:
            proto.sendMessage(data, isBinary=True)
        _log.info(
            "resumed appending at {size}, sending {unacked} bytes again",
            size=self.size,
            unacked=self._unacked_bytes,
        )
        if closing:
            proto.sendClose(COMPLETE)
        self._update_flow()

    async def _take_back(self, mismatch: OffsetMismatch) -> None:
        """
        After a 412 on resuming: if the resource holds more bytes than were
        acknowledged but no more than were sent, and they are the ones
        this appender sent, count them as acknowledged.

        :param mismatch: the 412.
        :raises OffsetMismatch: they are not ours (``why`` says how).
        """
        acked, sent, size = self.size, self._sent, mismatch.size

        def refuse(why: str) -> OffsetMismatch:
            return OffsetMismatch(412, "Precondition Failed", mismatch.headers, why)

        if size is None:
            raise refuse("the server did not say how many bytes the resource holds")
        if size < acked:
            raise refuse(
                f"the resource holds {size} bytes, fewer than the {acked}"
                " the server acknowledged to this appender"
            )
        if size > sent:
            raise refuse(
                f"the resource holds {size} bytes, more than the {sent} this"
                " appender sent: someone else appended"
            )
        assert self._unacked_bytes == sent - acked, "the unacknowledged bytes"
        held = b"".join(data for _end, data in self._unacked)[: size - acked]
        there = await self._read_back(acked, size)
        if there != held:
            raise refuse(
                f"the resource holds {size} bytes; the {size - acked} after the"
                f" {acked} acknowledged are not the ones this appender sent:"
                " someone else appended"
            )
        _log.info(
            "the resource holds {n} bytes sent but not acknowledged before the"
            " connection ended; they are ours: resuming at {size}",
            n=size - acked,
            size=size,
        )
        self._acknowledge(size)

    async def _read_back(self, start: int, end: int) -> bytes:
        """The resource's bytes from ``start`` to ``end`` (a Range GET)."""
        ranged = {"Range": f"bytes={start}-{end - 1}"}
        try:
            response = await self._connections.get(target(self._url), headers=ranged)
            body: bytes = await treq.content(response)
        except Exception as e:
            raise as_dropped(e) from None
        if response.code == 206:
            return body
        if response.code == 200:  # the whole content, Range ignored
            return body[start:end]
        raise http_error(
            response.code, response.phrase.decode(), response_headers(response), body
        )

    def _finish(self, size: int | None, error: BaseException | None) -> None:
        """
        End the session, with ``size`` or ``error``: ``CLOSED`` if close()
        was called, else ``ENDED``.
        """
        if self._state in _DONE:
            return
        self._state = _State.CLOSED if self._state in _CLOSE_CALLED else _State.ENDED
        self._outcome = error if error is not None else size
        assert self._outcome is not None
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error or ConnectionLost(COMPLETE, "closed"))
        if error is not None and self._producer is not None:
            self._producer.stopProducing()
        observers, self._observers = self._observers, []
        for observer in observers:
            self._report(observer)


async def send_all(
    appender: Appender, data: bytes | IO[bytes] | Iterable[bytes]
) -> int:
    """
    Write ``data`` (bytes, a binary file object, or an iterable of bytes)
    to ``appender``, waiting for it to drain, then close it.

    :return: the final persisted size.
    """
    chunks: Iterable[bytes]
    if isinstance(data, bytes | bytearray | memoryview):
        chunks = [bytes(data[i : i + _CHUNK]) for i in range(0, len(data), _CHUNK)]
    elif hasattr(data, "read"):
        chunks = iter(lambda: data.read(_CHUNK), b"")
    else:
        chunks = data
    for chunk in chunks:
        await appender.drained()
        appender.write(chunk)
    return await appender.close()


async def open_appender(
    connections: Connections,
    url: str,
    offset: int | None,
    retry: bool,
    give_up_after: float,
    buffer_limit: int,
) -> Appender:
    """`Client.open_append`, which documents the parameters."""
    backoff = Backoff(connections.reactor, give_up_after)
    while True:
        appender = Appender(connections, url, retry, give_up_after, buffer_limit)
        try:
            await appender._open(offset)
        except Exception as e:
            # With retry, a server not reachable yet (or restarting) is
            # waited for, as a follower waits for it.
            if not retry or not retryable(e):
                raise
            await backoff.wait(e)
            continue
        return appender
