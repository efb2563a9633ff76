"""
Search over HTTP (docs/PROTOCOL.md section 14): ``GET NAME?grep=TEXT``
answers the matching lines as NDJSON, streamed as they are found, then one
``done`` object.

The bytes come from a cursor like every reader's (`core.cursor.Cursor`: a
snapshot's fixed end, or with ``follow=1`` live until the appender ends),
into `SearchResponse`, a sink that scans instead of sending
(`core.search.Scanner`).  What keeps a search from holding anybody up:

- **one slice at a time**: the cursor is paused while the bytes it gave are
  scanned, a slice of at most `SLICE` bytes per turn of the reactor, so
  the reactor turns between slices and other clients' appends and sends
  go on (a slice costs well under a millisecond: docs/PERFORMANCE.md);
- **the client's pace**: the response is the transport's streaming
  producer; while the client's socket is full, no slice is scanned and
  the cursor stays paused, so what is held for a search is one read of
  the cursor, one slice's matches and one line (`core.search.MAX_LINE`).

Where a slice is scanned is `Scanning`: in the reactor (the default, what
the benchmarks chose) or in the reactor's thread pool.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
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
from ..protocol import APPENDER_LOST, COMPLETE, OFFSET, header_bytes
from .http import Query, state_headers

__all__ = ["SLICE", "Scanning", "SearchResponse", "Start", "serve", "settings"]

_log = Logger()

#: The most bytes scanned in one step (one turn of the reactor).
SLICE = 64 << 10


class Scanning(enum.Enum):
    """Where a search's slices are scanned."""

    REACTOR = "reactor"
    THREAD = "thread"


#: Where slices are scanned; the benchmarks (bench/search.py) measure both.
SCANNING = Scanning.REACTOR


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
        # -- lines= (section 13) plugs in here: the registry's `locate` turns
        # the query's lines into the first line's number and offset and
        # the last line, and the response says them (Httpfstream-Line).
        start = Start()
        state = stream.state
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
            cursor = stream.snapshot(response, start.offset, stream.size)
        response.start(cursor)
    finally:
        stream.release()


def encode(found: list[Found]) -> bytes:
    """Matching lines as NDJSON, one object a line."""
    return b"".join(
        json.dumps(
            {"line": f.line, "offset": f.offset, "text": f.text}, ensure_ascii=False
        ).encode()
        + b"\n"
        for f in found
    )


def _scan(scanner: Scanner, piece: bytes | None) -> bytes:
    """One step: ``piece`` scanned (``None``: the end), its matches encoded."""
    return encode(scanner.close() if piece is None else scanner.feed(piece))


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
    :param scanning: where slices are scanned (default: `SCANNING`).
    """

    def __init__(
        self,
        request: Request,
        scanner: Scanner,
        record: SessionRecord,
        stream: Stream,
        follow: bool,
        reactor: Any,
        scanning: Scanning | None = None,
    ) -> None:
        self._request = request
        self._scanner = scanner
        self._record = record
        self._stream = stream
        self._follow = follow
        self._reactor = reactor
        self._scanning = scanning or SCANNING
        self._cursor: Cursor | None = None
        # The cursor's bytes not scanned yet, and how far they are.
        self._bytes = b""
        self._at = 0
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
            piece = self._bytes[self._at : self._at + SLICE]
            self._at += len(piece)
            self._step(piece)
        elif self._ending is not None:
            self._bytes = b""
            if scanner.finished:
                self._done()
            else:
                self._step(None)  # the last line, if it has no newline
        else:
            self._bytes = b""
            cursor.resumeProducing()

    def _step(self, piece: bytes | None) -> None:
        self._busy = True
        if self._scanning is Scanning.THREAD:
            reactor = self._reactor
            d: Deferred[bytes] = deferToThreadPool(
                reactor, reactor.getThreadPool(), _scan, self._scanner, piece
            )
        else:
            d = Deferred()
            self._reactor.callLater(
                0, lambda: maybeDeferred(_scan, self._scanner, piece).chainDeferred(d)
            )
        d.addCallbacks(self._scanned, self._failed)

    def _scanned(self, lines: bytes) -> None:
        self._busy = False
        if self._gone:
            return
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
