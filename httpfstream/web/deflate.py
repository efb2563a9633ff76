"""
Deflate segments, and what bounds their cost: the one compressor behind
both kinds of compressed reader (docs/PROTOCOL.md section 16), gzip HTTP
bodies (`web/gzip.py`) and permessage-deflate WebSocket messages
(`web/wsdeflate.py`).

A *segment* is one batch of a resource's bytes compressed on its own: raw
deflate (RFC 1951) with no reference to anything before it, ending in the
empty stored block of a flush (``00 00 ff ff``), so it ends on a byte
boundary and holds every byte it was given.  Segments can therefore be put
one after another in any stream (a gzip body is its segments, then a final
empty block and the trailer; a permessage-deflate message is one segment
without those last four bytes, RFC 7692 section 7.2.1).  Made with
``Z_FULL_FLUSH``: a sync flush (nothing held back, the live byte goes out
with its batch) that also forgets the history, so the next segment does
not refer back.  The price is that history: a small batch compresses less
well alone than in a stream that remembers (docs/PERFORMANCE.md); the gain
is that the same bytes make the same segment for every reader.

What bounds the cost (`Shared`):

- A range of a stream's bytes is compressed once for every reader that
  sends it: what was compressed is kept by range (the stream, the offset,
  the length, the parameters) for the next reader, up to `CACHE` bytes.
  Caught-up readers all send the stream's last batch, so an append is
  compressed once however many read it (always: its cost is the append
  rate's, not the readers'), and a reader holds no compressor of its own
  (zlib's is about 256 KiB at the default window).
- What one reader sends on its own (a follower that fell behind and reads
  several batches at once, a snapshot read from the file, lines stamped
  with ``timestamps=1``, which are no range of the stream's bytes and are
  never kept for another reader) is compressed
  within a server-wide budget, `RATE` bytes a second (`BURST` at once).
  Beyond it such bytes go uncompressed (a plain WebSocket message, stored
  deflate blocks in a gzip body: valid, just not smaller), so a thousand
  followers falling behind together cost what they cost uncompressed, not
  a thousand compressions; bytes that a second reader sends (the same
  object) are compressed whatever the budget says, as they are shared.
"""

from __future__ import annotations

import weakref
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

__all__ = [
    "BURST",
    "CACHE",
    "LEVEL",
    "MARKER",
    "RATE",
    "SHARED",
    "WINDOW",
    "Budget",
    "Shared",
    "segment",
]

#: zlib's compression level.  Level 1 compresses log text about 2.3 times
#: as fast as the default 6, to about 20-25% more bytes (batches of 10 KiB
#: and more; docs/PERFORMANCE.md): the reactor's CPU is what every reader
#: shares.
LEVEL = 1
#: The default window: 2**15 bytes of history within a segment.
WINDOW = 15
#: How every segment ends: the empty stored block of a flush.
MARKER = b"\x00\x00\xff\xff"
#: Bytes a second compressed for one reader alone, server-wide, and at once.
RATE = 32 << 20
BURST = 8 << 20
#: Compressed bytes kept for the next reader of the same range.
CACHE = 8 << 20

#: One compressor per window size and level, reused: a full flush leaves it
#: as new.
_compressors: dict[tuple[int, int], Any] = {}


def segment(
    data: bytes | memoryview, window: int = WINDOW, level: int = LEVEL
) -> bytes:
    """
    ``data`` as a deflate segment (see the module docstring), compressed
    with a window of ``2**window`` bytes (9 to 15); level 0: stored blocks,
    not compressed.
    """
    compressor = _compressors.get((window, level))
    if compressor is None:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -window, 8)
        _compressors[window, level] = compressor
    out: bytes = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    return out


class Budget:
    """A token bucket: at most ``rate`` bytes a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._at: float | None = None

    def take(self, n: int, now: float) -> bool:
        """Whether ``n`` bytes may be compressed at ``now`` (taken if so)."""
        if self._at is not None:
            earned = (now - self._at) * self._rate
            self._tokens = min(self._burst, self._tokens + earned)
        self._at = now
        if n > self._tokens:
            return False
        self._tokens -= n
        return True


class Shared:
    """
    What compressed readers share (see the module docstring): compressed
    ranges by key, the budget, and the last bytes objects refused it.

    :param budget: for bytes one reader sends alone.
    :param size: the most compressed bytes kept.
    :param seen: how many refused objects are remembered.
    """

    def __init__(self, budget: Budget, size: int = CACHE, seen: int = 8) -> None:
        self.budget = budget
        self._size = size
        self._held = 0
        self._kept: OrderedDict[Hashable, bytes] = OrderedDict()
        self._seen: deque[bytes] = deque(maxlen=seen)

    @staticmethod
    def key(stream: object, start: int, length: int, *params: Hashable) -> Hashable:
        """
        The key of ``length`` bytes of ``stream`` from ``start`` (bytes that
        never change: a resource only grows), compressed with ``params``.
        The stream is held weakly: a resource deleted and written again is
        another stream, whose ranges never match the old one's.
        """
        return (weakref.ref(stream), start, length, *params)

    def get(
        self,
        key: Hashable | None,
        data: bytes,
        shared: bool,
        now: float,
        make: Callable[[], bytes],
    ) -> bytes | None:
        """
        What ``make()`` makes of ``data``, the bytes of ``key`` (``None``:
        bytes no other reader will send, kept for nobody): kept from an
        earlier reader, or made now (and kept) if ``data`` is ``shared``
        (the stream's last batch), or another reader has sent this very
        object, or the budget allows; else ``None`` (send the bytes
        uncompressed).
        """
        kept = None if key is None else self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        shared = shared or any(seen is data for seen in self._seen)
        if not shared and not self.budget.take(len(data), now):
            self._seen.append(data)
            return None
        made = make()
        if key is not None:
            self._keep(key, made)
        return made

    def _keep(self, key: Hashable, value: bytes) -> None:
        if len(value) > self._size:
            return
        self._kept[key] = value
        self._held += len(value)
        while self._held > self._size:
            _, dropped = self._kept.popitem(last=False)
            self._held -= len(dropped)


#: The server's one `Shared`.
SHARED = Shared(Budget(RATE, BURST))
