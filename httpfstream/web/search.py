"""
Search over HTTP (docs/PROTOCOL.md section 14): ``GET NAME?grep=TEXT``
answers the matching lines as NDJSON, streamed as they are found, then one
``done`` object.

The bytes come from a cursor like every reader's (`core.cursor.Cursor`: a
snapshot's fixed end, or with ``follow=1`` live until the appender ends),
into `SearchResponse`, a sink that scans instead of sending
(`core.search.Scanner`).  What keeps a search from holding anybody up:

- **one slice at a time**: the cursor is paused while the bytes it gave are
  scanned, one slice per turn of the reactor, so the reactor turns between
  slices and other clients' appends and sends go on.  A slice is sized to
  take about `STEP_SECONDS` (halved after a slower step, doubled after a
  much quicker one, from `SMALLEST` to `LARGEST` bytes): a substring over
  a build log scans 256 KiB in that time, a regular expression 32 KiB, a
  search where nearly every other line matches 8 KiB (docs/PERFORMANCE.md);
- **the client's pace**: the response is the transport's streaming
  producer; while the client's socket is full, no slice is scanned and
  the cursor stays paused, so what is held for a search is one read of
  the cursor, one slice's matches and one line (`core.search.MAX_LINE`).

Slices are scanned in the reactor's thread.  RE2 releases the GIL, so
scanning in a thread pool was measured too (docs/PERFORMANCE.md,
"Search"): no faster, and no better for the others, with the server on
one CPU; and the threads would contend for the GIL with the store's
writer, which every append waits for.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from ..core.cursor import Cursor, IFollowerSink
from ..core.names import Name
from ..core.records import Kind, SessionRecord
from ..core.refusal import Refusal
from ..core.registry import StreamRegistry
from ..core.search import (
    DEFAULT_MATCHES,
    MAX_MATCHES,
    Found,
    Pattern,
    PatternError,
    Scanner,
)
from ..core.stream import Stream
from ..protocol import APPENDER_LOST, COMPLETE, LINE, OFFSET, header_bytes
from .http import Query, state_headers

__all__ = [
    "LARGEST",
    "SMALLEST",
    "STEP_SECONDS",
    "SearchResponse",
    "Slices",
    "Start",
    "scan",
    "serve",
    "settings",
]

_log = Logger()

#: How long one step (one slice scanned, in one turn of the reactor) should
#: take, about; and the bounds of a slice.
STEP_SECONDS = 0.0005
SMALLEST = 4 << 10
LARGEST = 256 << 10


class Slices:
    """How many bytes the next step scans: `STEP_SECONDS`' worth."""

    def __init__(self) -> None:
        self.size = 64 << 10

    def took(self, seconds: float) -> None:
        """A whole slice (of `size` bytes) took ``seconds`` to scan."""
        if seconds > STEP_SECONDS:
            self.size = max(SMALLEST, self.size // 2)
        elif seconds < STEP_SECONDS / 2:
            self.size = min(LARGEST, self.size * 2)


@dataclass(frozen=True)
class Start:
    """
    Where a search starts: the number of its first line and that line's
    offset, and the last line to search (``None``: to the end).
    """

    line: int = 1
    offset: int = 0
    last: int | None = None


def settings(query: Query) -> tuple[Pattern, int]:
    """
    The pattern and the most matches a search asks for, or a 400
    refusal saying what is wrong with them.
    """
    if query.offset is not None or query.range:
        raise Refusal(
            400, "a search starts at a line, not a byte: lines=, not offset= or Range"
        )
    if query.timestamps:
        raise Refusal(400, "timestamps=1 does not combine with grep=")
    assert query.grep is not None
    try:
        text = query.grep.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "grep must be UTF-8 (percent-encoded)") from None
    most = DEFAULT_MATCHES
    if query.max is not None:
        if not re.fullmatch(rb"[0-9]{1,7}", query.max) or not (
            0 < int(query.max) <= MAX_MATCHES
        ):
            raise Refusal(400, f"max must be a whole number from 1 to {MAX_MATCHES}")
        most = int(query.max)
    try:
        pattern = Pattern(text, regex=query.regex, case=query.case)
    except PatternError as e:
        raise Refusal(400, str(e)) from None
    return pattern, most


async def serve(
    registry: StreamRegistry, request: Request, query: Query, name: Name
) -> None:
    """Answer ``grep=`` on the resource ``name`` (see the module docstring)."""
    pattern, most = settings(query)
    follow = query.follow
    stream = await registry.open(name, reader="followers" if follow else "readers")
    try:
        start, stop = await _start(registry, query, stream)
        state = stream.state
        if query.lines is not None:
            request.setHeader(header_bytes(LINE), b"%d" % start.line)
        state_headers(request, state)
        request.setHeader(header_bytes(OFFSET), b"%d" % start.offset)
        request.setHeader(b"Content-Type", b"application/x-ndjson")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-store")
        # A reverse proxy (nginx) passes the lines on as they are found.
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(b"")
        scanner = Scanner(
            pattern, line=start.line, offset=start.offset, last=start.last, most=most
        )
        record = registry.record(Kind.SEARCH, name, query.peer, start.offset)
        response = SearchResponse(
            request, scanner, record, stream, follow, registry.reactor
        )
        if follow:
            cursor = stream.follow(response, start.offset)
        else:
            cursor = stream.snapshot(response, start.offset, stop)
        response.start(cursor)
    finally:
        stream.release()


async def _start(
    registry: StreamRegistry, query: Query, stream: Stream
) -> tuple[Start, int]:
    """
    Where a search of ``stream`` starts and, for a snapshot, the offset it
    stops at: the whole resource, or the lines ``lines=`` asks for (section
    13: found by the registry without reading from the start; 416 past the
    end; ``A-B`` on a snapshot only).
    """
    lines = query.lines_asked(stream.state, snapshot=not query.follow)
    if lines is None:
        return Start(), stream.size
    span = await registry.locate(stream, lines)
    stop = span.size if span.stop is None else span.stop
    return Start(span.line, span.start, lines.last), stop


def encode(found: list[Found]) -> bytes:
    """Matching lines as NDJSON, one object a line."""
    return b"".join(
        json.dumps(
            {"line": f.line, "offset": f.offset, "text": f.text}, ensure_ascii=False
        ).encode()
        + b"\n"
        for f in found
    )


def scan(scanner: Scanner, piece: bytes | None) -> tuple[bytes, float]:
    """
    One step: ``piece`` scanned (``None``: the end); its matches encoded,
    and the seconds it took.
    """
    started = time.perf_counter()
    found = scanner.close() if piece is None else scanner.feed(piece)
    return encode(found), time.perf_counter() - started


@implementer(IFollowerSink, IPushProducer)
class SearchResponse:
    """
    Scans a cursor's bytes and writes the matching lines to an HTTP
    response: the cursor's sink, and the streaming producer of the
    response's transport.

    :param request: the response; its headers are sent.
    :param scanner: the search.
    :param record: the reader's record (bytes are the NDJSON sent).
    :param stream: the stream searched (for ``complete`` at the end).
    :param follow: ``follow=1``: the ``done`` object says ``complete``.
    :param reactor: where steps are scheduled.
    """

    def __init__(
        self,
        request: Request,
        scanner: Scanner,
        record: SessionRecord,
        stream: Stream,
        follow: bool,
        reactor: Any,
    ) -> None:
        self._request = request
        self._scanner = scanner
        self._record = record
        self._stream = stream
        self._follow = follow
        self._reactor = reactor
        self._cursor: Cursor | None = None
        # The cursor's bytes not scanned yet, and how far they are; the
        # size of a slice now, and whether the step under way scans a
        # whole one (which tells how long a slice takes).
        self._bytes = b""
        self._at = 0
        self._slices = Slices()
        self._whole = False
        # A step scheduled or running; the client's socket full; the
        # cursor's ending (its code) once it has sent everything.
        self._busy = False
        self._client_full = False
        self._ending: int | None = None
        self._gone = False
        request.notifyFinish().addErrback(self._lost)

    def start(self, cursor: Cursor) -> None:
        """Search ``cursor``'s bytes, as the client takes the matches."""
        self._cursor = cursor
        if self._gone:
            cursor.stop()
            return
        self._request.registerProducer(self, True)
        cursor.wake()

    # -- IFollowerSink: the cursor's side -------------------------------------

    def send(self, data: bytes) -> None:
        assert self._cursor is not None
        # No more until these are scanned.
        self._cursor.pauseProducing()
        self._bytes, self._at = data, 0
        self._next()

    def finish(self, code: int, reason: str) -> None:
        if self._gone:
            return
        if code in (COMPLETE, APPENDER_LOST):
            self._ending = code
            self._next()
            return
        # Cut short (the server stopping, a failed read): no done object,
        # so no client can take the answer for whole.
        self._cut(code, reason)

    # -- IPushProducer: the client's side -------------------------------------

    def pauseProducing(self) -> None:
        self._client_full = True

    def resumeProducing(self) -> None:
        self._client_full = False
        self._next()

    def stopProducing(self) -> None:
        self._stop()

    # -- the steps ------------------------------------------------------------

    def _next(self) -> None:
        """Take the next step, unless one is under way or may not start."""
        if self._busy or self._client_full or self._gone:
            return
        cursor = self._cursor
        assert cursor is not None
        scanner = self._scanner
        if scanner.finished and self._ending is None:
            # All it will search is searched (max passed, or its last line).
            cursor.stop()
            self._done()
            return
        if self._at < len(self._bytes):
            size = self._slices.size
            piece = self._bytes[self._at : self._at + size]
            self._at += len(piece)
            self._whole = len(piece) == size
            self._step(piece)
        elif self._ending is not None:
            self._bytes = b""
            if scanner.finished:
                self._done()
            else:
                self._whole = False
                self._step(None)  # the last line, if it has no newline
        else:
            self._bytes = b""
            cursor.resumeProducing()

    def _step(self, piece: bytes | None) -> None:
        """Scan ``piece`` (``None``: the end) in the next turn of the reactor."""
        self._busy = True
        d: Deferred[tuple[bytes, float]] = Deferred()
        d.addCallbacks(self._scanned, self._failed)
        self._reactor.callLater(
            0, lambda: maybeDeferred(scan, self._scanner, piece).chainDeferred(d)
        )

    def _scanned(self, result: tuple[bytes, float]) -> None:
        self._busy = False
        if self._gone:
            return
        lines, took = result
        if self._whole:
            self._slices.took(took)
        if lines:
            self._request.write(lines)
            self._record.add(len(lines))
        self._next()

    def _failed(self, reason: Failure) -> None:
        self._busy = False
        _log.failure("searching {uri}", reason, uri=self._request.uri)
        self._cut(500, "the search failed")

    def _done(self) -> None:
        """Every match is sent: the last object, and the end."""
        scanner = self._scanner
        done: dict[str, object] = {
            "done": True,
            "matches": scanner.matches,
            "truncated": scanner.truncated,
            "lines": scanner.lines,
        }
        if self._follow:
            stream = self._stream
            done["complete"] = stream.complete and not stream.active
        last = json.dumps(done).encode() + b"\n"
        self._gone = True
        self._record.add(len(last))
        self._record.end(200)
        self._request.write(last)
        self._request.unregisterProducer()
        self._request.finish()

    # -- endings --------------------------------------------------------------

    def _cut(self, outcome: int, reason: str) -> None:
        if self._gone:
            return
        self._gone = True
        self._record.end(outcome, reason)
        if self._cursor is not None:
            self._cursor.stop()
        channel = self._request.channel
        transport: Any = None if channel is None else channel.transport
        if transport is not None:
            transport.abortConnection()

    def _lost(self, reason: Failure) -> None:
        if not self._gone:
            self._record.end("cut", "the client went away")
        self._stop()

    def _stop(self) -> None:
        self._gone = True
        if self._cursor is not None:
            self._cursor.stop()
