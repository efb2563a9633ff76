"""
`FileWriter`: a download's bytes to a file without blocking the reactor.

It is the ``IConsumer`` that `S3Client.get` streams an object to: each
piece is queued, one ``write`` in flight in the archive's threads (what
arrives meanwhile is joined into the next), and the download is paused
while more than `HIGH` bytes wait, so an object never sits in memory
however fast the bucket sends it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["HIGH", "FileWriter"]

#: Bytes waiting to be written past which the download is paused (it is
#: resumed once under half of it).
HIGH = 4 << 20


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


@implementer(IConsumer)
class FileWriter:
    """
    Writes what it is given to ``fd`` (a new file), through ``run`` (which
    calls a function in a thread and returns a Deferred of its result).

    :ivar received: bytes given so far (all of them will be written, or the
        writer fails).
    """

    def __init__(
        self, fd: int, run: Callable[..., Deferred[Any]], high: int = HIGH
    ) -> None:
        self.fd = fd
        self.received = 0
        self.written = 0
        self._run = run
        self._high = high
        self._waiting: list[bytes] = []
        self._waiting_size = 0
        self._writing = False
        self._failed: Failure | None = None
        self._producer: IPushProducer | None = None
        self._paused = False
        self._flushed: list[Deferred[None]] = []

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        # A download is a push producer (`transfer.Download`).
        self._producer = IPushProducer(producer)
        if self._paused:
            self._producer.pauseProducing()

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._failed is not None:
            return
        self.received += len(data)
        self._waiting.append(data)
        self._waiting_size += len(data)
        if self._waiting_size >= self._high and not self._paused:
            self._paused = True
            if self._producer is not None:
                self._producer.pauseProducing()
        self._next()

    # Writing

    def _next(self) -> None:
        if self._writing or self._failed is not None:
            return
        if not self._waiting:
            self._settle()
            return
        chunk = b"".join(self._waiting)
        self._waiting.clear()
        self._waiting_size = 0
        self._writing = True
        self._run(_write_all, self.fd, chunk).addCallbacks(self._wrote, self._broke)

    def _wrote(self, n: int) -> None:
        self._writing = False
        self.written += n
        if self._paused and self._waiting_size < self._high // 2:
            self._paused = False
            if self._producer is not None:
                self._producer.resumeProducing()
        self._next()

    def _broke(self, reason: Failure) -> None:
        self._writing = False
        self._failed = reason
        self._waiting.clear()
        if self._producer is not None:
            self._producer.stopProducing()
        self._settle()

    def _settle(self) -> None:
        if self._writing or (self._waiting and self._failed is None):
            return
        waiters, self._flushed = self._flushed, []
        for d in waiters:
            if self._failed is None:
                d.callback(None)
            else:
                d.errback(self._failed)

    def flushed(self) -> Deferred[None]:
        """Fires once everything given so far is written (or fails as a write did)."""
        d: Deferred[None] = Deferred()
        self._flushed.append(d)
        self._settle()
        return d

    async def finish(self, sync: bool) -> None:
        """Write what waits, sync if asked, and close the file (whatever happens)."""
        try:
            await self.flushed()
            if sync:
                await self._run(os.fsync, self.fd)
        finally:
            # Closing may flush (NFS): in a thread too.
            await self._run(os.close, self.fd)
