"""
The store's reads: what the page cache holds is read at once, in the
reactor, and anything else (or a kernel or filesystem without
``RWF_NOWAIT``) in a worker thread, with the same bytes either way.
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.python.filepath import FilePath

from httpfstream.core import pagecache
from httpfstream.core.store import FileStore, IStoreFile

pytestmark = pytest.mark.skipif(
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


async def test_what_the_page_cache_holds_is_read_at_once(written):
    files, file = written
    d = file.read(1000, 5000)
    assert d.called  # no thread, no reactor turn
    assert await d == (bytes(range(256)) * 1024)[1000:6000]
    # Past the end: what there is, as a read in a thread would give.
    assert await file.read(256 * 1024 - 10, 100) == bytes(range(246, 256))


async def test_what_would_wait_for_the_disk_is_read_in_a_thread(written, monkeypatch):
    files, file = written

    def would_block(*args: object) -> int:
        raise BlockingIOError(errno.EAGAIN, "not in memory")

    monkeypatch.setattr(os, "preadv", would_block)
    d = file.read(0, 300)
    assert not d.called  # gone to a worker thread
    assert await d == bytes(range(256)) + bytes(range(44))
    assert files.read_now  # still tried first next time


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
