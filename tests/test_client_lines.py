"""
The client API's lines, times and search (PROTOCOL.md sections 13 and 14):
``follow(lines=, timestamps=)`` and ``grep(...)`` against a real server,
connections cut mid-line by a `Forwarder`; and `Position`, which decides
what a resumed follow asks for and passes over, against a plain reading
for random lines, cuts and growth (hypothesis).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clients import Conditions, appender, close, get
from support.proxies import Forwarder
from support.servers import MOUNT
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from httpfstream import client
from httpfstream.client._position import Position
from httpfstream.protocol import Param

LOG = b"".join(b"line %d\n" % i for i in range(1, 11))  # ten lines
STAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")



class Collector:
    """``on_data`` for `client.follow`, with Deferreds for what it holds."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._conditions = Conditions(lambda: f"collected {bytes(self.data)!r}")

    def __call__(self, data: bytes) -> None:
        self.data += data
        self._conditions.check()

    def until(self, text: bytes) -> Deferred[None]:
        return self._conditions.until(lambda: text in self.data)


async def post(server, name: str, data: bytes) -> None:
    status, _, _ = await get(server.url(name), method="POST", data=data)
    assert status == 200


def through(forwarder: Forwarder, name: str) -> str:
    return forwarder.url(f"{MOUNT}/{name}")


def stamped_lines(data: bytes) -> list[tuple[bytes, bytes]]:
    """(stamp, line) of each line; fails on a line without one stamp."""
    out = []
    for line in bytes(data).splitlines(keepends=True):
        match = STAMP.match(line)
        assert match, line
        rest = line[match.end() :]
        assert not STAMP.search(rest), f"stamped twice: {line!r}"
        out.append((match.group(0), rest))
    return out


# -- lines= --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "body"),
    [
        (-3, b"line 8\nline 9\nline 10\n"),
        (-100, LOG),
        (0, b""),
        (9, b"line 9\nline 10\n"),
        (11, b""),
    ],
)
async def test_follow_from_a_line_of_a_finished_resource(server, lines, body):
    await post(server, "f.log", LOG)
    got = Collector()
    result = await client.follow(server.url("f.log"), got, lines=lines)
    assert bytes(got.data) == body
    assert (result.complete, result.offset) == (True, len(LOG))


async def test_a_line_past_the_end_is_416(server):
    await post(server, "short.log", LOG)
    with pytest.raises(client.HTTPError) as past:
        await client.follow(server.url("short.log"), lambda data: None, lines=12)
    assert past.value.status == 416


def test_offset_does_not_combine_with_lines_or_timestamps():
    hfs = client.Client(reactor)
    with pytest.raises(ValueError, match="lines"):
        hfs.follow("http://127.0.0.1:1/x.log", lambda data: None, 5, lines=-2)
    with pytest.raises(ValueError, match="timestamps"):
        hfs.follow("http://127.0.0.1:1/x.log", lambda data: None, 5, timestamps=True)


@pytest.mark.parametrize("appender_ends", [False, True])
async def test_a_cut_follow_from_lines_resumes_at_the_byte_it_had(
    server, appender_ends
):
    """
    ``lines=-2`` decides only the first start: cut mid-line, the follow
    resumes at the byte it reached (over the WebSocket while the appender
    is there, or, once it has ended, a ``follow=1`` GET), so it repeats
    nothing although the last two lines are others by then.
    """
    forwarder = Forwarder(server.address[1])
    try:
        writer = await appender(server, "cut.log", ack=1)
        writer.sendMessage(LOG + b"line 11 is cut ", isBinary=True)
        await writer.until_ack(len(LOG) + 15)
        got = Collector()
        following = client.follow(
            through(forwarder, "cut.log"), got, lines=-2, retry=True
        )
        await got.until(b"line 11 is cut ")
        forwarder.target = None  # refused until the test says
        forwarder.cut()
        writer.sendMessage(b"here\nline 12\n", isBinary=True)
        await writer.until_ack(len(LOG) + 28)
        if appender_ends:
            assert await close(writer) == 1000
        forwarder.target = server.address[1]
        if not appender_ends:
            await got.until(b"line 12\n")
            assert await close(writer) == 1000
        result = await following.addTimeout(30, reactor)
        assert bytes(got.data) == b"line 10\nline 11 is cut here\nline 12\n"
        assert result.complete and result.offset == len(LOG) + 28
    finally:
        await forwarder.stop()


# -- timestamps= ---------------------------------------------------------------


async def test_timestamps_of_a_finished_resource(server):
    await post(server, "t.log", LOG)
    got = Collector()
    result = await client.follow(server.url("t.log"), got, lines=-2, timestamps=True)
    assert [line for _, line in stamped_lines(got.data)] == [b"line 9\n", b"line 10\n"]
    assert result.complete and result.offset == len(LOG)


@pytest.mark.parametrize("appender_ends", [False, True])
async def test_a_cut_stamped_follow_resumes_at_its_line_each_line_once(
    server, appender_ends
):
    """
    Stamped lines cannot resume at a byte (the server refuses ``offset``
    with ``timestamps=1``): cut mid-line, the follow asks for the line it
    was in and passes over its stamp and the part already handed on, so
    every line is there once, stamped once.
    """
    forwarder = Forwarder(server.address[1])
    try:
        writer = await appender(server, "ts.log", ack=1)
        writer.sendMessage(LOG + b"line 11 is cut ", isBinary=True)
        await writer.until_ack(len(LOG) + 15)
        got = Collector()
        following = client.follow(
            through(forwarder, "ts.log"), got, lines=-2, timestamps=True, retry=True
        )
        await got.until(b"line 11 is cut ")
        before = stamped_lines(got.data + b"\n")
        forwarder.target = None
        forwarder.cut()
        writer.sendMessage(b"here\nline 12\n", isBinary=True)
        await writer.until_ack(len(LOG) + 28)
        if appender_ends:
            assert await close(writer) == 1000
        forwarder.target = server.address[1]
        if not appender_ends:
            await got.until(b"line 12\n")
            assert await close(writer) == 1000
        result = await following.addTimeout(30, reactor)
        lines = stamped_lines(got.data)
        # (The last two lines, the unended one counted, at the start.)
        assert [line for _, line in lines] == [
            b"line 10\n",
            b"line 11 is cut here\n",
            b"line 12\n",
        ]
        # The cut line keeps the stamp printed before the cut.
        assert lines[1][0] == before[1][0]
        assert result.complete and result.offset == len(LOG) + 28
    finally:
        await forwarder.stop()


async def test_a_cut_stamped_follow_from_the_start(server):
    """No ``lines``: the first line is line 1, and a cut resumes by line too."""
    forwarder = Forwarder(server.address[1])
    try:
        writer = await appender(server, "ts1.log", ack=1)
        writer.sendMessage(b"one\ntw", isBinary=True)
        await writer.until_ack(6)
        got = Collector()
        following = client.follow(
            through(forwarder, "ts1.log"), got, timestamps=True, retry=True
        )
        await got.until(b"tw")
        forwarder.cut()
        writer.sendMessage(b"o\nthree\n", isBinary=True)
        await got.until(b"three\n")
        assert await close(writer) == 1000
        await following.addTimeout(30, reactor)
        texts = [line for _, line in stamped_lines(got.data)]
        assert texts == [b"one\n", b"two\n", b"three\n"]
    finally:
        await forwarder.stop()


# -- Position: what a resumed follow asks for and passes over --------------------


def _stamp(line: int) -> bytes:
    return b"2026-12-07T10:%02d:%02d.%03dZ " % (
        line // 3600 % 60,
        line // 60 % 60,
        line % 1000,
    )


def _split(data: bytes) -> list[bytes]:
    """``data``'s lines, each with its newline (a last one may have none)."""
    pieces = [piece + b"\n" for piece in data.split(b"\n")]
    pieces[-1] = pieces[-1][:-1]
    return [piece for piece in pieces if piece]


def _stamped(data: bytes, first: int) -> bytes:
    """``data``, which starts at line ``first``, stamped as the server does."""
    pieces = _split(data)
    return b"".join(_stamp(first + i) + piece for i, piece in enumerate(pieces))


def _line_starts(data: bytes) -> list[int]:
    """The offset of each line's first byte (and of the line after the last)."""
    return [0] + [i + 1 for i, byte in enumerate(data) if byte == 10]


_TEXT = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b" "))


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(_TEXT, min_size=1, max_size=12),
    ends_with_newline=st.booleans(),
    start_at=st.integers(-4, 4),
    attempts=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.lists(st.integers(1, 80))),
        max_size=6,
    ),
    last_pieces=st.lists(st.integers(1, 200), min_size=1),
)
def test_position_resumes_stamped_lines_once(
    texts, ends_with_newline, start_at, attempts, last_pieces
):
    """
    A stamped follow whose bodies are cut anywhere (also inside a stamp),
    delivered in pieces cut anywhere, while the resource grows (a last
    line without its newline goes on later), hands on the stamped lines
    from where it started exactly once.
    """
    resource = b"\n".join(texts) + (b"\n" if ends_with_newline else b"")
    count = resource.count(b"\n") + (
        0 if resource.endswith(b"\n") or not resource else 1
    )
    # (Past an unended last line the server would start mid-line: not asked.)
    ended = resource.endswith(b"\n") or not resource
    lines = None if start_at == 0 else min(start_at, count + ended)
    position = Position(0, lines, timestamps=True)
    out = bytearray()
    size = 0
    first: int | None = None  # where the follow started, as the server said
    final = [(1.0, 1.0, last_pieces)]  # the last attempt reads everything
    for grown, cut_at, pieces in [*attempts, *final]:
        size = max(size, int(len(resource) * grown))
        visible = resource[:size]
        starts = _line_starts(visible)
        asked = position.params()
        assert asked.get(Param.OFFSET) is None
        at = asked[Param.LINES]
        if at is None:
            line = 1
        elif str(at).startswith("-"):
            assert first is None  # only the first request counts from the end
            there = visible.count(b"\n") + (
                0 if visible.endswith(b"\n") or not visible else 1
            )
            line = max(1, there + 1 - int(str(at)[1:]))
        else:
            line = int(str(at))
        if line > len(starts):
            continue  # past the end there is now (416), or mid-line (not asked)
        if first is None:
            first = line
        assert line >= first
        offset = starts[line - 1]
        body = _stamped(visible[offset:], line)
        body = body[: int(len(body) * cut_at)]
        headers = {"httpfstream-offset": str(offset)}
        if at is not None:
            headers["httpfstream-line"] = str(line)
        position.begin(headers)
        at_byte = 0
        while pieces and at_byte < len(body):
            for n in pieces:
                out += position.feed(body[at_byte : at_byte + n])
                at_byte += n
    assert first is not None
    expected = _stamped(resource[_line_starts(resource)[first - 1] :], first)
    assert bytes(out) == expected
    assert position.offset == len(resource)


@settings(max_examples=100, deadline=None)
@given(
    resource=st.binary(max_size=200),
    cuts=st.lists(st.floats(0, 1), max_size=5),
    start=st.integers(0, 200),
)
def test_position_resumes_bytes_at_the_byte(resource, cuts, start):
    start = min(start, len(resource))
    position = Position(start, None, timestamps=False)
    out = bytearray()
    for cut in [*cuts, 1.0]:
        asked = position.params()
        assert Param.LINES not in asked or asked[Param.LINES] is None
        offset = int(asked.get(Param.OFFSET) or 0)
        position.begin({"httpfstream-offset": str(offset)})
        body = resource[offset:]
        out += position.feed(body[: int(len(body) * cut)])
    assert bytes(out) == resource[start:]


# -- grep ----------------------------------------------------------------------

BUILD = (
    b"compiling a\n"
    b"\x1b[31merror: a.c:1: no such file\x1b[0m\n"
    b"compiling b\n"
    b"Error: b.c:7: warning taken as error\n"
    b"done\n"
)


async def test_grep_hands_on_each_matching_line(server):
    await post(server, "b.log", BUILD)
    found: list[client.Match] = []
    result = await client.grep(server.url("b.log"), "error", found.append)
    assert [(m.line, m.text) for m in found] == [
        (2, "error: a.c:1: no such file"),
        (4, "Error: b.c:7: warning taken as error"),
    ]
    assert found[0].offset == len(b"compiling a\n")
    assert (result.matches, result.truncated, result.complete) == (2, False, True)
    assert result.lines == 5
    found.clear()
    await client.grep(server.url("b.log"), "Error", found.append, case=True)
    assert [m.line for m in found] == [4]
    found.clear()
    await client.grep(server.url("b.log"), r"^compiling \w$", found.append, regex=True)
    assert [m.line for m in found] == [1, 3]


async def test_grep_from_a_line(server):
    await post(server, "from.log", BUILD)
    found: list[client.Match] = []
    result = await client.grep(
        server.url("from.log"), "compiling", found.append, lines=-3
    )
    assert [m.line for m in found] == [3]
    assert result.lines == 3
    found.clear()
    await client.grep(server.url("from.log"), "error", found.append, lines=3)
    assert [m.line for m in found] == [4]


async def test_grep_with_no_match_and_an_invalid_regex(server):
    await post(server, "n.log", BUILD)
    result = await client.grep(server.url("n.log"), "panic", lambda m: None)
    assert (result.matches, result.complete) == (0, True)
    with pytest.raises(client.HTTPError) as bad:
        await client.grep(server.url("n.log"), "(", lambda m: None, regex=True)
    assert bad.value.status == 400 and bad.value.reason
    with pytest.raises(ValueError):
        client.Client(reactor).grep(server.url("n.log"), "", lambda m: None)


async def test_grep_max_matches_and_pages(server):
    await post(server, "m.log", b"".join(b"hit %d\n" % i for i in range(1, 8)))
    found: list[client.Match] = []
    result = await client.grep(server.url("m.log"), "hit", found.append, max_matches=3)
    assert [m.line for m in found] == [1, 2, 3]
    assert (result.matches, result.truncated) == (3, True)


async def test_a_cut_live_grep_resumes_after_its_last_match(server):
    """
    Cut after a match, the search resumes at the line after it: every
    match once, the ones appended while it was away included.
    """
    forwarder = Forwarder(server.address[1])
    try:
        writer = await appender(server, "g.log", ack=1)
        writer.sendMessage(b"error 1\nfine\nerror 3\n", isBinary=True)
        await writer.until_ack(21)
        found: list[client.Match] = []
        seen = Conditions(lambda: f"found {found}")

        def on_match(match: client.Match) -> None:
            found.append(match)
            seen.check()

        searching = client.grep(
            through(forwarder, "g.log"), "error", on_match, retry=True
        )
        await seen.until(lambda: len(found) == 2)
        forwarder.target = None
        forwarder.cut()
        writer.sendMessage(b"fine\nerror 5\n", isBinary=True)
        await writer.until_ack(34)
        forwarder.target = server.address[1]
        await seen.until(lambda: len(found) == 3)
        writer.sendMessage(b"error 6\n", isBinary=True)
        await seen.until(lambda: len(found) == 4)
        assert await close(writer) == 1000
        result = await searching.addTimeout(30, reactor)
        assert [m.line for m in found] == [1, 3, 5, 6]
        assert (result.matches, result.complete) == (4, True)
    finally:
        await forwarder.stop()
