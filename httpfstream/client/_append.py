"""
Appending: `Appender`, one APPEND session over a WebSocket with
acknowledgements, flow control and (optionally) resuming after a dropped
connection; `open_appender`, the body of `Client.open_append`.

An `Appender`'s states, their transitions, and what each method does in
each state are in `._append_states`.

What resuming keeps (`Unacked`) and what a 412 on resuming means are in
`._append_resume`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._borrowed import remote_close
from ..protocol import APPEND, COMPLETE, GOING_AWAY, SIZE, Param
from ._append_resume import Unacked, take_back
from ._append_states import (
    CLOSE_CALLED,
    CONNECTED,
    DONE,
    INTERRUPTED,
    PRODUCING,
    RESUMING,
    State,
    ending_error,
)
from ._backoff import RESUMABLE, Backoff, retryable
from ._connections import Connections
from ._errors import (
    DROPPED,
    AppenderConflict,
    AppendFailed,
    ConnectionLost,
    OffsetMismatch,
)
from ._urls import YES, target
from ._websocket import ClientProtocol

_log = Logger()


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
        self._state = State.CONNECTING
        self.size = 0
        self._sent = 0  # the size the resource will have once all is written
        self._unacked = Unacked()
        # The connection while the state is in CONNECTED.
        self._proto: ClientProtocol | None = None
        self._producer: IPushProducer | None = None
        self._transport_paused = False
        self._waiters: list[Deferred[None]] = []
        # How the session ended, once the state is in DONE.
        self._outcome: int | BaseException | None = None
        self._observers: list[Deferred[int]] = []

    def __repr__(self) -> str:
        return f"<Appender {self._url} {self._state.value} size={self.size}>"

    async def _open(self, offset: int | None) -> None:
        if self._state is not State.CONNECTING:
            raise RuntimeError(f"cannot open an appender that is {self._state.value}")
        where = target(self._url, {Param.ACK: YES, Param.OFFSET: offset})
        try:
            proto = await self._connections.websocket(where, APPEND)
        except BaseException as e:
            self._finish(None, e)
            raise
        self.size = int(proto.response_headers.get(SIZE.lower(), "0"))
        self._sent = self.size
        self._attach(proto, State.OPEN)

    def _attach(self, proto: ClientProtocol, state: State) -> None:
        """Use ``proto`` from now on, in ``state`` (one of `CONNECTED`)."""
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
        if self._state in CLOSE_CALLED:
            raise RuntimeError("write() after close()")
        if self._state is State.ENDED:
            assert isinstance(self._outcome, BaseException)
            raise self._outcome
        if self._state is State.CONNECTING:
            raise RuntimeError("write() before the appender is open")
        if not data:
            return
        sending = self._state is State.OPEN and self._sendable()
        if self._state is State.OPEN and not sending and not self._retry:
            # The connection is ending; its end has not been reported yet.
            raise self._closing_error()
        self._sent += len(data)
        if self._retry:
            # Kept until acknowledged: sent again once resumed, if need be.
            self._unacked.keep(self._sent, data)
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
        code, reason = remote_close(self._proto)
        return ending_error(code or DROPPED, reason or "the connection is ending")

    @property
    def full(self) -> bool:
        """Whether a writer should wait (`drained`) before writing more."""
        return self._transport_paused or self._unacked.nbytes > self._buffer_limit

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
        if self._state is State.CONNECTING:
            raise RuntimeError("close() before the appender is open")
        if self._state is State.OPEN:
            self._state = State.CLOSING
            assert self._proto is not None
            # Unless the server has begun closing (its Close then decides).
            if self._sendable():
                self._proto.sendClose(COMPLETE)
        elif self._state is State.RESUMING:
            self._state = State.CLOSING_RESUMING
        elif self._state is State.ENDED:
            self._state = State.CLOSED
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
        if self._state is State.CONNECTING:
            raise RuntimeError("interrupt() before the appender is open")
        if self._state is State.OPEN:
            self._state = State.INTERRUPTING
            self._update_flow()
            assert self._proto is not None
            # Autobahn's sendClose refuses 1001, which a client may send.
            if self._sendable():
                self._proto.sendCloseFrame(
                    code=GOING_AWAY, reasonUtf8=INTERRUPTED, isReply=False
                )
        elif self._state in RESUMING:
            unsent = self._sent - self.size
            self._state = State.INTERRUPTING  # so it ends CLOSED
            self._finish(
                None,
                ConnectionLost(
                    DROPPED,
                    f"interrupted while reconnecting: {unsent} bytes sent"
                    " were not acknowledged",
                ),
            )
        elif self._state is State.ENDED:
            self._state = State.CLOSED
        return self.wait()

    @property
    def done(self) -> bool:
        """Whether the session has ended (closed, failed or lost)."""
        return self._state in DONE

    def wait(self) -> Deferred[int]:
        """
        Fire like `close` once the session ends, without ending it: with
        the final size, or the error that ended it.
        """
        d: Deferred[int] = Deferred()
        if self._state not in DONE:
            self._observers.append(d)
        else:
            self._report(d)
        return d

    def _report(self, d: Deferred[int]) -> None:
        """Fire ``d`` with the outcome (in `DONE`)."""
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
        full = self.full or self._state not in PRODUCING
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
        self._unacked.forget(size)

    def _closed(self, result: tuple[int | None, str]) -> None:
        """The connection ended, with ``(code, reason)``."""
        if self._state not in CONNECTED:
            return
        code, reason = result
        self._proto = None
        if self._state is State.INTERRUPTING:
            if self.size == self._sent:
                self._finish(self.size, None)
            else:
                self._finish(
                    None,
                    ending_error(
                        code,
                        f"interrupted: the server acknowledged {self.size}"
                        f" bytes of {self._sent} ({reason or 'no reason'})",
                    ),
                )
        elif code == COMPLETE and self._state is State.CLOSING:
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
                State.CLOSING_RESUMING
                if self._state is State.CLOSING
                else State.RESUMING
            )
            Deferred.fromCoroutine(self._resume(ConnectionLost(code, reason)))
        else:
            self._finish(None, ending_error(code, reason))

    async def _resume(self, error: BaseException) -> None:
        """Reconnect (state in `RESUMING`) until it works or gives up."""
        backoff = Backoff(self._connections.reactor, self._give_up_after)
        wait = True
        while self._state in RESUMING:
            if wait:
                try:
                    await backoff.wait(error)
                except Exception as e:  # past give_up_after: the last error
                    self._finish(None, e)
                    return
                if self._state not in RESUMING:
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
        if self._state not in RESUMING:
            # Interrupted while connecting: this session ends at once.
            proto.sendCloseFrame(code=GOING_AWAY, reasonUtf8=INTERRUPTED, isReply=False)
            return
        closing = self._state is State.CLOSING_RESUMING
        self._attach(proto, State.CLOSING if closing else State.OPEN)
        for data in self._unacked:
            proto.sendMessage(data, isBinary=True)
        _log.info(
            "resumed appending at {size}, sending {unacked} bytes again",
            size=self.size,
            unacked=self._unacked.nbytes,
        )
        if closing:
            proto.sendClose(COMPLETE)
        self._update_flow()

    async def _take_back(self, mismatch: OffsetMismatch) -> None:
        """
        After a 412 on resuming: count the bytes past the acknowledged size
        as acknowledged, if they are the ones this appender sent
        (`take_back`).

        :raises OffsetMismatch: they are not ours (``why`` says how).
        """
        acked = self.size
        assert self._unacked.nbytes == self._sent - acked, "the unacknowledged bytes"
        size = await take_back(
            self._connections,
            self._url,
            mismatch,
            acked,
            self._sent,
            self._unacked,
        )
        _log.info(
            "the resource holds {n} bytes sent but not acknowledged before the"
            " connection ended; they are ours: resuming at {size}",
            n=size - acked,
            size=size,
        )
        self._acknowledge(size)

    def _finish(self, size: int | None, error: BaseException | None) -> None:
        """
        End the session, with ``size`` or ``error``: ``CLOSED`` if close()
        was called, else ``ENDED``.
        """
        if self._state in DONE:
            return
        self._state = State.CLOSED if self._state in CLOSE_CALLED else State.ENDED
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
