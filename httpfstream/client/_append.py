"""
Appending: `Appender`, one APPEND session over a WebSocket with
acknowledgements, flow control and (optionally) resuming after a dropped
connection; `open_appender` and `send_all`, the bodies of
`Client.open_append` and `Client.append`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import IO, Any

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
from ._connections import Connections
from ._errors import AppendFailed, ConnectionLost, OffsetMismatch
from ._urls import YES, target
from ._websocket import ClientProtocol

_log = Logger()

#: How much of ``append``'s data goes in one message.
_CHUNK = 64 << 10


@implementer(IPushProducer)
class Appender:
    """
    An open APPEND session.  Get one from `Client.open_append`.

    ``write`` queues bytes; ``close`` fires with the final persisted size
    once the server has acknowledged every byte.  For flow control either
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
        self.size = 0
        self._sent = 0  # the size the resource will have once all is written
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._unacked_bytes = 0
        self._proto: ClientProtocol | None = None
        self._closing = False
        self._producer: IPushProducer | None = None
        self._transport_paused = False
        self._waiters: list[Deferred[None]] = []
        self._result: int | Failure | None = None
        self._observers: list[Deferred[int]] = []
        self._error: BaseException | None = None

    async def _open(self, offset: int | None) -> None:
        where = target(self._url, {Param.ACK: YES, Param.OFFSET: offset})
        proto = await self._connections.websocket(where, APPEND)
        self.size = int(proto.response_headers.get(SIZE.lower(), "0"))
        self._sent = self.size
        self._attach(proto)

    def _attach(self, proto: ClientProtocol) -> None:
        self._proto = proto
        proto.on_message = self._ack
        transport: Any = proto.transport
        transport.registerProducer(self, True)
        proto.closed.addCallback(self._closed)

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append ``data`` (sent as one binary message)."""
        if self._closing:
            raise RuntimeError("write() after close()")
        if self._error is not None:
            raise self._error
        if not data:
            return
        self._sent += len(data)
        if self._retry:
            self._unacked.append((self._sent, data))
            self._unacked_bytes += len(data)
        if self._proto is not None:
            self._proto.sendMessage(data, isBinary=True)
        self._update_flow()

    @property
    def full(self) -> bool:
        """Whether a writer should wait (`drained`) before writing more."""
        return self._transport_paused or self._unacked_bytes > self._buffer_limit

    def drained(self) -> Deferred[None]:
        """Fire when it is time to write more."""
        if self._error is not None:
            d: Deferred[None] = Deferred()
            d.errback(self._error)
            return d
        if not self.full:
            d = Deferred()
            d.callback(None)
            return d
        d = Deferred()
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
        if not self._closing:
            self._closing = True
            if self._proto is not None and self._proto.state == self._proto.STATE_OPEN:
                self._proto.sendClose(COMPLETE)
        return self.wait()

    @property
    def done(self) -> bool:
        """Whether the session has ended (closed, failed or lost)."""
        return self._result is not None

    def wait(self) -> Deferred[int]:
        """
        Fire like `close` once the session ends, without ending it: with
        the final size, or the error that ended it.
        """
        d: Deferred[int] = Deferred()
        if self._result is None:
            self._observers.append(d)
        elif isinstance(self._result, Failure):
            d.errback(self._result)
        else:
            d.callback(self._result)
        return d

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
        full = self.full or self._proto is None
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
        self.size = int(payload)
        while self._unacked and self._unacked[0][0] <= self.size:
            self._unacked_bytes -= len(self._unacked.popleft()[1])
        self._update_flow()

    def _closed(self, result: tuple[int | None, str]) -> None:
        code, reason = result
        self._proto = None
        if code == COMPLETE and self._closing:
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
            Deferred.fromCoroutine(self._resume(ConnectionLost(code, reason)))
        elif code in (TOO_BIG, WRITE_FAILED, GOING_AWAY):
            self._finish(None, AppendFailed(code, reason))
        else:
            self._finish(None, ConnectionLost(code, reason))

    async def _resume(self, error: BaseException) -> None:
        backoff = Backoff(self._connections.reactor, self._give_up_after)
        while True:
            await backoff.wait(error)
            try:
                await self._reconnect()
                return
            except OffsetMismatch as e:
                self._finish(None, e)
                return
            except Exception as e:
                if not retryable(e):
                    self._finish(None, e)
                    return
                error = e

    async def _reconnect(self) -> None:
        where = target(self._url, {Param.ACK: YES, Param.OFFSET: self.size})
        proto = await self._connections.websocket(where, APPEND)
        self._attach(proto)
        for _end, data in self._unacked:
            proto.sendMessage(data, isBinary=True)
        _log.info("resumed appending at {size}", size=self.size)
        if self._closing:
            proto.sendClose(COMPLETE)
        self._update_flow()

    def _finish(self, size: int | None, error: BaseException | None) -> None:
        if self._result is not None:
            return
        self._error = error
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error or ConnectionLost(COMPLETE, "closed"))
        if error is not None:
            if self._producer is not None:
                self._producer.stopProducing()
            self._result = Failure(error)
        else:
            assert size is not None
            self._result = size
        observers, self._observers = self._observers, []
        for observer in observers:
            if isinstance(self._result, Failure):
                observer.errback(self._result)
            else:
                observer.callback(self._result)


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
    appender = Appender(connections, url, retry, give_up_after, buffer_limit)
    await appender._open(offset)
    return appender
