"""
What the responses of readers share (sections 5, 13 and 16): where a read
starts and stops (``offset``, ``Range`` or ``lines``), the headers that say
so, and the sink its cursor sends to (stamped with ``timestamps=1``,
gzipped when asked).  Used by `resource.StreamResource`'s snapshot, HEAD,
``follow=1``, WebSocket FOLLOW and event-stream actions.
"""

from __future__ import annotations

import dataclasses

from twisted.web.server import Request

from ..core.names import Name
from ..core.records import Kind
from ..core.registry import StreamRegistry
from ..core.stamps import Stamped
from ..core.stream import IFollowerSink, Stream
from ..protocol import LINE, OFFSET, header_bytes
from . import gzip
from .followers import ResponseSink
from .http import Query, byte_range, content_type, state_headers

__all__ = ["body_sink", "follow_start", "snapshot_headers", "stream_body"]

_OFFSET = header_bytes(OFFSET)
_LINE = header_bytes(LINE)


async def snapshot_headers(
    registry: StreamRegistry,
    request: Request,
    query: Query,
    name: Name,
    stream: Stream,
) -> tuple[int, int, bool]:
    """
    Set a snapshot's headers (Range, 206, lines, gzip); the bytes it
    sends, and whether gzipped.
    """
    state = stream.state
    lines = query.lines_asked(state, snapshot=True)
    ranged: tuple[int, int] | None = None
    if lines is not None:
        span = await registry.locate(stream, lines)
        state = dataclasses.replace(state, size=span.size)
        start, stop = span.start, span.size if span.stop is None else span.stop
        request.setHeader(_OFFSET, b"%d" % start)
        request.setHeader(_LINE, b"%d" % span.line)
    else:
        ranged = byte_range(query.range, state)
        start, stop = ranged or (0, state.size or 0)
    if query.timestamps:
        await stream.load_times()
    state_headers(request, state)
    if ranged is not None:
        request.setResponseCode(206)
        request.setHeader(
            b"Content-Range", b"bytes %d-%d/%d" % (start, stop - 1, state.size or 0)
        )
    request.setHeader(b"Accept-Ranges", b"bytes")
    # A browser asking the same URL gets the viewer page instead.
    request.setHeader(b"Vary", b"Accept")
    request.setHeader(b"Content-Type", content_type(name))
    # The bytes are whatever anybody appended: never let a browser
    # guess a type it would run.
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    if not query.timestamps:  # stamped lines are longer, by how much?
        request.setHeader(b"Content-Length", b"%d" % (stop - start))
    if state.active:
        request.setHeader(b"Cache-Control", b"no-store")
    gzipped = gzip.encode_response(request, query.accept_encoding, ranged is not None)
    return start, stop, gzipped


async def follow_start(
    registry: StreamRegistry, query: Query, stream: Stream
) -> tuple[int, int | None]:
    """
    Where a follow of ``stream`` starts, from ``offset`` or ``lines``;
    the number of its first line if ``lines`` says it.  With
    ``timestamps=1`` the batch times are read first.
    """
    state = stream.state
    lines = query.lines_asked(state, snapshot=False)
    if query.timestamps:
        await stream.load_times()
    if lines is None:
        return query.start(state), None
    span = await registry.locate(stream, lines)
    return span.start, span.line


async def stream_body(
    registry: StreamRegistry,
    request: Request,
    query: Query,
    name: Name,
    stream: Stream,
    encode: bool = False,
) -> None:
    """
    Follow ``stream`` (held by the caller) in the response body;
    ``encode``: gzipped if the request asks (section 16).
    """
    start, line = await follow_start(registry, query, stream)
    state = stream.state
    state_headers(request, state)
    request.setHeader(_OFFSET, b"%d" % start)
    if line is not None:
        request.setHeader(_LINE, b"%d" % line)
    request.setHeader(b"Content-Type", content_type(name))
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    # A reverse proxy (nginx) streams it instead of buffering.
    request.setHeader(b"X-Accel-Buffering", b"no")
    gzipped = encode and gzip.encode_response(request, query.accept_encoding)
    if not state.active and not query.timestamps and not gzipped:
        request.setHeader(b"Content-Length", b"%d" % (stream.size - start))
    # Send the headers now: a live follow may wait long for a byte.
    request.write(b"")
    record = registry.record(Kind.FOLLOW_HTTP, name, query.peer, start)
    sink = ResponseSink(request, record)
    out = body_sink(registry, query, sink, stream, start, gzipped)
    sink.start(stream.follow(out, start))


def body_sink(
    registry: StreamRegistry,
    query: Query,
    sink: ResponseSink,
    stream: Stream,
    start: int,
    gzipped: bool,
) -> IFollowerSink:
    """
    What a body's cursor sends to: ``sink``, through gzip if
    ``gzipped`` (section 16), the lines stamped first with
    ``timestamps=1``.
    """
    out: IFollowerSink = sink
    if gzipped:
        # Stamped lines are no range of the stream's bytes: compressed
        # for this reader alone.
        at = None if query.timestamps else start
        out = gzip.GzipSink(sink, stream, at, registry.reactor)
    return _stamped(query, out, stream, start)


def _stamped(
    query: Query, sink: IFollowerSink, stream: Stream, start: int
) -> IFollowerSink:
    """``sink``, its lines stamped with their times if ``timestamps=1``."""
    return Stamped(sink, stream.time_of, start) if query.timestamps else sink
