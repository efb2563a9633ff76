"""
The event stream (docs/PROTOCOL.md section 15): a follower that reads a
resource as server-sent events, the format a browser's ``EventSource``
reads, beside the WebSocket FOLLOW and ``follow=1`` on the same kind of
`core.cursor.Cursor`.

Every batch the cursor sends becomes one event::

    id: 1234
    data: "the bytes, decoded as UTF-8, as a JSON string"

decoded by one incremental UTF-8 decoder for the whole response: a
character whose bytes were cut between two batches is held back and sent
once whole, and ``id`` is always the offset just past the bytes decoded so
far, never past a held-back piece.  So an ``EventSource`` that reconnects
with ``Last-Event-ID`` (`event_start`) resumes on a character boundary,
with nothing lost or repeated.  Bytes that are not UTF-8 become U+FFFD.

The stream ends with ``event: end`` and ``data: {"complete": ..., "code":
..., "size": ...}`` (`EventSink.finish`): the close code a WebSocket
follower would get (1000, 4000, 1001; 1011 if the file could not be read)
and how many bytes the resource holds.  A piece of a character left at the
very end is decoded (as U+FFFD) only when the resource is complete: an
incomplete one may still be continued by a resuming appender, so the piece
stays behind the last ``id`` for the reconnection to decode whole.

While nothing else is sent for ``keepalive`` seconds, a comment line keeps
proxies and browsers from taking the connection for dead.

Like the WebSocket followers' frames (`followers._LastFrame`), a batch is
turned into an event once for all the followers it goes to: caught-up
cursors are all given the same bytes object from the same offset, so the
decoding, the JSON and the chunk around it are made by the first sink and
reused by the others (`_LastEvent`), and the chunk is sent straight to an
idle socket (`_borrowed.send_now`) rather than queued for the reactor's
next turn.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from .._borrowed import send_now
from ..core.records import SessionRecord
from ..core.refusal import Refusal
from ..core.stream import Cursor, IFollowerSink, Stream
from ..protocol import APPENDER_LOST, COMPLETE, OFFSET, ResourceState, header_bytes
from .http import Query, state_headers

__all__ = ["KEEPALIVE", "EventSink", "event_start", "start_events"]

#: Seconds of silence after which a comment line is sent.
KEEPALIVE = 15.0

#: What a ``Last-Event-ID`` from this server looks like: a byte offset.
_EVENT_ID = re.compile(rb"[0-9]{1,19}")

_COMMENT = b": keep-alive\n\n"


class _LastEvent:
    """
    The last batch a sink turned into an event, for the next sink given
    the very same bytes object at the same offset with nothing held back
    from before (the same input, so the same event): what the batch
    decoded to on the wire, its length without the framing, and the bytes
    it left held back.  (The batch is held here, so its identity cannot be
    reused meanwhile.)
    """

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.start = -1
        self.framing = -1
        self.wire = b""
        self.length = 0
        self.held = b""


_last = _LastEvent()

#: How a sink writes: through ``request.write``, or straight to the
#: socket, as is (HTTP/1.0) or as chunks (HTTP/1.1).
_THROUGH_REQUEST, _DIRECT, _DIRECT_CHUNKED = range(3)


def event_start(query: Query, state: ResourceState) -> int:
    """
    Where an event stream of the resource in ``state`` starts: at the
    ``Last-Event-ID`` an ``EventSource`` sends when it reconnects (it
    reconnects to the same URL, so this wins over ``offset=``), else where
    any follow starts (`Query.start`).  A malformed one is ``400``; one past
    the end (the resource was replaced) is ``416``, as an offset would be.
    """
    given = (query.last_event_id or b"").strip()
    if not given:
        return query.start(state)
    if not _EVENT_ID.fullmatch(given):
        shown = given[:40].decode("latin-1")
        raise Refusal(
            400,
            f"Last-Event-ID {shown!r} is not an id this server sends"
            " (a byte offset: a non-negative integer)",
            state=state,
        )
    offset, size = int(given), state.size or 0
    if offset > size:
        raise Refusal(
            416,
            f"Last-Event-ID {offset} is past the end of the resource ({size} bytes)",
            {b"Content-Range": b"bytes */%d" % size},
            state,
        )
    return offset


def start_events(
    request: Request,
    stream: Stream,
    record: SessionRecord,
    clock: IReactorTime,
    keepalive: float = KEEPALIVE,
) -> None:
    """
    Answer ``request`` with an event stream of ``stream`` (held by the
    caller, who releases it afterwards; the cursor keeps it open).

    :param record: the session's record (`Kind.FOLLOW_EVENTS`), started at
        the offset `event_start` gives.
    :param clock: for the keep-alive comments.
    :param keepalive: seconds of silence before a comment (0: never).
    """
    state = stream.state
    start = record.offset
    state_headers(request, state)
    request.setHeader(header_bytes(OFFSET), b"%d" % start)
    request.setHeader(b"Content-Type", b"text/event-stream")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Accel-Buffering", b"no")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    # The same URL is bytes, a page or events, by Accept.
    request.setHeader(b"Vary", b"Accept")
    # The headers now: a browser's EventSource opens on them.
    request.write(b"")
    sink = EventSink(request, record, stream, start, clock, keepalive)
    sink.start(stream.follow(sink, start))


@implementer(IFollowerSink, IPushProducer)
class EventSink:
    """
    Sends a cursor's bytes as server-sent events (see the module docstring).

    It is the producer registered on the response, passing pauses on to
    its cursor, so it knows when the client is not reading (no keep-alive
    is queued behind a stalled connection).

    :param request: the response; its headers are set.
    :param record: the reader's record.
    :param stream: the stream followed (for its completion and size).
    :param offset: the byte offset the cursor starts at.
    :param clock: for the keep-alive timer.
    :param keepalive: seconds of silence before a comment (0: never).
    """

    def __init__(
        self,
        request: Request,
        record: SessionRecord,
        stream: Stream,
        offset: int,
        clock: IReactorTime,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self._request = request
        self._record = record
        self._stream = stream
        # How the stream ends when nobody appends now: as its last session
        # did (section 9), the state the response's headers said.
        self._live = stream.active
        self._complete = stream.complete
        # Bytes received from the cursor, and decoded into events.
        self._received = offset
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._clock = clock
        self._keepalive = keepalive
        self._last_sent = clock.seconds()
        self._timer: IDelayedCall | None = None
        self._cursor: Cursor | None = None
        self._paused = False
        self._gone = False
        # The headers are written: the response is chunked or not by now.
        channel: Any = getattr(request, "channel", None)
        self._transport = getattr(channel, "transport", None)
        if self._transport is None:
            self._framing = _THROUGH_REQUEST
        else:
            self._framing = _DIRECT_CHUNKED if request.chunked else _DIRECT
        request.notifyFinish().addErrback(self._lost)

    def start(self, cursor: Cursor) -> None:
        """Send ``cursor``'s bytes as the transport takes them."""
        self._cursor = cursor
        if self._gone:
            cursor.stop()
            return
        self._request.registerProducer(self, True)
        if self._keepalive > 0:
            self._timer = self._clock.callLater(self._keepalive, self._beat)
        cursor.wake()

    # IPushProducer, for the response's transport

    def pauseProducing(self) -> None:
        self._paused = True
        if self._cursor is not None:
            self._cursor.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        if self._cursor is not None:
            self._cursor.resumeProducing()

    def stopProducing(self) -> None:
        self._lost(None)

    # IFollowerSink, for the cursor

    def send(self, data: bytes) -> None:
        start = self._received
        self._received = end = start + len(data)
        self._record.add(len(data))
        decoder = self._decoder
        if decoder.getstate()[0]:
            # A character began in the last batch: an event of its own.
            text = decoder.decode(data)
            if text:
                self._event(end - len(decoder.getstate()[0]), text)
            return
        last = _last
        if (
            last.data is not data
            or last.start != start
            or last.framing != self._framing
        ):
            text = decoder.decode(data)
            # The id never counts bytes held back for the next batch.
            held = decoder.getstate()[0]
            event = self._event_bytes(end - len(held), text) if text else b""
            last.data, last.start, last.framing = data, start, self._framing
            last.wire = self._framed(event) if event else b""
            last.length, last.held = len(event), held
        elif last.held:
            decoder.setstate((last.held, 0))
        if last.length:
            self._send(last.wire, last.length)

    def finish(self, code: int, reason: str) -> None:
        if self._gone:
            return
        self._stop()
        if code == COMPLETE and not (self._live or self._complete):
            # Nobody appended when it started, and the last session did
            # not end well: what a WebSocket follower learns from 4000.
            code, reason = APPENDER_LOST, "the resource is incomplete"
        complete = code == COMPLETE
        if code in (COMPLETE, APPENDER_LOST):
            size = self._received  # every byte up to the end was sent
        else:
            size = self._stream.size  # cut short: the size it has
        if complete:
            rest = self._decoder.decode(b"", final=True)
            if rest:
                self._event(self._received, rest)
        end = {"complete": complete, "code": code, "size": size}
        self._write(b"event: end\ndata: %s\n\n" % json.dumps(end).encode())
        self._record.end(code, reason)
        self._request.unregisterProducer()
        self._request.finish()

    # inside

    @staticmethod
    def _event_bytes(event_id: int, text: str) -> bytes:
        data = json.dumps(text, ensure_ascii=False).encode()
        return b"id: %d\ndata: %s\n\n" % (event_id, data)

    def _event(self, event_id: int, text: str) -> None:
        self._write(self._event_bytes(event_id, text))

    def _framed(self, data: bytes) -> bytes:
        """``data`` as this response puts it on the wire."""
        if self._framing == _DIRECT_CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def _write(self, data: bytes) -> None:
        self._send(self._framed(data), len(data))

    def _send(self, wire: bytes, length: int) -> None:
        """Send ``wire``, the framing of ``length`` bytes of the body."""
        self._last_sent = self._clock.seconds()
        if self._framing == _THROUGH_REQUEST:
            self._request.write(wire)
            return
        # What request.write does, but sent at once to an idle socket,
        # and framed once for every follower of the batch.  (The headers
        # went through request.write, and its finish() adds the last
        # chunk: all through the one transport, in order.)
        self._request.sentLength += length
        send_now(self._transport, wire)

    def _beat(self) -> None:
        self._timer = None
        if self._gone:
            return
        now = self._clock.seconds()
        due = self._last_sent + self._keepalive
        if now >= due:
            if not self._paused:
                # (While paused the client is not reading: a comment would
                # only queue up behind what it has not read.)
                self._write(_COMMENT)
            due = now + self._keepalive
        self._timer = self._clock.callLater(due - now, self._beat)

    def _stop(self) -> None:
        """Nothing more is sent: no more keep-alives."""
        self._gone = True
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _lost(self, reason: Failure | None) -> None:
        if self._gone:
            return
        self._stop()
        self._record.end("cut", "the client went away")
        if self._cursor is not None:
            self._cursor.stop()
