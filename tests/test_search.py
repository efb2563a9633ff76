"""
Search, docs/PROTOCOL.md section 14.

First the scanner alone (`httpfstream.core.search`): a hypothesis property
that for random bytes (escape sequences whole and cut, invalid UTF-8, CRs,
long lines) cut at random places, random patterns, starts, last lines and
limits, the scanner finds exactly what a plain line-by-line reading finds;
then what a line's text is and how case folds.

Then the wire, against a real server with treq reading the NDJSON as it
streams: the answers, the refusals, ``follow=1`` going on live, a big
search while another resource's follower keeps getting its appends, and a
client that stops reading.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import treq
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clients import Conditions, appender, close, get, raw
from support.followers import open_follower
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from httpfstream.core.records import Kind
from httpfstream.core.search import Found, Pattern, PatternError, Scanner

# -- a plain reading, to compare the scanner with --------------------------------


def plain_strip(line: str) -> str:
    """
    The escape sequences of one line's decoded content (no newline)
    removed, walked character by character (not the scanner's regex).
    """
    out, i, n = [], 0, len(line)
    while i < n:
        c = line[i]
        if c != "\x1b":
            out.append(c)
            i += 1
            continue
        i += 1
        if i == n:
            break
        kind = line[i]
        if kind == "[":
            j = i + 1
            while j < n and "0" <= line[j] <= "?":
                j += 1
            while j < n and " " <= line[j] <= "/":
                j += 1
            if j == n:
                i = n  # cut off by the end of the line
            elif "@" <= line[j] <= "~":
                i = j + 1
            else:
                i += 1  # not a CSI: ESC and "[" as a final byte
        elif kind == "]" or kind in "PX^_":
            stops = "\x07\x1b" if kind == "]" else "\x1b"
            j = i + 1
            while j < n and line[j] not in stops:
                j += 1
            if j < n and line[j] == "\x07":
                j += 1
            elif line.startswith("\x1b\\", j):
                j += 2
            i = j
        else:
            j = i
            while j < n and " " <= line[j] <= "/":
                j += 1
            if j == n:
                i = n
            elif "0" <= line[j] <= "~":
                i = j + 1
            # else: a lone ESC, dropped alone
    return "".join(out)


def plain_lines(data: bytes) -> list[bytes]:
    lines, at = [], 0
    while at < len(data):
        end = data.find(b"\n", at)
        end = len(data) if end < 0 else end + 1
        lines.append(data[at:end])
        at = end
    return lines


def plain_text(line: bytes, max_line: int) -> str:
    decoded = line[:max_line].decode("utf-8", "replace")
    ended = decoded.endswith("\n")
    text = plain_strip(decoded[:-1] if ended else decoded)
    if ended and text.endswith("\r"):
        text = text[:-1]
    return text


def plain_search(
    data: bytes,
    pattern: Pattern,
    first: int = 1,
    last: int | None = None,
    most: int = 1000,
    max_line: int = 1 << 20,
) -> tuple[list[Found], int, bool]:
    """(found, lines searched, truncated), one line at a time."""
    found: list[Found] = []
    offset, searched = 0, 0
    for number, line in enumerate(plain_lines(data), start=1):
        here, offset = offset, offset + len(line)
        if number < first:
            continue
        if last is not None and number > last:
            break
        searched += 1
        text = plain_text(line, max_line)
        matched = pattern.matches(text)
        if not pattern.regex and pattern.case:
            # An independent word on the simplest case.
            assert matched == (pattern.text in text)
        if matched:
            if len(found) == most:
                return found, searched, True
            found.append(Found(number, here, text))
    return found, searched, False


# -- the scanner against it -------------------------------------------------------

PIECES = [
    b"a",
    b"b",
    b"A",
    b"B ",
    b"\xc3\xa9",  # é
    b"\xc3\x89",  # É
    b"\xff",
    b"\xe2\x82",  # a cut sequence
    b"\xe2\x82\xac",  # €
    b"\n",
    b"\r",
    b"\r\n",
    b"\x1b",
    b"\x1b[",
    b"\x1b[31m",
    b"\x1b[0;1",
    b"\x1b[?25l",
    b"\x1b[2K",
    b"\x1b(B",
    b"\x1b]0;title\x07",
    b"\x1b]8;;\xff\x1b\\",
    b"\x1b]0;",
    b"\x1bPq\xfe",
    b"\x1b\\",
    b"\x07",
    b"\x1b\x1b",
    b"[",
    b"]",
]

ESCAPES = [p for p in PIECES if p.startswith(b"\x1b")] + [b"\xfe", b"\r"]
SUBSTRINGS = [
    "a",
    "ab",
    "aB",
    "A A",
    "é",
    "É",
    "€",
    "\ufffd",
    "a\r",
    "b\n",
    "[",
    "\x1b",
]
REGEXES = [
    "a",
    "^a",
    "b$",
    "a.b",
    r"\ba",
    "a|é",
    r"a\s+b",
    "^$",
    r"\Aa",
    r"b\z",
    "(?-m)^a",
    "(?s)a.b",
    "[^a]",
    "é+",
    r"\x{FFFD}",
    r"\n",
    "(?i)ab",
    "(?-i)A",
    r"\Qa\E",
    "b*",
]
#: What lines are made of, besides the pieces: words a pattern looks for.
WORDS = ["ab", "a b", "A A", "é€", "a\r", "b\n", "\ufffd"]


@st.composite
def interleaved(draw: Any, word: str) -> bytes:
    """
    ``word`` with escape sequences, invalid bytes or CRs between its
    letters, its case changed here and there: what a search must see
    through (or not).
    """
    out = b""
    for letter in word:
        if draw(st.booleans()):
            letter = letter.swapcase()
        out += letter.encode() + b"".join(
            draw(st.lists(st.sampled_from(ESCAPES), max_size=2))
        )
    return out


@st.composite
def searches(draw: Any) -> tuple[Pattern, bytes]:
    """
    A pattern, and lines made to hold what it looks for, nearly or quite:
    mostly words with escapes, invalid bytes and CRs between their letters,
    some pieces of anything, each line ended by LF, CRLF or nothing.
    """
    regex, case = draw(st.booleans()), draw(st.booleans())
    text = draw(st.sampled_from(REGEXES if regex else SUBSTRINGS))
    words = WORDS if regex else [*WORDS, text, text]
    word = st.sampled_from(words).flatmap(interleaved)
    fragment = st.one_of(word, word, st.sampled_from(PIECES))
    ending = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r\r\n", b""])
    line = st.tuples(st.lists(fragment, max_size=4), ending).map(
        lambda parts: b"".join(parts[0]) + parts[1]
    )
    lines = draw(st.lists(line, max_size=8))
    return Pattern(text, regex=regex, case=case), b"".join(lines)


@settings(max_examples=1500, deadline=None)
@given(
    search=searches(),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    first=st.sampled_from([1, 1, 1, 2, 4]),
    last=st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=8)),
    most=st.sampled_from([1000, 1000, 1, 2]),
    max_line=st.sampled_from([1 << 20, 1 << 20, 1, 2, 3, 7]),
)
def test_the_scanner_finds_what_a_plain_reading_finds(
    search, cuts, first, last, most, max_line
):
    pattern, data = search
    lines = plain_lines(data)
    first = min(first, len(lines) + 1)
    start = sum(len(line) for line in lines[: first - 1])
    expected = plain_search(data, pattern, first, last, most, max_line)

    scanner = Scanner(
        pattern, line=first, offset=start, last=last, most=most, max_line=max_line
    )
    rest = data[start:]
    found, at = [], 0
    for cut in [*sorted({c % (len(rest) + 1) for c in cuts}), len(rest)]:
        found += scanner.feed(rest[at:cut])
        at = cut
    found += scanner.close()
    assert (found, scanner.lines, scanner.truncated) == expected
    assert scanner.matches == len(found)


@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_a_line_longer_than_the_limit_is_searched_in_its_first_bytes(piece):
    # The second needle is past the limit: not searched, not kept.
    data = b"0123456789needle" + b"x" * 100 + b"needle\nneedle\n"
    scanner = Scanner(Pattern("needle"), max_line=16)
    found = []
    for at in range(0, len(data), piece):
        found += scanner.feed(data[at : at + piece])
    found += scanner.close()
    assert found == [
        Found(1, 0, "0123456789needle"),
        Found(2, len(data) - 7, "needle"),
    ]
    assert scanner.lines == 2


# -- a line's text, and case -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "text"),
    [
        # Colours, as CI runners print them.
        (b"\x1b[32mPASSED\x1b[0m tests/a.py\n", "PASSED tests/a.py"),
        (b"\x1b[1;31mERR\x1b[0;1mOR\x1b[m\n", "ERROR"),
        # GitLab's section markers: a CR and an erase-line.
        (
            b"section_start:17:build\r\x1b[0Kbuilding\n",
            "section_start:17:build\rbuilding",
        ),
        # A title (OSC, BEL) and a hyperlink (OSC, ST).
        (b"\x1b]0;job\x07\x1b]8;;https://x.test/\x1b\\link\x1b]8;;\x1b\\\n", "link"),
        # Cursor and charset escapes, a private CSI.
        (b"\x1b[?25l\x1b(Bspin\x1b[?25h\n", "spin"),
        # CRLF: the CR before the newline goes, other CRs stay.
        (b"windows\r\n", "windows"),
        (b"50%\r100%\r\n", "50%\r100%"),
        # Invalid UTF-8 is U+FFFD.
        (b"caf\xe9\n", "caf\ufffd"),
        # A sequence cut off by the line's end goes to the end.
        (b"cut \x1b[31\n", "cut "),
        # A lone ESC goes alone.
        (b"a\x1b\x01b\n", "a\x01b"),
        # No newline: the last line.
        (b"last", "last"),
    ],
)
def test_a_lines_text(line, text):
    assert plain_text(line, 1 << 20) == text
    scanner = Scanner(Pattern(text[:3] or "x"))
    assert scanner.feed(line) + scanner.close() == [Found(1, 0, text)]


@pytest.mark.parametrize(
    ("needle", "text", "found"),
    [
        ("error", "ERROR: x", True),
        ("é", "CAFÉ", True),
        ("straße", "STRAẞE", True),
        ("\u03c3", "\u038c\u03a3\u039f\u03a3", True),  # sigma, in capitals
        ("k", "\u212a", True),  # the Kelvin sign folds to k
        ("straße", "STRASSE", False),  # simple folding: ß is not ss
    ],
)
def test_case_folds_for_every_script(needle, text, found):
    assert Pattern(needle).matches(text) is found
    assert Pattern(needle, case=True).matches(text) is (needle in text)


@pytest.mark.parametrize(
    ("text", "regex"),
    [("", False), ("", True), ("a(", True), ("[z-a]", True), ("a{1001}", True)],
)
def test_patterns_that_cannot_be_searched(text, regex):
    with pytest.raises(PatternError):
        Pattern(text, regex=regex)


def test_a_regex_is_matched_in_linear_time():
    # What backtracks for minutes in Python's re.
    scanner = Scanner(Pattern(r"(a+)+$", regex=True))
    found = scanner.feed(b"a" * 100_000 + b"!\n")
    assert found == []
    assert scanner.lines == 1


# -- over the wire -------------------------------------------------------------------


class Answer:
    """
    A search's answer read as it streams (treq): the status, the headers
    (lower-case names), each JSON object as its line arrives, and whether
    the body ended whole.
    """

    def __init__(self, response: Any) -> None:
        self.status = response.code
        self.headers = {
            k.decode().lower(): v[-1].decode()
            for k, v in response.headers.getAllRawHeaders()
        }
        self.objects: list[dict[str, Any]] = []
        self.body = bytearray()
        self.ended: str | None = None
        self._partial = b""
        self._conditions = Conditions(
            lambda: f"{len(self.objects)} objects, {self.objects[-1:]}, {self.ended}"
        )
        treq.collect(response, self._data).addCallbacks(
            lambda _: self._end("whole"),
            lambda failure: self._end(f"cut: {failure.getErrorMessage()}"),
        )

    def _data(self, data: bytes) -> None:
        self.body += data
        if self.status == 200:
            *lines, self._partial = (self._partial + data).split(b"\n")
            self.objects += [json.loads(line) for line in lines]
        self._conditions.check()

    def _end(self, how: str) -> None:
        self.ended = how
        self._conditions.check()
        self._conditions.fail("the answer ended")

    def until(self, predicate: Any, timeout: float = 10) -> Deferred[None]:
        return self._conditions.until(predicate, timeout)

    async def finished(self, timeout: float = 30) -> dict[str, Any]:
        """The done object, once the answer has ended."""
        await self._conditions.until(lambda: self.ended is not None, timeout)
        assert self.ended == "whole", self.ended
        assert self._partial == b""
        assert self.objects[-1]["done"] is True
        assert all("done" not in o for o in self.objects[:-1])
        return self.objects[-1]

    @property
    def found(self) -> list[tuple[int, int, str]]:
        objects = self.objects
        return [(o["line"], o["offset"], o["text"]) for o in objects if "line" in o]


async def search(server: Any, name: str, **query: Any) -> Answer:
    response = await treq.get(server.url(name, **query), unbuffered=True)
    return Answer(response)


async def post(server: Any, name: str, data: bytes) -> None:
    status, _, _ = await get(server.url(name), method="POST", data=data)
    assert status == 200


LINES = [
    b"\x1b[36m10:00:01\x1b[0m \x1b[1;32mINFO\x1b[0m starting build\n",
    b"compiling main.c\r\n",
    b"\x1b[1;31mERR\x1b[0mOR: main.c:3: expected ';'\n",
    b"caf\xe9 au lait: Error in the cup\n",
    b"\x1b]0;job 42\x07\x1b[33mwarning\x1b[39m: unused \xc3\xa9l\xc3\xa9ment\n",
    b"section_start:1700000000:tests\r\x1b[0Kerror count 0",  # no newline
]
LOG = b"".join(LINES)


def at(line: int) -> int:
    """The offset of line ``line`` of LOG."""
    return sum(len(x) for x in LINES[: line - 1])


async def test_a_substring_finds_lines_whatever_their_case(server):
    await post(server, "build.log", LOG)
    answer = await search(server, "build.log", grep="error")
    done = await answer.finished()
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["httpfstream-size"] == str(len(LOG))
    assert answer.headers["httpfstream-complete"] == "1"
    assert answer.found == [
        (3, at(3), "ERROR: main.c:3: expected ';'"),
        (4, at(4), "caf\ufffd au lait: Error in the cup"),
        (6, at(6), "section_start:1700000000:tests\rerror count 0"),
    ]
    assert done == {"done": True, "matches": 3, "truncated": False, "lines": 6}


async def test_case_and_non_ascii(server):
    await post(server, "build.log", LOG)
    answer = await search(server, "build.log", grep="Error", case=1)
    await answer.finished()
    assert [line for line, _, _ in answer.found] == [4]
    answer = await search(server, "build.log", grep="ÉLÉMENT")
    await answer.finished()
    assert answer.found == [(5, at(5), "warning: unused élément")]
    answer = await search(server, "build.log", grep="ÉLÉMENT", case="1")
    assert (await answer.finished())["matches"] == 0


async def test_a_regular_expression(server):
    await post(server, "build.log", LOG)
    answer = await search(server, "build.log", grep=r"^(info|warning)\b", regex=1)
    await answer.finished()
    # The escapes are gone before matching: the INFO line starts with a time.
    assert [line for line, _, _ in answer.found] == [5]
    answer = await search(server, "build.log", grep=r"main\.c$", regex=1)
    await answer.finished()
    # CRLF: the CR is not part of the text.
    assert answer.found == [(2, at(2), "compiling main.c")]


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ({"grep": ""}, "empty"),
        ({"grep": "a(", "regex": 1}, "missing )"),
        ({"grep": "x", "max": 0}, "max"),
        ({"grep": "x", "max": 100_001}, "max"),
        ({"grep": "x", "max": "ten"}, "max"),
        ({"grep": "x", "offset": 3}, "lines="),
    ],
)
async def test_what_cannot_be_searched_is_400(server, query, why):
    await post(server, "build.log", LOG)
    status, headers, body = await get(server.url("build.log", **query))
    assert status == 400
    assert why in body.decode()
    assert headers["httpfstream-size"] == str(len(LOG))


async def test_max_and_truncated(server):
    await post(server, "many.log", b"".join(b"hit %d\n" % i for i in range(10)))
    answer = await search(server, "many.log", grep="hit", max=3)
    done = await answer.finished()
    assert [line for line, _, _ in answer.found] == [1, 2, 3]
    # It stopped at the fourth match: four lines searched, more left.
    assert done == {"done": True, "matches": 3, "truncated": True, "lines": 4}
    answer = await search(server, "many.log", grep="hit", max=10)
    done = await answer.finished()
    assert done == {"done": True, "matches": 10, "truncated": False, "lines": 10}


async def test_lines_restrict_the_search(server):
    await post(server, "build.log", LOG)
    answer = await search(server, "build.log", grep="e", lines="3-5")
    done = await answer.finished()
    assert (
        answer.headers["httpfstream-line"],
        answer.headers["httpfstream-offset"],
    ) == (
        "3",
        str(at(3)),
    )
    assert [line for line, _, _ in answer.found] == [3, 4, 5]
    assert (done["lines"], done["matches"]) == (3, 3)
    answer = await search(server, "build.log", grep="error", lines="-2")
    done = await answer.finished()
    assert answer.found == [(6, at(6), "section_start:1700000000:tests\rerror count 0")]
    assert done["lines"] == 2
    answer = await search(server, "build.log", grep="error", lines="4")
    assert (await answer.finished())["lines"] == 3
    status, headers, _ = await get(server.url("build.log", grep="x", lines="8"))
    assert (status, headers["httpfstream-size"]) == (416, str(len(LOG)))
    status, _, body = await get(
        server.url("build.log", grep="x", lines="1-2", follow=1)
    )
    assert status == 400, body
    status, _, body = await get(server.url("build.log", grep="x", timestamps=1))
    assert (status, b"timestamps" in body) == (400, True)


async def test_never_written_folders_and_websockets(server):
    status, headers, _ = await get(server.url("missing.log", grep="x"))
    assert (status, headers["httpfstream-active"]) == (404, "0")
    await post(server, "dir/a.log", b"x\n")
    status, _, _ = await get(server.url("dir/", grep="x"))
    assert status == 404
    status, _, _ = await get(server.url("dir", grep="x"))
    assert status == 404


async def test_tokens_as_for_reading(make_server):
    from httpfstream.web.auth import Tokens

    secured = make_server(
        tokens=Tokens.parse(
            "writer-token-0123456789 append,follow\n"
            "append-token-0123456789 append\n"
            "team-token-00123456789 follow team-a/\n"
        )
    )
    writer = {"Authorization": "Bearer writer-token-0123456789"}
    await get(secured.url("team-a/x.log"), method="POST", data=b"x\n", headers=writer)
    assert (await get(secured.url("team-a/x.log", grep="x")))[0] == 401
    url = secured.url("team-a/x.log", grep="x", access_token="append-token-0123456789")
    assert (await get(url))[0] == 403
    answer = await search(
        secured, "team-a/x.log", grep="x", access_token="team-token-00123456789"
    )
    assert (await answer.finished())["matches"] == 1


async def test_follow_goes_on_over_live_lines(server):
    a = await appender(server, "live.log", ack=1)
    a.sendMessage(b"old error\nnothing\n")
    await a.until_ack(18)
    answer = await search(server, "live.log", grep="error", follow=1)
    await answer.until(lambda: len(answer.objects) == 1)
    assert answer.headers["httpfstream-active"] == "1"
    assert answer.found == [(1, 0, "old error")]
    # A line appended later is found before the appender ends...
    a.sendMessage(b"quiet\nnew ERROR\n")
    await answer.until(lambda: len(answer.objects) == 2)
    assert answer.found[-1] == (4, 24, "new ERROR")
    # ...and a line is searched once whole.
    a.sendMessage(b"half an err")
    await a.until_ack(45)
    a.sendMessage(b"or\nlast error, no newline")
    await answer.until(lambda: len(answer.objects) == 3)
    assert answer.found[-1] == (5, 34, "half an error")
    assert answer.ended is None
    assert await close(a) == 1000
    done = await answer.finished()
    assert answer.found[-1] == (6, 48, "last error, no newline")
    assert done == {
        "done": True,
        "matches": 4,
        "truncated": False,
        "lines": 6,
        "complete": True,
    }


async def test_follow_from_the_last_lines(server):
    a = await appender(server, "tail.log", ack=1)
    a.sendMessage(b"error 1\nerror 2\nerror 3\n")
    await a.until_ack(24)
    answer = await search(server, "tail.log", grep="error", follow=1, lines=-1)
    await answer.until(lambda: len(answer.objects) == 1)
    assert answer.headers["httpfstream-line"] == "3"
    a.sendMessage(b"error 4\n")
    await answer.until(lambda: len(answer.objects) == 2)
    await close(a)
    done = await answer.finished()
    assert answer.found == [(3, 16, "error 3"), (4, 24, "error 4")]
    assert (done["lines"], done["complete"]) == (2, True)


async def test_follow_of_a_lost_appender_is_not_complete(server):
    a = await appender(server, "lost.log", ack=1)
    a.sendMessage(b"error one\n")
    await a.until_ack(10)
    answer = await search(server, "lost.log", grep="error", follow=1)
    await answer.until(lambda: len(answer.objects) == 1)
    a.transport.abortConnection()
    done = await answer.finished()
    assert (done["matches"], done["complete"]) == (1, False)


async def test_a_websocket_search_is_400(server):
    from support.clients import ws

    await post(server, "x.log", b"x\n")
    probe = await ws(server.ws_url("x.log", grep="x"))
    assert probe.status == 400


def ci_log(lines: int) -> bytes:
    """A build log's lines: coloured times and levels, steps, now and then a failure."""
    out = []
    for i in range(lines):
        if i % 1000 == 999:
            out.append(b"\x1b[31mstep %d \x1b[1mFAILED\x1b[0m: exit status 2\n" % i)
        else:
            out.append(
                b"\x1b[36m10:%02d:%02d\x1b[0m \x1b[32mINFO\x1b[0m compiling"
                b" src/module_%d.c -o build/module_%d.o -O2 -Wall\n"
                % (i // 60 % 60, i % 60, i, i)
            )
    return b"".join(out)


async def test_a_big_search_leaves_the_others_on_time(server):
    # 40 MB, searched with a regular expression (the slower path).
    lines = 500_000
    server.root.makedirs(ignoreExistingDirectory=True)
    server.file("big.log").setContent(ci_log(lines))
    a = await appender(server, "other.log", ack=1)
    f = await open_follower(server, "other.log", "ws")
    answer = await search(server, "big.log", grep=r"^step \d+ failed", regex=1)
    # Each append reaches the follower while the search goes on: the search
    # takes a slice per turn of the reactor, and hundreds of turns.
    during = 0
    for i in range(20):
        a.sendMessage(b"line %d\n" % i)
        await f.until_bytes(len(b"".join(b"line %d\n" % j for j in range(i + 1))))
        during += answer.ended is None
    done = await answer.finished(timeout=120)
    assert during == 20
    assert done == {"done": True, "matches": 500, "truncated": False, "lines": lines}
    assert answer.found[0] == (
        1000,
        answer.found[0][1],
        "step 999 FAILED: exit status 2",
    )
    await close(a)


def dechunked(body: bytes) -> bytes:
    out, at = bytearray(), 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


async def test_a_client_that_stops_reading_holds_the_search_not_the_server(server):
    # Every line matches: the answer is bigger than the resource (28 MB).
    lines = 100_000
    data = b"".join(b"hit %06d %s\n" % (i, b"x" * 228) for i in range(lines))
    server.root.makedirs(ignoreExistingDirectory=True)
    server.file("hits.log").setContent(data)
    counters = server.registry.counters
    before = counters.bytes_delivered
    stalled = await raw(server)
    stalled.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10
    )
    stalled.send(
        b"GET /logs/hits.log?grep=hit&max=100000 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    await stalled.until(lambda b: b"\r\n\r\n" in b)
    stalled.transport.pauseProducing()
    # The same search by a client that reads: it ends once the server has
    # scanned every slice, as far as a search that ignored its client
    # would have got.
    reading = await search(server, "hits.log", grep="hit", max=100_000)
    assert (await reading.finished(timeout=120))["matches"] == lines
    held = counters.bytes_delivered - before - len(reading.body)
    # What the stalled search wrote is what the sockets hold (4 MiB of send
    # buffer here at most) and a slice: not the 28 MB it would write.
    assert held < 8 << 20, held
    assert counters.open[Kind.SEARCH] == 1
    # Reading again, it gets every line.
    stalled.transport.resumeProducing()
    await stalled.closed.addTimeout(120, reactor)
    body = dechunked(stalled.body()).split(b"\n")
    assert body[-1] == b""
    assert json.loads(body[-2]) == {
        "done": True,
        "matches": lines,
        "truncated": False,
        "lines": lines,
    }
    assert len(body) == lines + 2
