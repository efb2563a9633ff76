"""
`CachedFile`: a resource file the archive's store opened, as the stream
sees it (`core.store.IStoreFile`): pinned in the cache (`cache.Cache`)
until it is closed, so it is never evicted while in use, and its appended
bytes counted there (which makes it pending: the bucket lacks them).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from ...core.derived import Lines, Span
from ...core.names import Name
from ...core.store import IStoreFile
from ...core.writes import Fence, Fenced
from .cache import Cache

__all__ = ["CachedFile"]


@implementer(IStoreFile)
class CachedFile:
    """
    :param closed: told once the file is closed (``closed(result, name,
        file)``; what it returns is the close's result).
    """

    def __init__(
        self,
        cache: Cache,
        name: Name,
        file: IStoreFile,
        closed: Callable[[object, Name, CachedFile], object],
    ) -> None:
        self._cache = cache
        self._name = name
        self._file = file
        self._closed = closed
        self.size = file.size
        self.complete = file.complete

    def write(
        self, data: bytes, sync: bool, fence: Fence | None = None
    ) -> Deferred[None]:
        d = self._file.write(data, sync, fence)
        d.addCallbacks(self._wrote, self._refused, callbackArgs=(len(data),))
        return d

    def _wrote(self, result: None, added: int) -> None:
        self._cache.grew(self._name, added)
        return result

    def _refused(self, reason: Failure) -> Failure:
        # A fence that stopped the write part way left that part in the file.
        if isinstance(reason.value, Fenced) and reason.value.written:
            self._cache.grew(self._name, reason.value.written)
        return reason

    def mark(self, complete: bool, sync: bool) -> Deferred[None]:
        self._cache.pending(self._name)
        return self._file.mark(complete, sync)

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        return self._file.read(offset, length)

    def sync(self) -> Deferred[None]:
        return self._file.sync()

    def locate(self, lines: Lines, size: int, persist: bool) -> Deferred[Span]:
        return self._file.locate(lines, size, persist)

    def line_at(self, offset: int, persist: bool) -> Deferred[int]:
        return self._file.line_at(offset, persist)

    def load_derived(self) -> Deferred[None]:
        return self._file.load_derived()

    def time_of(self, offset: int) -> int:
        return self._file.time_of(offset)

    def learned(self, start: int) -> None:
        self._file.learned(start)

    def flush_derived(self) -> Deferred[None]:
        return self._file.flush_derived()

    def close(self) -> Deferred[None]:
        d = self._file.close()
        d.addBoth(self._closed, self._name, self)
        return d
