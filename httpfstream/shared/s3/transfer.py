"""
Bodies streamed both ways without holding an object in memory and
without file I/O in the reactor.

- `OpenFile`: a file read only in the client's threads, closed after
  its last read.
- `FileRange`, an ``IBodyProducer``: a range of such a file, read in
  chunks, each written when the connection takes it (Twisted pauses it
  while its write buffer is full).
- `sha256_of`: the SHA-256 of such a range (blocking, for a thread), which
  the signature needs before the body goes.
- `Download`, the protocol a response's body is delivered to: each piece
  goes to the caller's ``IConsumer``, with itself registered there as a
  push producer, so pausing the consumer stops reading the socket.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .errors import Stalled

__all__ = ["CHUNK", "Download", "FileRange", "OpenFile", "ShortFile", "sha256_of"]

_T = TypeVar("_T")

#: What one read of a file for an upload takes (and what sits in memory
#: per upload besides the socket's buffer).
CHUNK = 256 * 1024
#: What one read takes when hashing.
_HASH_CHUNK = 1024 * 1024


class ShortFile(Exception):
    """The file ended before the range did (it shrank while being sent)."""


def _read_exactly(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise ShortFile(f"{length} bytes at {offset} asked, {len(data)} read")
    return data


def sha256_of(fd: int, offset: int, length: int) -> str:
    """The hex SHA-256 of ``length`` bytes at ``offset``; blocking."""
    digest = hashlib.sha256()
    end = offset + length
    while offset < end:
        data = _read_exactly(fd, min(_HASH_CHUNK, end - offset), offset)
        digest.update(data)
        offset += len(data)
    return digest.hexdigest()


class OpenFile:
    """
    A file open for an upload, read only in the client's threads, and
    closed only once no thread reads it any more: a read whose Deferred was
    cancelled (the upload with it) still runs to its end in its thread, and
    must not meet the descriptor closed, or reused by another file.
    """

    def __init__(
        self,
        fd: int,
        in_thread: Callable[..., Deferred[Any]],
        call_from_thread: Callable[..., None],
    ) -> None:
        self.fd = fd
        self._in_thread = in_thread
        self._call_from_thread = call_from_thread
        self._busy = 0
        self._closing = False

    def run(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """``f(fd, *args)`` in a thread."""
        if self._closing:
            raise ValueError("the file is closed")
        self._busy += 1

        def job() -> _T:
            try:
                return f(self.fd, *args)
            finally:
                self._call_from_thread(self._finished)

        return self._in_thread(job)

    def _finished(self) -> None:
        self._busy -= 1
        if self._closing and not self._busy:
            os.close(self.fd)

    def close(self) -> None:
        """Closes the file now, or once the last read in a thread ends."""
        if not self._closing:
            self._closing = True
            if not self._busy:
                os.close(self.fd)


@implementer(IBodyProducer)
class FileRange:
    """
    ``length`` bytes of a file from ``offset``, as a request body; one read
    in flight at a time.
    """

    def __init__(self, file: OpenFile, offset: int, length: int) -> None:
        self.length = length
        self._file = file
        self._offset = offset
        self._sent = 0
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._reading: Deferred[Any] | None = None
        self._paused = False
        self._stopped = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        self._done = Deferred()
        self._next()
        return self._done

    def _next(self) -> None:
        if self._paused or self._stopped or self._reading is not None:
            return
        assert self._done is not None
        if self._sent == self.length:
            self._stopped = True
            self._done.callback(None)
            return
        n = min(CHUNK, self.length - self._sent)
        reading = self._reading = self._file.run(
            _read_exactly, n, self._offset + self._sent
        )
        reading.addCallbacks(self._read, self._failed)

    def _read(self, data: bytes) -> None:
        self._reading = None
        if self._stopped:
            return
        assert self._consumer is not None
        self._sent += len(data)
        self._consumer.write(data)  # may pause us, synchronously
        self._next()

    def _failed(self, reason: Failure) -> None:
        self._reading = None
        if not self._stopped:
            self._stopped = True
            assert self._done is not None
            self._done.errback(reason)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        # IBodyProducer: the Deferred of startProducing must not fire now.
        self._stopped = True


@implementer(IPushProducer)
class Download(Protocol):
    """
    A response body delivered to ``consumer`` (``registerProducer(self,
    True)`` first, ``unregisterProducer()`` last, success or not); `done`
    fires with the byte count, or fails: with `CancelledError` once the
    consumer called ``stopProducing``, with `Stalled` when no byte came for
    ``idle_timeout`` seconds while the consumer wanted more, or with the
    reason the connection ended early (a ``ResponseFailed``).
    """

    def __init__(
        self,
        consumer: IConsumer,
        expected: object,
        clock: Any,
        idle_timeout: float,
    ) -> None:
        self.consumer = consumer
        self.expected = expected
        self.received = 0
        # Cancelled (the caller's get), it stops the body as the consumer
        # would, and lets the consumer go at once.
        self.done: Deferred[int] = Deferred(lambda _: self._cancelled())
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._timer: IDelayedCall | None = None
        self._paused = False
        self._stopped = False
        self._stalled = False
        self._registered = False

    def connectionMade(self) -> None:
        self.consumer.registerProducer(self, True)
        self._registered = True
        self._arm()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.consumer.unregisterProducer()

    def _cancelled(self) -> None:
        self.stopProducing()
        self._unregister()

    def _arm(self) -> None:
        if self._paused:
            self._disarm()
        elif self._timer is not None and self._timer.active():
            self._timer.reset(self._idle_timeout)
        else:
            self._timer = self._clock.callLater(self._idle_timeout, self._stall)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stall(self) -> None:
        self._timer = None
        self._stalled = True
        self.transport.stopProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self.received += len(data)
        self._arm()
        self.consumer.write(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        self._disarm()
        self._unregister()
        if self.done.called:  # cancelled
            return
        if self._stopped:
            self.done.errback(CancelledError("the consumer stopped the download"))
        elif self._stalled:
            self.done.errback(Stalled(self.received, self._idle_timeout))
        elif reason.check(ResponseDone) or (
            reason.check(PotentialDataLoss) and self.expected == UNKNOWN_LENGTH
        ):
            self.done.callback(self.received)
        else:
            self.done.errback(reason)

    # IPushProducer, for the consumer:

    def pauseProducing(self) -> None:
        self._paused = True
        self._disarm()
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self._paused = False
        self._arm()
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        if not self._stopped and self.transport is not None:
            self._stopped = True
            self._disarm()
            self.transport.stopProducing()  # type: ignore[attr-defined]
