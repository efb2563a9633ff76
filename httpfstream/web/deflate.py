"""
Deflate segments: the one compressor behind both kinds of compressed
reader (docs/PROTOCOL.md section 16), gzip HTTP bodies (`web/gzip.py`) and
permessage-deflate WebSocket messages (`web/wsdeflate.py`).

A *segment* is one batch of a resource's bytes compressed on its own: raw
deflate (RFC 1951) with no reference to anything before it, ending in
the empty stored block of a flush (``00 00 ff ff``), so it ends on a byte
boundary and holds every byte it was given.  Segments can therefore be
put one after another in any stream (a gzip body is its segments, then a
final empty block and the trailer; a permessage-deflate message is one
segment without those last four bytes, RFC 7692 section 7.2.1), and the
same segment serves every reader that sends the same batch: the stream
hands every caught-up cursor the very same bytes object (`core/tail.py`),
so a batch is compressed once however many compressed readers send it,
as it is framed once for plain WebSocket followers.

Made with ``Z_FULL_FLUSH``: a sync flush (nothing held back in the
compressor, the live byte goes out with its batch) that also forgets the
history, so the next segment does not refer back.  The price is the
history: a small batch compresses less well alone than in a stream that
remembers (measured on CI-like log text in docs/PERFORMANCE.md); the gain
is that the cost is per batch, not per reader, and a reader holds no
compressor (zlib's is about 256 KiB at the default window).
"""

from __future__ import annotations

import zlib

__all__ = ["LEVEL", "MARKER", "WINDOW", "LastSegment", "segment"]

#: zlib's compression level.  Level 1 compresses log text about 2.2 times
#: faster than the default 6, to about 20% more bytes (docs/PERFORMANCE.md):
#: a follower's bytes cost the reactor's CPU, which every reader shares.
LEVEL = 1
#: The default window: 2**15 bytes of history within a segment.
WINDOW = 15
#: How every segment ends: the empty stored block of a flush.
MARKER = b"\x00\x00\xff\xff"

#: One compressor per window size, reused: a full flush leaves it as new.
_compressors: dict[int, zlib._Compress] = {}


def segment(data: bytes | memoryview, window: int = WINDOW) -> bytes:
    """
    ``data`` as a deflate segment (see the module docstring), compressed
    with a window of ``2**window`` bytes (9 to 15).
    """
    compressor = _compressors.get(window)
    if compressor is None:
        compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -window, 8)
        _compressors[window] = compressor
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


class LastSegment:
    """
    The segment of the last bytes object compressed through it, for the
    next reader that sends the very same object (the object is held here,
    so its identity cannot be reused meanwhile).
    """

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._last: tuple[bytes, bytes] | None = None

    def of(self, data: bytes) -> bytes:
        last = self._last
        if last is None or last[0] is not data:
            last = self._last = (data, segment(data, self._window))
        return last[1]
