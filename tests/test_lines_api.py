"""
docs/PROTOCOL.md section 13 through real sockets: ``lines=`` on snapshots,
HEAD, ``follow=1`` and WebSocket FOLLOW; ``Httpfstream-Line`` and
``Httpfstream-Offset``; ``timestamps=1``; what is refused; and the line
data's life beside the resource (kept over a restart, removed by DELETE).
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone

import pytest
from support.clients import appender, close, get, raw_request
from support.followers import open_follower
from twisted.python.filepath import FilePath

from httpfstream.core.derived import derived_paths

LOG = b"".join(b"line %d\n" % i for i in range(1, 11))  # ten lines
STAMP = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ")


async def post(server, name: str, data: bytes) -> None:
    status, _, _ = await get(server.url(name), method="POST", data=data)
    assert status == 200


def line_start(n: int) -> int:
    return sum(len(b"line %d\n" % i) for i in range(1, n))


@pytest.mark.parametrize(
    ("lines", "first", "body"),
    [
        ("-3", 8, b"line 8\nline 9\nline 10\n"),
        ("-100", 1, LOG),
        ("-0", 11, b""),
        ("4", 4, LOG[line_start(4) :]),
        ("11", 11, b""),
        ("2-3", 2, b"line 2\nline 3\n"),
        ("9-50", 9, b"line 9\nline 10\n"),
    ],
)
async def test_a_snapshot_of_lines(server, lines, first, body):
    await post(server, "l.log", LOG)
    status, headers, got = await get(server.url("l.log", lines=lines))
    assert (status, got) == (200, body)
    assert headers["httpfstream-line"] == str(first)
    assert headers["httpfstream-offset"] == str(line_start(first))
    assert headers["httpfstream-size"] == str(len(LOG))
    # The exact length, and HEAD says the same (a raw socket: treq's Agent
    # hides Content-Length).
    path = f"/logs/l.log?lines={lines}"
    for method in ("GET", "HEAD"):
        status, head, raw_body = await raw_request(server, method, path)
        assert status == 200
        assert head["content-length"] == str(len(body))
        for key in ("httpfstream-line", "httpfstream-offset"):
            assert head[key] == headers[key]


async def test_a_last_line_without_a_newline_is_a_line(server):
    await post(server, "u.log", b"one\ntwo")
    status, headers, body = await get(server.url("u.log", lines="-1"))
    assert (status, body, headers["httpfstream-line"]) == (200, b"two", "2")
    status, _, body = await get(server.url("u.log", lines="2-5"))
    assert (status, body) == (200, b"two")


@pytest.mark.parametrize(
    ("query", "headers", "code"),
    [
        ({"lines": "12"}, {}, 416),
        ({"lines": "11-12"}, {}, 416),
        ({"lines": "x"}, {}, 400),
        ({"lines": "0"}, {}, 400),
        ({"lines": "5-2"}, {}, 400),
        ({"lines": "-2", "offset": "3"}, {}, 400),
        ({"lines": "-2"}, {"Range": "bytes=0-3"}, 400),
        ({"timestamps": "1", "offset": "3"}, {}, 400),
        ({"timestamps": "1"}, {"Range": "bytes=0-3"}, 400),
        ({"lines": "2-3", "follow": "1"}, {}, 400),
    ],
)
async def test_what_is_refused(server, query, headers, code):
    await post(server, "r.log", LOG)
    status, got, body = await get(server.url("r.log", **query), headers=headers)
    assert status == code, body
    assert got["content-type"].startswith("text/plain")
    assert body.strip()  # a readable reason
    assert got["httpfstream-size"] == str(len(LOG))


async def test_lines_of_a_never_written_resource_are_404(server):
    status, _, _ = await get(server.url("nothing.log", lines="-5"))
    assert status == 404


async def test_a_follow_starts_at_a_line_and_goes_on_live(server, transport):
    writer = await appender(server, "f.log", ack=1)
    writer.sendMessage(LOG, isBinary=True)
    await writer.until_ack(len(LOG))
    follower = await open_follower(server, "f.log", transport, lines="-2")
    assert follower.live
    assert follower.headers["httpfstream-line"] == "9"
    assert follower.offset == line_start(9)
    writer.sendMessage(b"line 11\n", isBinary=True)
    expected = b"line 9\nline 10\nline 11\n"
    await follower.until_bytes(len(expected))
    assert bytes(follower.received) == expected
    assert await close(writer) == 1000
    await follower.ended()
    assert bytes(follower.received) == expected


async def test_a_follow_of_a_finished_resource_at_a_line(server, transport):
    await post(server, "done.log", LOG)
    follower = await open_follower(server, "done.log", transport, lines="10")
    await follower.ended()
    assert bytes(follower.received) == b"line 10\n"
    assert follower.headers["httpfstream-line"] == "10"


def stamped(body: bytes) -> list[tuple[float, bytes]]:
    """(seconds since the epoch, line) for each stamped line of ``body``."""
    out = []
    for line in body.splitlines(keepends=True):
        match = STAMP.match(line)
        assert match, line
        when = datetime.strptime(match.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
        seconds = when.replace(tzinfo=timezone.utc).timestamp()
        out.append((seconds, line[match.end() :]))
    return out


async def test_timestamps_say_when_each_line_was_persisted(server):
    before = time.time()
    writer = await appender(server, "t.log", ack=1)
    writer.sendMessage(b"first\nsecond, ", isBinary=True)
    await writer.until_ack(14)
    middle = time.time()
    writer.sendMessage(b"cut\nthird\n", isBinary=True)
    await writer.until_ack(24)
    after = time.time()
    status, headers, body = await get(server.url("t.log", timestamps=1))
    assert status == 200 and "content-length" not in headers
    lines = stamped(body)
    assert [text for _, text in lines] == [b"first\n", b"second, cut\n", b"third\n"]
    first, second, third = (when for when, _ in lines)
    # Milliseconds, truncated: compare with a millisecond's slack.
    assert before - 0.001 <= first <= second <= middle
    assert middle - 0.001 <= third <= after
    # With lines=, from that line, with the line's own time.
    status, headers, body = await get(server.url("t.log", timestamps=1, lines="-1"))
    assert headers["httpfstream-line"] == "3"
    assert stamped(body) == [lines[2]]
    await close(writer)


async def test_timestamps_on_a_live_follow(server, transport):
    writer = await appender(server, "tl.log", ack=1)
    writer.sendMessage(b"old\n", isBinary=True)
    await writer.until_ack(4)
    follower = await open_follower(server, "tl.log", transport, timestamps=1)
    before = time.time()
    writer.sendMessage(b"new, in two", isBinary=True)
    await writer.until_ack(15)
    writer.sendMessage(b" parts\n", isBinary=True)
    await writer.until_ack(22)
    await close(writer)
    await follower.ended()
    lines = stamped(bytes(follower.received))
    assert [text for _, text in lines] == [b"old\n", b"new, in two parts\n"]
    assert lines[1][0] >= before - 0.001


async def test_line_data_is_kept_over_a_restart_and_removed_by_delete(make_server):
    first = make_server()
    root = first.root
    await post(first, "keep.log", LOG)
    await first.stop()
    paths = derived_paths(root.path, ("keep.log",))

    def kept() -> list[bytes | None]:
        return [FilePath(p).getContent() if os.path.exists(p) else None for p in paths]

    before = kept()
    assert before[1]  # one time record at least (no count: under 64 KiB)
    server = make_server(root)
    status, headers, body = await get(server.url("keep.log", lines="-1"))
    assert (status, body, headers["httpfstream-line"]) == (200, b"line 10\n", "10")
    assert kept() == before
    status, _, _ = await get(server.url("keep.log"), method="DELETE")
    assert status == 204
    assert kept() == [None, None]
    # A new resource of that name: its own lines.
    await post(server, "keep.log", b"a\nb\n")
    status, headers, body = await get(server.url("keep.log", lines="-1"))
    assert (body, headers["httpfstream-line"]) == (b"b\n", "2")
