"""
`Tail`: the most recent persisted bytes of a stream, kept in memory as the
batches that were written, for the cursors that are caught up (or nearly).
"""

from __future__ import annotations

import bisect

__all__ = ["MERGE", "Tail"]

#: The most bytes of small batches the tail joins into one.
MERGE = 16 << 10


class Tail:
    """
    The most recent persisted bytes of a stream, kept as the batches that
    were written (not copied into one buffer): at least ``size`` bytes,
    and always the whole last batch, however big the appender's queue let
    it grow, so a cursor that was caught up never falls behind the tail to
    the file just because one write was bigger than the tail.

    Small batches are joined once they are no longer the last (up to
    `MERGE` bytes), so many tiny writes stay a few objects.

    `read` gives a cursor that asks from the start of the last batch that
    batch itself: every caught-up cursor gets the very same bytes object,
    so the bytes are copied, and framed (`followers`), once for all.

    :param start: the offset of the first byte it will hold.
    :param size: how many bytes to keep, at least.
    """

    def __init__(self, start: int, size: int) -> None:
        self._size = size
        self.reset(start)

    def reset(self, start: int) -> None:
        """Hold nothing; the next batch starts at ``start``."""
        self.start = self.end = start
        self._chunks: list[bytes] = []
        self._starts: list[int] = []
        # The chunks before this index were dropped (compacted now and then).
        self._first = 0

    def add(self, batch: bytes) -> None:
        """``batch`` was written at `end`."""
        chunks, starts, first = self._chunks, self._starts, self._first
        # Small batches that are no longer the last are joined, up to
        # MERGE bytes: a tail of a million one-byte writes would cost a
        # Python object each, and a read across it a piece each.
        if len(chunks) - first >= 2 and len(chunks[-2]) + len(chunks[-1]) <= MERGE:
            last = chunks.pop()
            starts.pop()
            chunks[-1] += last
        chunks.append(batch)
        starts.append(self.end)
        self.end += len(batch)
        # Drop the oldest batch while the rest still make ``size`` bytes.
        while first + 1 < len(chunks) and self.end - starts[first + 1] >= self._size:
            chunks[first] = b""  # its bytes are freed now, its slot later
            first += 1
        self.start = starts[first]
        if first > 64 and first * 2 > len(chunks):
            del chunks[:first], starts[:first]
            first = 0
        self._first = first

    @property
    def last(self) -> bytes:
        """The last batch added, the object every caught-up cursor reads."""
        return self._chunks[-1] if self._chunks else b""

    def read(self, offset: int, length: int) -> bytes | None:
        """
        At most ``length`` bytes from ``offset``, or ``None`` if they are
        no longer (or not yet) held.
        """
        if not self.start <= offset < self.end:
            return None
        starts, chunks = self._starts, self._chunks
        if offset == starts[-1] and len(chunks[-1]) <= length:
            return chunks[-1]  # a caught-up cursor: the commonest read
        i = bisect.bisect_right(starts, offset, self._first) - 1
        chunk, skip = chunks[i], offset - starts[i]
        whole = not skip and len(chunk) <= length
        if whole and (i + 1 == len(chunks) or len(chunk) == length):
            return chunk  # the same object for every cursor that asks
        pieces: list[memoryview] = []
        wanted = length
        while wanted and i < len(chunks):
            piece = memoryview(chunks[i])[skip : skip + wanted]
            pieces.append(piece)
            wanted -= len(piece)
            i, skip = i + 1, 0
        return b"".join(pieces)
