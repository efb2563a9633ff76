"""
`TrackedFile`: a stream's open file, counting the reads, writes, marks,
syncs and line lookups queued on it until they finish, so that
`TrackedFile.close` closes it only after them: a descriptor is never
closed, and perhaps reused by another open, under a read still waiting in
the store's threads.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from .derived import Lines, Span
from .store import IStoreFile
from .writes import Fence

__all__ = ["TrackedFile"]

_T = TypeVar("_T")


class TrackedFile:
    """``file`` (a `store.IStoreFile`), its I/O in flight counted."""

    def __init__(self, file: IStoreFile) -> None:
        self._file = file
        # Reads, writes, marks and syncs queued and not yet finished.
        self._io = 0
        self._io_done: list[Deferred[None]] = []

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        return self._track(self._file.write(data, sync, fence))

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        return self._track(self._file.read(offset, length))

    def sync(self) -> Deferred[None]:
        return self._track(self._file.sync())

    def mark(self, complete: bool, sync: bool) -> Deferred[None]:
        return self._track(self._file.mark(complete, sync))

    def locate(self, lines: Lines, size: int, persist: bool) -> Deferred[Span]:
        return self._track(self._file.locate(lines, size, persist))

    def line_at(self, offset: int, persist: bool) -> Deferred[int]:
        return self._track(self._file.line_at(offset, persist))

    def load_derived(self) -> Deferred[None]:
        return self._track(self._file.load_derived())

    def time_of(self, offset: int) -> int:
        return self._file.time_of(offset)

    def learned(self, start: int) -> None:
        self._file.learned(start)

    def close(self) -> Deferred[None]:
        """Close the file once every call above has finished."""

        async def close() -> None:
            while self._io:
                done: Deferred[None] = Deferred()
                self._io_done.append(done)
                await done
            await self._file.close()

        return Deferred.fromCoroutine(close())

    def _track(self, d: Deferred[_T]) -> Deferred[_T]:
        """Count ``d`` as I/O on the file until it fires."""
        self._io += 1

        def finished(result: _T | Failure) -> _T | Failure:
            self._io -= 1
            if not self._io:
                waiting, self._io_done = self._io_done, []
                for w in waiting:
                    w.callback(None)
            return result

        return d.addBoth(finished)
