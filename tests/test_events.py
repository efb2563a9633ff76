"""
docs/PROTOCOL.md section 15: the event stream, a follow as server-sent
events, read through real sockets the way a browser's ``EventSource`` reads
it (`EventReader`: the HTML standard's parsing of ``text/event-stream``),
and the keep-alive timer of `httpfstream.web.events.EventSink` on a
``task.Clock``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import treq
from support.clients import Conditions, appender, close, finished, get, raw
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone
from twisted.web.test.requesthelper import DummyRequest

from httpfstream.core.records import Counters, Kind, SessionRecord
from httpfstream.web.auth import Tokens
from httpfstream.web.events import EventSink

EVENTS = {"Accept": "text/event-stream"}


@dataclass(frozen=True)
class Event:
    """One dispatched event: its type, its data, the last event ID then."""

    type: str
    data: str
    id: str

    @property
    def text(self) -> str:
        """A message event's data: the JSON string it carries."""
        value = json.loads(self.data)
        assert isinstance(value, str)
        return value


class EventReader(Protocol):
    """
    A response body read as an ``EventSource`` reads it (the HTML
    standard's "event stream interpretation"): lines ended by CR, LF or
    CRLF; ``:`` comments; ``field: value`` with one space dropped; a blank
    line dispatches the event if it has data; ``id`` sets the last event ID
    (kept by later events that carry none).  Anything but 200 is kept as
    bytes in `body`.
    """

    def __init__(self, response: Any) -> None:
        self.status: int = response.code
        self.headers = {
            k.decode().lower(): v[-1].decode()
            for k, v in response.headers.getAllRawHeaders()
        }
        self.body = b""
        self.events: list[Event] = []
        self.comments: list[str] = []
        self.last_id = ""
        self.clean: bool | None = None  # how the body ended, once it has
        self.done: Deferred[bool] = Deferred()
        self._buffer = b""
        self._data: list[str] = []
        self._type = ""
        self._conditions = Conditions(
            lambda: (
                f"{len(self.events)} events, last {self.events[-1:]},"
                f" comments {len(self.comments)}"
            )
        )

    def dataReceived(self, data: bytes) -> None:
        if self.status != 200:
            self.body += data
            return
        self._buffer += data
        while True:
            cr, lf = self._buffer.find(b"\r"), self._buffer.find(b"\n")
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            at = min(ends)
            if at == cr and at == len(self._buffer) - 1:
                break  # a CR that may be the start of a CRLF
            line = self._buffer[:at]
            skip = 2 if self._buffer[at : at + 2] == b"\r\n" else 1
            self._buffer = self._buffer[at + skip :]
            self._line(line.decode("utf-8"))
        self._conditions.check()

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                data = "".join(self._data)[:-1]
                self.events.append(Event(self._type or "message", data, self.last_id))
            self._data, self._type = [], ""
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value + "\n")
        elif field == "event":
            self._type = value
        elif field == "id" and "\0" not in value:
            self.last_id = value

    def connectionLost(self, reason: Any = None) -> None:
        self.clean = reason is not None and reason.check(ResponseDone) is not None
        self._conditions.fail("the response ended")
        self.done.callback(self.clean)

    # What the tests read.

    @property
    def messages(self) -> list[Event]:
        return [e for e in self.events if e.type == "message"]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.messages)

    @property
    def end(self) -> dict[str, Any] | None:
        ends = [e for e in self.events if e.type == "end"]
        assert len(ends) <= 1
        return json.loads(ends[0].data) if ends else None

    def until(self, predicate: Any, timeout: float = 10) -> Deferred[None]:
        return self._conditions.until(predicate, timeout)

    def until_text(self, text: str, timeout: float = 10) -> Deferred[None]:
        return self.until(lambda: self.text == text, timeout)

    async def ended(self, timeout: float = 10) -> dict[str, Any]:
        """The end event's data, once the response has ended cleanly."""
        clean = await self.done.addTimeout(timeout, reactor)
        assert clean, "the response was cut off"
        end = self.end
        assert end is not None, self.events
        assert self.events[-1].type == "end"
        return end


async def events(
    server: Any, name: str, headers: dict[str, str] | None = None, **query: object
) -> EventReader:
    """An event stream of ``name``, once the server has answered."""
    response = await treq.get(
        server.url(name, **query),
        headers={**EVENTS, **(headers or {})},
        unbuffered=True,
        timeout=10,
    )
    reader = EventReader(response)
    response.deliverBody(reader)
    return reader


def ids_are_offsets(reader: EventReader, start: int = 0) -> None:
    """Every message's id is the offset just past the bytes it carries."""
    offset = start
    for event in reader.messages:
        offset += len(event.text.encode())
        assert int(event.id) == offset, (event, offset)


# -- live ----------------------------------------------------------------------


async def test_live_events_in_order_then_the_end(server):
    a = await appender(server, "live.log", ack=1)
    a.sendMessage(b"history\n")
    await a.until_ack(8)
    f = await events(server, "live.log")
    assert f.status == 200
    assert f.headers["content-type"] == "text/event-stream"
    assert f.headers["cache-control"] == "no-store"
    assert f.headers["x-accel-buffering"] == "no"
    assert f.headers["httpfstream-active"] == "1"
    assert f.headers["httpfstream-size"] == "8"
    assert f.headers["httpfstream-offset"] == "0"
    assert f.headers["httpfstream-complete"] == "0"
    await f.until_text("history\n")
    lines = [b"line %d\n" % i for i in range(20)]
    for i, line in enumerate(lines):
        a.sendMessage(line)
        if i % 5 == 0:
            await a.until_ack(8 + sum(map(len, lines[: i + 1])))
    whole = (b"history\n" + b"".join(lines)).decode()
    await f.until_text(whole)
    assert f.end is None  # open for as long as the appender is
    assert await close(a) == 1000
    assert await f.ended() == {"complete": True, "code": 1000, "size": len(whole)}
    ids_are_offsets(f)
    assert f.last_id == str(len(whole))
    assert f.text == whole


async def test_counted_as_a_follower_and_recorded(server):
    a = await appender(server, "count.log", ack=1)
    f = await events(server, "count.log")
    _, headers, _ = await get(server.url("count.log"), method="HEAD")
    assert headers["httpfstream-followers"] == "1"
    counters = server.registry.counters
    assert counters.open[Kind.FOLLOW_EVENTS] == 1
    a.sendMessage(b"x")
    await f.until_text("x")
    await close(a)
    await f.ended()
    assert counters.open[Kind.FOLLOW_EVENTS] == 0
    assert counters.ended[Kind.FOLLOW_EVENTS, "1000"] == 1
    _, headers, _ = await get(server.url("count.log"), method="HEAD")
    assert headers["httpfstream-followers"] == "0"


async def test_an_offset_starts_the_stream_there(server):
    a = await appender(server, "off.log", ack=1)
    a.sendMessage(b"0123456789")
    await a.until_ack(10)
    f = await events(server, "off.log", offset=-4)
    assert f.headers["httpfstream-offset"] == "6"
    await f.until_text("6789")
    assert f.messages[0].id == "10"
    past = await events(server, "off.log", offset=11)
    assert past.status == 416
    await close(a)
    assert (await f.ended())["size"] == 10


async def test_lines_start_the_stream_at_a_line(server):
    a = await appender(server, "lines.log", ack=1)
    a.sendMessage(b"one\ntwo\nthree\n")
    await a.until_ack(14)
    f = await events(server, "lines.log", lines=-2)
    assert f.headers["httpfstream-line"] == "2"
    assert f.headers["httpfstream-offset"] == "4"
    await f.until_text("two\nthree\n")
    # Reconnecting with its last id resumes there, not at the lines.
    again = await events(
        server, "lines.log", lines=-2, headers={"Last-Event-ID": "8"}
    )
    assert "httpfstream-line" not in again.headers
    await again.until_text("three\n")
    assert (await events(server, "lines.log", lines=9)).status == 416
    await close(a)
    await f.ended()
    assert f.text == "two\nthree\n"
    assert again.text == "three\n"


# -- UTF-8 and resuming --------------------------------------------------------


async def test_a_character_cut_between_appends_is_sent_once_whole(server):
    a = await appender(server, "cut.log", ack=1)
    f = await events(server, "cut.log")
    # "h", then the first byte of "é"; "é" is C3 A9.
    a.sendMessage(b"h\xc3")
    await f.until_text("h")
    assert f.messages[-1].id == "1"  # not 2: the C3 is held back
    # Only the first two bytes of the euro sign (E2 82 AC): no event.
    a.sendMessage(b"\xa9llo \xe2\x82")
    await f.until_text("héllo ")
    assert f.messages[-1].id == "7"
    a.sendMessage(b"\xac!")
    await f.until_text("héllo €!")
    assert f.messages[-1].id == "11"
    ids_are_offsets(f)
    # An EventSource that lost its connection after the first event
    # resumes at its id: the whole "é", nothing lost, nothing repeated.
    again = await events(server, "cut.log", headers={"Last-Event-ID": "1"})
    assert again.status == 200
    assert again.headers["httpfstream-offset"] == "1"
    await again.until_text("éllo €!")
    ids_are_offsets(again, start=1)
    await close(a)
    await again.ended()
    assert f.messages[0].text + again.text == "héllo €!"


async def test_reconnecting_after_every_event_loses_and_repeats_nothing(server):
    """
    Text of 1- to 4-byte characters appended cut at every place, read by
    a client that drops its connection after each event and reconnects
    with ``Last-Event-ID``, as an ``EventSource`` does: what it read is the
    text, exactly.
    """
    text = "aé€😀b\n" * 6
    data = text.encode()
    a = await appender(server, "resume.log", ack=1)
    read, last_id, cut = "", "0", 0
    while True:
        f = await events(server, "resume.log", headers={"Last-Event-ID": last_id})
        assert f.status == 200, f.body
        while not f.events:
            # More bytes until an event comes: a resumed stream that only
            # has part of a character has nothing to send yet.
            if cut < len(data):
                piece = data[cut : cut + 1 + cut % 4]
                a.sendMessage(piece)
                cut += len(piece)
                await a.until_ack(cut)
            elif not a.done.called:
                await close(a)
            else:
                await f.until(lambda f=f: bool(f.events))
        first = f.events[0]
        if first.type == "end":
            assert json.loads(first.data)["complete"]
            break
        read += first.text
        last_id = first.id
        assert int(last_id) == len(read.encode())
        f.transport.stopProducing()  # drop the connection
        await f.done
    assert read == text


async def test_followers_from_different_places_each_get_their_own_text(server):
    """
    Caught-up followers share the work of a batch (one event for all);
    followers in another state (a resumed one holding a piece of a
    character, one that started inside a character) must not take it.
    """
    data = "déjà vu — 😀 ".encode() * 3
    a = await appender(server, "many.log", ack=1)
    a.sendMessage(data[:5])
    await a.until_ack(5)
    readers = [
        (0, await events(server, "many.log")),
        (0, await events(server, "many.log")),
        (2, await events(server, "many.log", headers={"Last-Event-ID": "2"})),
        (5, await events(server, "many.log", offset=5)),  # inside "à"
    ]
    cut = 5
    while cut < len(data):
        piece = data[cut : cut + 3 + cut % 5]
        a.sendMessage(piece)
        cut += len(piece)
        await a.until_ack(cut)
        if cut > 20 and len(readers) == 4:
            # One joins with a start inside "😀" (4 bytes).
            inside = data.index("😀".encode()) + 1
            late = await events(server, "many.log", offset=inside)
            readers.append((inside, late))
    assert await close(a) == 1000
    for start, reader in readers:
        end = await reader.ended()
        assert end == {"complete": True, "code": 1000, "size": len(data)}
        assert reader.text == data[start:].decode("utf-8", "replace"), start
        assert reader.last_id == str(len(data))
    for start, reader in readers[:2]:
        ids_are_offsets(reader, start)


async def test_an_http_1_0_client_gets_the_events_unchunked(server):
    await get(server.url("old.log"), method="POST", data=b"abc\n")
    client = await raw(server)
    client.send(b"GET /logs/old.log HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
    await client.closed.addTimeout(10, reactor)
    status, headers = await client.response_head()
    assert (status, headers["content-type"]) == (200, "text/event-stream")
    assert "transfer-encoding" not in headers
    assert client.body() == (
        b'id: 4\ndata: "abc\\n"\n\n'
        b'event: end\ndata: {"complete": true, "code": 1000, "size": 4}\n\n'
    )


async def test_invalid_utf8_becomes_replacement_characters(server):
    await get(server.url("bad.log"), method="POST", data=b"ok \xff\xfe bad \xc3(")
    f = await events(server, "bad.log")
    end = await f.ended()
    assert f.text == "ok \ufffd\ufffd bad \ufffd("
    assert f.messages[-1].id == "12"
    assert end == {"complete": True, "code": 1000, "size": 12}


async def test_a_finished_resource_ending_in_a_piece_of_a_character(server):
    # Complete: nothing can finish the character, so it is decoded (U+FFFD)
    # and the last id is the whole size.
    await get(server.url("end.log"), method="POST", data=b"done \xe2\x82")
    f = await events(server, "end.log")
    assert await f.ended() == {"complete": True, "code": 1000, "size": 7}
    assert f.text == "done \ufffd"
    assert f.last_id == "7"


async def test_an_interrupted_session_holds_back_its_last_piece_for_the_resume(server):
    a = await appender(server, "lost.log", ack=1)
    f = await events(server, "lost.log")
    a.sendMessage(b"price: \xe2\x82")
    await f.until_text("price: ")
    a.transport.abortConnection()
    await finished(a)
    assert await f.ended() == {"complete": False, "code": 4000, "size": 9}
    assert f.last_id == "7"  # the two bytes of the euro sign are after it
    # A later follower of the incomplete resource: at once, the same end.
    g = await events(server, "lost.log")
    assert await g.ended() == {"complete": False, "code": 4000, "size": 9}
    assert g.text == "price: " and g.last_id == "7"
    # The appender resumes: the reconnection gets the character whole.
    b = await appender(server, "lost.log", ack=1, offset=9)
    b.sendMessage(b"\xac5\n")
    await b.until_ack(12)
    h = await events(server, "lost.log", headers={"Last-Event-ID": f.last_id})
    await h.until_text("€5\n")
    assert await close(b) == 1000
    assert await h.ended() == {"complete": True, "code": 1000, "size": 12}
    assert f.text + h.text == "price: €5\n"


async def test_a_finished_resource_is_sent_then_ends_at_once(server):
    await get(server.url("done.log"), method="POST", data="all of it ✓\n".encode())
    f = await events(server, "done.log")
    assert f.headers["httpfstream-active"] == "0"
    assert f.headers["httpfstream-complete"] == "1"
    assert await f.ended() == {"complete": True, "code": 1000, "size": 14}
    assert f.text == "all of it ✓\n"
    ids_are_offsets(f)
    # Resuming at its end: nothing but the end.
    g = await events(server, "done.log", headers={"Last-Event-ID": "14"})
    assert await g.ended() == {"complete": True, "code": 1000, "size": 14}
    assert g.messages == []


async def test_an_empty_resource_ends_at_once(server):
    a = await appender(server, "empty.log")
    await close(a)
    f = await events(server, "empty.log")
    assert await f.ended() == {"complete": True, "code": 1000, "size": 0}
    assert f.messages == []


async def test_server_shutdown_ends_with_1001(server):
    a = await appender(server, "stop.log", ack=1)
    f = await events(server, "stop.log")
    a.sendMessage(b"before shutdown")
    await f.until_text("before shutdown")
    stopping = Deferred.fromCoroutine(server.stop())
    assert await f.ended() == {"complete": False, "code": 1001, "size": 15}
    await stopping


# -- refusals --------------------------------------------------------------------


async def test_never_written_is_404(server):
    f = await events(server, "missing.log")
    assert f.status == 404
    assert f.headers["httpfstream-active"] == "0"
    assert "httpfstream-size" not in f.headers


@pytest.mark.parametrize("given", ["x", "-1", "1.5", "12 13", "9" * 20])
async def test_a_bad_last_event_id_is_400_saying_why(server, given):
    await get(server.url("ids.log"), method="POST", data=b"0123456789")
    f = await events(server, "ids.log", headers={"Last-Event-ID": given})
    await f.done
    assert f.status == 400
    assert b"Last-Event-ID" in f.body and b"byte offset" in f.body
    assert f.headers["httpfstream-size"] == "10"


async def test_a_last_event_id_past_the_end_is_416(server):
    await get(server.url("ids.log"), method="POST", data=b"0123456789")
    f = await events(server, "ids.log", headers={"Last-Event-ID": "11"})
    await f.done
    assert f.status == 416
    assert f.headers["content-range"] == "bytes */10"
    assert b"past the end" in f.body


async def test_last_event_id_wins_over_offset(server):
    # An EventSource reconnects to the URL it was given, offset and all.
    await get(server.url("ids.log"), method="POST", data=b"0123456789")
    f = await events(server, "ids.log", headers={"Last-Event-ID": "7"}, offset=2)
    await f.ended()
    assert f.text == "789"
    # An empty one is none.
    g = await events(server, "ids.log", headers={"Last-Event-ID": " "}, offset=2)
    await g.ended()
    assert g.text == "23456789"


async def test_a_folder_cannot_be_followed_as_events(server):
    await get(server.url("dir/x.log"), method="POST", data=b"x")
    f = await events(server, "dir/")
    assert f.status == 404


# -- who gets what ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("text/event-stream", "text/event-stream"),
        ("text/html, text/event-stream", "text/html; charset=utf-8"),
        ("text/event-stream, text/html", "text/event-stream"),
        ("text/event-stream;q=0, */*", "text/plain; charset=utf-8"),
        ("*/*", "text/plain; charset=utf-8"),
    ],
)
async def test_the_accept_header_decides(server, accept, kind):
    await get(server.url("who.log"), method="POST", data=b"x")
    status, headers, _ = await get(server.url("who.log"), headers={"Accept": accept})
    assert (status, headers["content-type"]) == (200, kind)
    if kind == "text/event-stream":
        assert headers["vary"] == "Accept"


async def test_follow_1_with_an_event_stream_accept_is_an_event_stream(server):
    await get(server.url("f.log"), method="POST", data=b"x")
    f = await events(server, "f.log", follow=1)
    assert f.headers["content-type"] == "text/event-stream"
    assert (await f.ended())["code"] == 1000


TOKENS = """
reader-token-0123456789 follow
writer-token-0123456789 append
scoped-token-0123456789 follow team-a/
"""


async def test_tokens_are_checked_as_for_a_follow(make_server):
    server = make_server(tokens=Tokens.parse(TOKENS))
    writer = {"Authorization": "Bearer writer-token-0123456789"}
    await get(server.url("team-a/x.log"), method="POST", data=b"x", headers=writer)
    anonymous = await events(server, "team-a/x.log")
    assert anonymous.status == 401
    assert not any(k.startswith("httpfstream-") for k in anonymous.headers)
    assert (await events(server, "team-a/x.log", headers=writer)).status == 403
    scoped = await events(
        server, "team-b/x.log", access_token="scoped-token-0123456789"
    )
    assert scoped.status == 403
    # A browser's EventSource cannot send headers: the query parameter.
    f = await events(server, "team-a/x.log", access_token="scoped-token-0123456789")
    assert (await f.ended())["size"] == 1
    bearer = {"Authorization": "Bearer reader-token-0123456789"}
    g = await events(server, "team-a/x.log", headers=bearer)
    assert (await g.ended())["complete"]
    assert g.text == "x"


# -- keep-alive and back-pressure ------------------------------------------------


async def test_a_quiet_stream_gets_keep_alive_comments(make_server):
    server = make_server(event_keepalive=0.2)
    a = await appender(server, "quiet.log", ack=1)
    f = await events(server, "quiet.log")
    await f.until(lambda: len(f.comments) >= 2)
    assert f.events == []  # comments are no events
    a.sendMessage(b"x")
    await f.until_text("x")
    await close(a)
    await f.ended()
    # The timer went with the response.
    beats = [c for c in reactor.getDelayedCalls() if "_beat" in repr(c.func)]
    assert beats == []


async def test_a_client_that_stops_reading_is_not_buffered_for(server):
    a = await appender(server, "stall.log", ack=1)
    f = await events(server, "stall.log")
    f.transport.pauseProducing()  # reads nothing from now on
    block = b"0123456789abcdef" * 4096  # 64 KiB of text
    total = 64 << 20
    delivered = server.registry.counters.bytes_delivered
    for sent in range(len(block), total + 1, len(block)):
        a.sendMessage(block)
        if sent % (4 << 20) == 0:
            await a.until_ack(sent, timeout=30)
    await a.until_ack(total, timeout=30)
    # The appender was never held back; the server sent the stalled
    # client what the sockets' buffers hold (a few MB), not 64 MB.
    given = server.registry.counters.bytes_delivered - delivered
    assert given < 16 << 20, given
    assert await close(a) == 1000
    f.transport.resumeProducing()
    end = await f.ended(timeout=60)
    assert end == {"complete": True, "code": 1000, "size": total}
    assert len(f.text) == total
    ids_are_offsets(f)


# -- the keep-alive timer alone, on a task.Clock -----------------------------------


class _Stream:
    active, complete, size = True, False, 0


class _Cursor:
    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True

    def stop(self) -> None:
        self.stopped = True

    def wake(self) -> None:
        pass


class _Request(DummyRequest):
    """A request whose producer is a push producer (the dummy's is pulled)."""

    producer: Any = None

    def registerProducer(self, prod: Any, s: Any) -> None:
        self.producer = prod

    def unregisterProducer(self) -> None:
        self.producer = None


def _sink(
    clock: task.Clock, offset: int = 0
) -> tuple[EventSink, _Request, _Cursor]:
    request = _Request([b""])
    record = SessionRecord(Counters(), clock, Kind.FOLLOW_EVENTS, ("x",), "peer")
    sink = EventSink(request, record, _Stream(), offset, clock, keepalive=15)
    cursor = _Cursor()
    sink.start(cursor)
    return sink, request, cursor


COMMENT = b": keep-alive\n\n"


def test_keep_alive_only_after_15_s_of_silence():
    clock = task.Clock()
    sink, request, _ = _sink(clock)
    clock.advance(14.9)
    assert request.written == []
    clock.advance(0.1)
    assert request.written == [COMMENT]
    clock.advance(10)
    sink.send(b"data")  # at 25 s
    assert len(request.written) == 2
    clock.advance(14.9)
    assert len(request.written) == 2  # 15 s after the data, not after the comment
    clock.advance(0.1)
    assert request.written[-1] == COMMENT
    clock.advance(15)
    assert request.written[-2:] == [COMMENT, COMMENT]


def test_no_keep_alive_queued_behind_a_client_that_does_not_read():
    clock = task.Clock()
    sink, request, cursor = _sink(clock)
    sink.pauseProducing()
    assert cursor.paused
    clock.advance(60)
    assert request.written == []
    sink.resumeProducing()
    assert not cursor.paused
    clock.advance(15)
    assert request.written == [COMMENT]


def test_the_timer_ends_with_the_stream_or_the_connection():
    clock = task.Clock()
    sink, request, _ = _sink(clock)
    sink.finish(1000, "")
    assert clock.getDelayedCalls() == []
    assert request.finished
    clock = task.Clock()
    sink, request, cursor = _sink(clock)
    sink.stopProducing()  # the connection is gone
    assert clock.getDelayedCalls() == []
    assert cursor.stopped


def test_an_event_is_shared_only_by_sinks_at_the_same_offset():
    # CPython keeps one object per single byte: the same bytes object can
    # be two batches at two offsets, whose events differ.
    one = b"xy"[:1]
    assert one is b"zx"[1:]
    clock = task.Clock()
    first, first_request, _ = _sink(clock, offset=3)
    second, second_request, _ = _sink(clock, offset=7)
    first.send(one)
    second.send(one)
    assert first_request.written == [b'id: 4\ndata: "x"\n\n']
    assert second_request.written == [b'id: 8\ndata: "x"\n\n']
