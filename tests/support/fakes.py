"""In-memory stand-ins (a file, a store, a sink), for tests whose timing must
be exact."""

from __future__ import annotations

import errno

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from httpfstream.core.derived import Lines, Span
from httpfstream.core.names import Name
from httpfstream.core.store import IStore, IStoreFile, NotFound, SizeMismatch, Stored
from httpfstream.core.stream import IFollowerSink
from httpfstream.core.writes import Fence, Fenced


@implementer(IStoreFile)
class FakeFile:
    """Each write waits until the test fires it."""

    def __init__(self, content: bytes = b"") -> None:
        self.size = len(content)
        self.content = bytearray(content)
        self.writes: list[tuple[bytes, Deferred[None]]] = []
        #: The fence each write in ``writes`` was given.
        self.fences: list[Fence | None] = []
        self.syncs = 0
        self.closed = False
        self.complete = True

    def mark(self, complete: bool, sync: bool) -> Deferred[None]:
        self.complete = complete
        return succeed(None)

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append((data, d))
        self.fences.append(fence)
        return d

    def finish_write(self) -> bytes:
        data, d = self.writes.pop(0)
        self.fences.pop(0)
        self.content += data
        d.callback(None)
        return data

    def refuse(self, written: int = 0) -> None:
        """
        The next write refused by its fence in the writing thread, after
        ``written`` of its bytes (`writes.write_fenced`).
        """
        data, d = self.writes.pop(0)
        self.fences.pop(0)
        self.content += data[:written]
        d.errback(Failure(Fenced("refused", written=written, at_write=True)))

    def fail(self) -> None:
        _, d = self.writes.pop(0)
        self.fences.pop(0)
        d.errback(Failure(OSError(errno.EIO, "I/O error")))

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        return succeed(bytes(self.content[offset : offset + length]))

    def sync(self) -> Deferred[None]:
        self.syncs += 1
        return succeed(None)

    def locate(self, lines: Lines, size: int, persist: bool) -> Deferred[Span]:
        raise NotImplementedError("lines are tested on real files")

    def line_at(self, offset: int, persist: bool) -> Deferred[int]:
        raise NotImplementedError("lines are tested on real files")

    def load_derived(self) -> Deferred[None]:
        return succeed(None)

    def time_of(self, offset: int) -> int:
        return 0

    def learned(self, start: int) -> None:
        pass

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


@implementer(IStore)
class FakeStore:
    """
    Files in a dict.  Opens wait until the test calls `finish_opens`, so a
    test decides what happens while a resource is being opened.
    """

    def __init__(self) -> None:
        self.files: dict[Name, FakeFile] = {}
        self.opens: list[tuple[Name, bool, int | None, Deferred[IStoreFile]]] = []
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def open(
        self, name: Name, create: bool, expected_size: int | None
    ) -> Deferred[IStoreFile]:
        d: Deferred[IStoreFile] = Deferred()
        self.opens.append((name, create, expected_size, d))
        return d

    def finish_opens(self) -> None:
        opens, self.opens = self.opens, []
        for name, create, expected_size, d in opens:
            file = self.files.get(name)
            if expected_size is not None:
                size = None if file is None else len(file.content)
                if (size or 0) != expected_size:
                    d.errback(SizeMismatch(size, file is None or file.complete))
                    continue
            if name not in self.files:
                if not create:
                    d.errback(NotFound("/".join(name)))
                    continue
                self.files[name] = FakeFile()
            file = self.files[name]
            file.closed = False
            d.callback(file)

    def stat(self, name: Name) -> Deferred[Stored | None]:
        file = self.files.get(name)
        if file is None:
            return succeed(None)
        return succeed(Stored(len(file.content), file.complete))


@implementer(IFollowerSink)
class Sink:
    """Collects what a cursor sends, and how it finished."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.sent: list[bytes] = []
        self.ended: tuple[int, str] | None = None

    def send(self, data: bytes) -> None:
        self.data += data
        self.sent.append(data)

    def finish(self, code: int, reason: str) -> None:
        self.ended = (code, reason)
