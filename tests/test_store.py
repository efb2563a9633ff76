"""
The store's reads: what the page cache holds is read at once, in the
reactor, and anything else (or a kernel or filesystem without
``RWF_NOWAIT``) in a worker thread, with the same bytes either way.

Its writes under a fence (shared mode's lease): asked in the writing
thread right before each system call, so a write the reactor let go is
still refused if the lease ran out before the thread got to it, and a
large write is refused between its pieces.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from httpfstream.core import pagecache
from httpfstream.core.coordination import LocalFeed
from httpfstream.core.records import Counters, Kind, SessionRecord
from httpfstream.core.session import AppendSession
from httpfstream.core.store import FileStore, IStoreFile
from httpfstream.core.stream import Stream
from httpfstream.core.writes import PIECE, Fenced, WriteFailed, write_fenced

needs_nowait = pytest.mark.skipif(
    not pagecache.NOWAIT, reason="no RWF_NOWAIT on this platform"
)


@pytest_twisted.async_yield_fixture
async def written(tmp_path) -> AsyncIterator[tuple[FileStore, IStoreFile]]:
    files = FileStore(FilePath(str(tmp_path)), reactor)
    files.start()
    file = await files.open(("a.log",), True, None)
    await file.write(bytes(range(256)) * 1024, False)
    yield files, file
    await file.close()
    files.stop()


@needs_nowait
async def test_what_the_page_cache_holds_is_read_at_once(written):
    _, file = written
    d = file.read(1000, 5000)
    assert d.called  # no thread, no reactor turn
    assert await d == (bytes(range(256)) * 1024)[1000:6000]
    # Past the end: what there is, as a read in a thread would give.
    assert await file.read(256 * 1024 - 10, 100) == bytes(range(246, 256))


@needs_nowait
async def test_what_would_wait_for_the_disk_is_read_in_a_thread(written, monkeypatch):
    files, file = written

    def would_block(*args: object) -> int:
        raise BlockingIOError(errno.EAGAIN, "not in memory")

    monkeypatch.setattr(os, "preadv", would_block)
    d = file.read(0, 300)
    assert not d.called  # gone to a worker thread
    assert await d == bytes(range(256)) + bytes(range(44))
    assert files.read_now  # still tried first next time


@needs_nowait
async def test_without_nowait_support_reads_go_to_threads_from_then_on(
    written, monkeypatch
):
    files, file = written
    calls: list[int] = []

    def unsupported(*args: object) -> int:
        calls.append(1)
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "preadv", unsupported)
    assert await file.read(0, 3) == b"\x00\x01\x02"
    assert await file.read(3, 3) == b"\x03\x04\x05"
    assert not files.read_now
    assert calls == [1]  # asked once, never again


@needs_nowait
async def test_a_failed_read_in_memory_is_tried_again_in_a_thread(written, monkeypatch):
    # An I/O error (a filesystem shut down, say) never escapes into the
    # reactor: the thread's read fails the reader the way it always has.
    files, file = written

    def failing(*args: object) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "preadv", failing)
    d = file.read(0, 2)
    assert not d.called
    assert await d == b"\x00\x01"
    assert files.read_now


@pytest.mark.skipif(not hasattr(os, "O_NOATIME"), reason="no O_NOATIME here")
async def test_files_we_own_are_read_without_access_time_updates(written):
    import fcntl

    _, file = written
    flags = fcntl.fcntl(file._fd, fcntl.F_GETFL)
    assert flags & os.O_NOATIME


# -- writes under a fence -------------------------------------------------------


class Slot:
    """A shared slot the test loses when it likes (`coordination.ISlot`)."""

    def __init__(self) -> None:
        self.ok = True
        #: Answers to give first, in order, before ``ok``.
        self.answers: list[bool] = []
        #: The thread each question came from.
        self.asked_in: list[threading.Thread] = []

    def valid(self) -> bool:
        self.asked_in.append(threading.current_thread())
        return self.answers.pop(0) if self.answers else self.ok

    def when_lost(self, lost: Callable[[str], None]) -> None:
        pass

    def release(self) -> None:
        pass


class Listener:
    """What the appender's protocol hears from its session."""

    def __init__(self) -> None:
        self.heard: list[object] = []
        self.lost: Deferred[None] = Deferred()

    def persisted(self, size: int) -> None:
        self.heard.append(size)

    def failed(self, reason: Failure) -> None:
        self.heard.append("failed")

    def shutdown(self) -> None:
        self.heard.append("shutdown")

    def lease_lost(self, reason: str) -> None:
        self.heard.append("lease lost")
        self.lost.callback(None)


@pytest_twisted.async_yield_fixture
async def held(tmp_path) -> AsyncIterator[tuple[FileStore, Stream, Slot, Listener]]:
    """
    A session on a real store with one writing thread, its slot the test's:
    what the thread does is what `FileStore` does, in a thread of its own.
    """
    files = FileStore(FilePath(str(tmp_path)), reactor, threads=1)
    files.start()
    stream = Stream(("a.log",), await files.open(("a.log",), True, None))
    slot, listener = Slot(), Listener()
    record = SessionRecord(Counters(), Clock(), Kind.APPEND, ("a.log",), "peer")
    AppendSession(stream, record, LocalFeed(), slot).attach(listener)  # type: ignore[arg-type]
    yield files, stream, slot, listener
    await stream.close()
    files.stop()


async def occupied(files: FileStore) -> threading.Event:
    """
    Keep the store's one thread busy until the event returned is set: a
    write handed to it meanwhile waits, let go by the reactor and not yet
    written, as it would in a process paused at that moment.
    """
    busy, go = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        go.wait(30)

    files._pool.callInThread(hold)
    await deferToThread(busy.wait, 30)
    return go


async def test_a_write_let_go_by_the_reactor_is_refused_by_the_thread(held, tmp_path):
    """
    The lease runs out after the reactor's check and before the thread's
    write: nothing is written, and the session ends as a lost lease.
    Without the check in the thread the bytes would land after it ran out.
    """
    files, stream, slot, listener = held
    stream.append(b"kept")
    assert await stream.flush() == 4
    go = await occupied(files)
    try:
        stream.append(b"late")  # the reactor asks: still valid; handed over
        assert slot.asked_in[-1] is threading.main_thread()
        slot.ok = False  # the lease runs out while the write waits
    finally:
        go.set()
    with capturedLogs() as logged:
        with pytest.raises(WriteFailed, match="lease ran out"):
            await stream.flush()
        await listener.lost  # told after the flush's waiters
    assert slot.asked_in[-1] is not threading.main_thread()  # the writing thread
    assert [formatEvent(e) for e in logged] == [
        "a.log: the lease ran out between the reactor's check and the write;"
        " 0 bytes of that write reached the file"
    ]
    assert (tmp_path / "a.log").read_bytes() == b"kept"
    assert stream.size == 4
    assert listener.heard == [4, "lease lost"]


async def test_a_large_write_asks_the_fence_before_each_piece(held, tmp_path):
    """
    A write of two and a half pieces whose lease runs out after the first:
    that piece is in the file and counted (its ack, the final one, is what
    this server wrote), the rest never written.
    """
    _, stream, slot, listener = held
    data = bytes(range(256)) * (PIECE * 5 // 2 // 256)
    slot.answers = [True, True]  # the reactor's check, the first piece's
    slot.ok = False  # the second piece's
    stream.append(data)
    with capturedLogs() as logged:
        with pytest.raises(WriteFailed, match="lease ran out"):
            await stream.flush()
        await listener.lost  # told after the flush's waiters
    assert len(slot.asked_in) == 3
    # Asked after the piece too: it may have landed after the lease ran out.
    assert [formatEvent(e) for e in logged] == [
        f"a.log: the lease ran out while a write was made: its last {PIECE}"
        " bytes may lie after bytes another server appended"
    ]
    assert (tmp_path / "a.log").read_bytes() == data[:PIECE]
    assert stream.size == PIECE
    assert listener.heard == [PIECE, "lease lost"]


async def test_a_write_without_a_fence_is_written_in_pieces(tmp_path, monkeypatch):
    files = FileStore(FilePath(str(tmp_path)), reactor)
    files.start()
    file = await files.open(("b.log",), True, None)
    calls: list[int] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd == file._fd:
            calls.append(len(data))
        return real_write(fd, data)

    data = os.urandom(PIECE * 2 + 10)
    monkeypatch.setattr(os, "write", write)
    await file.write(data, False)
    monkeypatch.undo()
    await file.close()
    files.stop()
    assert calls == [PIECE, PIECE, 10]
    assert (tmp_path / "b.log").read_bytes() == data


def test_a_short_write_is_carried_on_after_asking_the_fence_again(
    tmp_path, monkeypatch
):
    real_write = os.write
    asked: list[bool] = []

    def short(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data)[: max(1, len(data) // 2)])

    def always() -> bool:
        asked.append(True)
        return True

    def once() -> bool:
        asked.append(len(asked) == 0)
        return asked[-1]

    fd = os.open(tmp_path / "c.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    monkeypatch.setattr(os, "write", short)
    try:
        write_fenced(fd, b"0123456789", always)
        assert len(asked) == 6  # before writes of 5, 2, 1, 1, 1; after the last
        asked.clear()
        with pytest.raises(Fenced) as refused:
            write_fenced(fd, b"abcd", once)
    finally:
        monkeypatch.undo()
        os.close(fd)
    # Refused after a short write: that write's 2 bytes may have landed late.
    assert (refused.value.written, refused.value.late) == (2, 2)
    assert (tmp_path / "c.log").read_bytes() == b"0123456789ab"


async def test_a_write_after_another_process_appended_starts_at_the_files_end(
    tmp_path, monkeypatch
):
    # Another server on a shared root, or the stateless mode's copy being
    # extended, appends through its own descriptor.  A failed write here
    # must cut back only its own bytes (not theirs), and the line data
    # must count from where the file really ended.
    from httpfstream.core.derived import Lines

    files = FileStore(FilePath(str(tmp_path)), reactor)
    files.start()
    file = await files.open(("c.log",), True, None)
    await file.write(b"mine 1\n", False)
    with open(tmp_path / "c.log", "ab") as other:
        other.write(b"theirs 2\ntheirs 3\n")
    file.learned(7)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if fd == file._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        await file.write(b"lost 4\n", False)
    monkeypatch.undo()
    assert (tmp_path / "c.log").read_bytes() == b"mine 1\ntheirs 2\ntheirs 3\n"
    await file.write(b"mine 4\n", False)
    size = len(b"mine 1\ntheirs 2\ntheirs 3\nmine 4\n")
    span = await file.locate(Lines(4), size, False)
    assert (span.line, span.start) == (4, size - len(b"mine 4\n"))
    await file.close()
    files.stop()
