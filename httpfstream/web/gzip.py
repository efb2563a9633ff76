"""
gzip for HTTP readers (docs/PROTOCOL.md section 16): snapshots and
``follow=1`` bodies are sent with ``Content-Encoding: gzip`` when the
request's ``Accept-Encoding`` prefers it (`wants_gzip`), never with
``Range``; `encode_response` sets the headers and `GzipSink`, a sink
between the cursor and the response's `followers.ResponseSink`, encodes.

Why not Twisted's ``GzipEncoderFactory`` / ``EncodingResourceWrapper``:
its encoder calls ``compress`` on every write and flushes only when the
response finishes, so a live byte waits in zlib until the follow ends
(checked with Twisted 26.10: a 72-byte write reached the client as the
10-byte gzip header alone, the rest only at ``finish``); and it decides by
a regular expression that takes ``gzip;q=0`` for no mention of gzip and
``gzip;q=1`` too.  Here every batch the cursor sends is flushed at once
(a `deflate.segment`), and the cursor stays the transport's producer:
back-pressure works as for an identity body, and the compressor holds
nothing between batches.  A batch that several readers send is compressed
once for all of them, and what one reader sends alone is compressed
within the server's budget, else sent as stored (uncompressed) deflate
blocks (`deflate.SHARED`).
"""

from __future__ import annotations

import re
import struct
import zlib

from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request
from zope.interface import implementer

from ..core.stream import IFollowerSink, Stream
from .deflate import SHARED, segment
from .followers import ResponseSink

__all__ = ["GzipSink", "encode_response", "wants_gzip"]

#: RFC 1952: magic, deflate, no flags, no time, no extra flags, unknown OS.
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
#: The last block of the deflate stream: final, fixed codes, empty.
LAST_BLOCK = b"\x03\x00"

_QVALUE = re.compile(rb"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def _weights(header: bytes) -> dict[bytes, float]:
    """
    The codings an ``Accept-Encoding`` value names, lower-cased, with their
    weights (the first mention of each; an unreadable weight is 0).
    """
    weights: dict[bytes, float] = {}
    for item in header.split(b","):
        coding, *params = (part.strip() for part in item.split(b";"))
        if not coding:
            continue
        weight = 1.0
        for param in params:
            key, _, value = param.partition(b"=")
            if key.strip().lower() == b"q":
                value = value.strip()
                weight = float(value) if _QVALUE.fullmatch(value) else 0.0
        weights.setdefault(coding.lower(), weight)
    return weights


def wants_gzip(header: bytes | None) -> bool:
    """
    Whether a request with this ``Accept-Encoding`` value (``None``: none)
    gets gzip rather than the bytes as they are (RFC 9110 section 12.5.3):
    gzip (or ``x-gzip``, or else ``*``) with a weight above 0, and at least
    the weight the request gives ``identity`` (named, or through ``*``).
    No header, or an empty one, asks for no coding.
    """
    if not header:
        return False
    weights = _weights(header)
    star = weights.get(b"*")
    gzip = weights.get(b"gzip", weights.get(b"x-gzip", star or 0.0))
    identity = weights.get(b"identity", star)
    return gzip > 0 and (identity is None or gzip >= identity)


def encode_response(
    request: Request, accept_encoding: bytes | None, ranged: bool = False
) -> bool:
    """
    Set the headers of a body that may be sent gzipped: ``Vary`` gains
    ``Accept-Encoding`` (the body depends on it, whichever is chosen); if
    gzip is chosen (`wants_gzip`, and never for a ``Range`` request),
    ``Content-Encoding: gzip`` and no ``Content-Length`` (the body is
    chunked).  Whether the body is to be gzipped.
    """
    vary = request.responseHeaders.getRawHeaders(b"vary") or []
    if not any(b"accept-encoding" in v.lower() for v in vary):
        request.setHeader(b"Vary", b", ".join([*vary, b"Accept-Encoding"]))
    if ranged or not wants_gzip(accept_encoding):
        return False
    request.setHeader(b"Content-Encoding", b"gzip")
    request.responseHeaders.removeHeader(b"Content-Length")
    return True


@implementer(IFollowerSink)
class GzipSink:
    """
    A cursor's bytes as a gzip body: the header at once, each batch as a
    segment (flushed: it goes out whole, now), and once the cursor finishes
    whole, the last block and the trailer (CRC-32 and length).  A body cut
    short gets no trailer, so no client can take it for whole.

    :param inner: the response's sink, whose headers are set
        (`encode_response`); it writes the bytes and keeps the record
        (counting the resource's bytes, not the compressed ones).
    :param stream: the stream the cursor reads.
    :param start: the offset the cursor starts at (``None``: it sends bytes
        derived from the stream's, which no other reader sends).
    :param clock: for the compression budget.
    """

    def __init__(
        self,
        inner: ResponseSink,
        stream: Stream,
        start: int | None,
        clock: IReactorTime,
    ) -> None:
        self._inner = inner
        self._stream = stream
        self._at = start
        self._clock = clock
        self._crc = 0
        self._size = 0
        inner.deliver(HEADER, 0)

    def send(self, data: bytes) -> None:
        key = None
        if self._at is not None:
            key = SHARED.key(self._stream, self._at, len(data), "gzip")
            self._at += len(data)
        shared = data is self._stream.last_batch
        now = self._clock.seconds()
        compressed = SHARED.get(key, data, shared, now, lambda: segment(data))
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        # Refused by the budget: stored blocks, not compressed.
        wire = segment(data, level=0) if compressed is None else compressed
        self._inner.deliver(wire, len(data))

    def finish(self, code: int, reason: str) -> None:
        trailer = struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)
        self._inner.finish(code, reason, LAST_BLOCK + trailer)
