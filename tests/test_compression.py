"""
Compression (docs/PROTOCOL.md section 16) through real sockets: gzip for
snapshots and ``follow=1`` (read raw and gunzipped here with zlib, as they
arrive), permessage-deflate for WebSocket followers (raw frames, Autobahn
clients, the original Go follower) and appenders.
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import os
import random

import pytest
import treq
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateResponseAccept,
)
from support.clients import (
    Conditions,
    appender,
    close,
    finished,
    get,
    raw_request,
    ws,
)
from support.compressed import deflate_follower, gzip_get
from support.followers import open_follower
from test_compat import GoFollower
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from httpfstream.web import deflate
from httpfstream.web.gzip import wants_gzip


@pytest.fixture(autouse=True)
def _budget():
    """Each test starts with the server's whole compression budget."""
    deflate.SHARED.budget = deflate.Budget(deflate.RATE, deflate.BURST)


DEFLATE = {
    "perMessageCompressionOffers": [PerMessageDeflateOffer()],
    "perMessageCompressionAccept": PerMessageDeflateResponseAccept,
}


def log_text(n: int, seed: int = 0) -> bytes:
    """About ``n`` bytes of CI-like log lines with ANSI colours."""
    rng = random.Random(seed)
    lines = []
    size = 0
    while size < n:
        i = len(lines)
        millis = rng.randrange(1000)
        stamp = f"\x1b[90m10:{i // 60 % 60:02d}:{i % 60:02d}.{millis:03d}\x1b[0m "
        kind = rng.random()
        if kind < 0.5:
            line = f"gcc -O2 -c src/mod_{rng.randrange(500)}.c -o build/mod.o"
        elif kind < 0.8:
            ok = rng.random() < 0.9
            verdict = "\x1b[32mPASSED" if ok else "\x1b[31mFAILED"
            line = f"tests/test_api.py::test_{rng.randrange(9999)} {verdict}\x1b[0m"
        else:
            line = f"\x1b[33mwarning:\x1b[0m unused variable 'v{rng.randrange(99)}'"
        lines.append((stamp + line + "\n").encode())
        size += len(lines[-1])
    return b"".join(lines)


def gunzip(body: bytes) -> bytes:
    """The whole gzip stream, trailer checked (CRC-32, length)."""
    return gzip_module.decompress(body)


# -- Accept-Encoding ----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=0, *", False),  # named beats *
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0.5, identity", False),  # identity preferred
        ("gzip;q=0.5, identity;q=0.5", True),  # a tie: gzip
        ("gzip;q=0.5", True),  # identity not weighed: gzip
        ("gzip;q=2", False),  # not a weight: refused
        ("gzip;q=abc", False),
        ("gzip;q=0, gzip", False),  # the first mention counts
    ],
)
def test_accept_encoding_is_read_with_its_weights(header, gzipped):
    assert wants_gzip(None if header is None else header.encode()) is gzipped


# -- gzip: snapshots ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 10_000, 3_000_000], ids=["empty", "10K", "3M"])
async def test_gzip_snapshot_round_trip_equals_the_file(server, size):
    content = log_text(size, seed=size)[:size]
    server.file("snap.log").parent().makedirs(ignoreExistingDirectory=True)
    server.file("snap.log").setContent(content)
    reader = await gzip_get(server.url("snap.log"))
    await reader.until_ended()
    assert reader.status == 200
    headers = reader.headers
    assert headers["content-encoding"] == "gzip"
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    vary = {v.strip().lower() for v in headers["vary"].split(",")}
    assert vary == {"accept", "accept-encoding"}
    assert headers["httpfstream-size"] == str(size)
    assert bytes(reader.decoded) == content
    assert reader.whole_gzip
    assert gunzip(bytes(reader.wire)) == content
    if size > 1000:
        assert len(reader.wire) < len(content) / 3, "log text is compressed"
    # treq asks for gzip and decodes it: the same bytes.
    status, _, body = await get(server.url("snap.log"))
    assert (status, body) == (200, content)


async def test_head_announces_what_the_get_would(server):
    content = log_text(5000)
    await get(server.url("head.log"), method="POST", data=content)
    for encoding in ("gzip", "identity"):
        got = await gzip_get(server.url("head.log"), Accept_Encoding=encoding)
        await got.until_ended()
        head = await gzip_get(
            server.url("head.log"), method="HEAD", Accept_Encoding=encoding
        )
        # The headers of the GET, but for the date and the framing of its
        # body (chunked, which a HEAD has none to frame).
        framing = {"date", "transfer-encoding"}
        expected = {k: v for k, v in got.headers.items() if k not in framing}
        assert {k: v for k, v in head.headers.items() if k != "date"} == expected
        if encoding == "gzip":
            assert head.headers["content-encoding"] == "gzip"
            assert "content-length" not in head.headers
        else:
            assert "content-encoding" not in head.headers
            assert head.headers["content-length"] == str(len(content))
        assert not head.wire


@pytest.mark.parametrize(
    ("range_", "status", "body"),
    [("bytes=10-19", 206, slice(10, 20)), ("bytes=-7", 206, slice(-7, None))],
)
async def test_range_with_gzip_is_the_identity_206(server, range_, status, body):
    content = log_text(4000)
    await get(server.url("range.log"), method="POST", data=content)
    code, headers, got = await raw_request(
        server,
        "GET",
        "/logs/range.log",
        Range=range_,
        Accept_Encoding="gzip",
    )
    assert code == status
    assert "content-encoding" not in headers
    assert headers["content-length"] == str(len(content[body]))
    assert got == content[body]


@pytest.mark.parametrize(
    "accept_encoding", ["gzip;q=0", "identity", "gzip;q=0.3, identity;q=0.9", ""]
)
async def test_refused_gzip_gets_the_bytes_as_they_are(server, accept_encoding):
    content = log_text(4000)
    await get(server.url("plain.log"), method="POST", data=content)
    for query in ("", "?follow=1"):
        code, headers, got = await raw_request(
            server, "GET", "/logs/plain.log" + query, Accept_Encoding=accept_encoding
        )
        assert code == 200
        assert "content-encoding" not in headers
        assert headers["content-length"] == str(len(content))
        assert "accept-encoding" in headers["vary"].lower()
        assert got == content


async def test_a_large_gzip_snapshot_streams_with_back_pressure(server):
    total = 48 << 20
    # Random bytes: compressed, they are as many on the wire.
    content = random.Random(1).randbytes(total)
    server.file("big.bin").setContent(content)
    reader = await gzip_get(server.url("big.bin"))
    assert reader.gzipped
    assert reader.transport is not None
    reader.transport.pauseProducing()  # the reader stops reading
    counters = server.registry.counters
    # Other clients are served meanwhile; once the snapshot's sending has
    # stopped, it has stopped well short of the end: the cursor waits for
    # the transport, the server buffers nothing more.
    previous = -1
    for _ in range(200):
        for _ in range(5):
            status, _, _ = await get(server.url("big.bin"), method="HEAD")
            assert status == 200
        if counters.bytes_delivered == previous:
            break
        previous = counters.bytes_delivered
    else:
        raise AssertionError("the snapshot never stopped while nobody read it")
    assert counters.bytes_delivered < total // 3, counters.bytes_delivered
    reader.transport.resumeProducing()
    await reader.until_ended(timeout=60)
    assert reader.whole_gzip
    assert hashlib.sha256(reader.decoded).digest() == hashlib.sha256(content).digest()


# -- gzip: follow=1 -----------------------------------------------------------


async def test_a_gzip_follow_is_flushed_after_every_batch(server):
    a = await appender(server, "live.log", ack=1)
    lines = log_text(20_000, seed=3).splitlines(keepends=True)
    a.sendMessage(lines[0])
    await a.until_ack(len(lines[0]))
    reader = await gzip_get(server.url("live.log", follow=1))
    assert reader.status == 200 and reader.gzipped
    assert reader.headers["httpfstream-active"] == "1"
    assert "content-length" not in reader.headers
    assert "accept-encoding" in reader.headers["vary"].lower()
    sent = lines[0]
    await reader.until_decoded(len(sent))
    for line in lines[1:50]:
        # Nothing else is appended until this line is decoded: it did not
        # wait in the compressor for more.
        a.sendMessage(line)
        sent += line
        await reader.until_decoded(len(sent))
        assert bytes(reader.decoded) == sent
    assert not reader.ended
    # Bigger batches too, then the end: the trailer.
    rest = b"".join(lines[50:])
    for at in range(0, len(rest), 3000):
        a.sendMessage(rest[at : at + 3000])
    sent += rest
    assert await close(a) == 1000
    await reader.until_ended()
    assert reader.whole_gzip
    assert bytes(reader.decoded) == sent == server.file("live.log").getContent()
    assert gunzip(bytes(reader.wire)) == sent


async def test_gzip_follow_endings(make_server):
    server = make_server()
    # The appender lost: the body ends whole, as an identity body does.
    a = await appender(server, "lost.log", ack=1)
    a.sendMessage(b"before the loss\n")
    await a.until_ack(16)
    reader = await gzip_get(server.url("lost.log", follow=1))
    await reader.until_decoded(16)
    assert a.transport is not None
    a.transport.abortConnection()
    await reader.until_ended()
    assert reader.whole_gzip and reader.decoded == b"before the loss\n"
    # The server stopping: cut off, with no trailer, so never whole.
    a = await appender(server, "cut.log", ack=1)
    a.sendMessage(b"x" * 1000)
    await a.until_ack(1000)
    reader = await gzip_get(server.url("cut.log", follow=1))
    await reader.until_decoded(1000)
    await server.stop()
    await reader.until(lambda: reader.lost)
    assert not reader.ended and not reader.whole_gzip


# -- permessage-deflate -------------------------------------------------------


async def test_an_autobahn_follower_offering_deflate_gets_it(server):
    a = await appender(server, "ws.log", ack=1)
    follower = await ws(server.ws_url("ws.log"), **DEFLATE)
    assert follower.status == 101
    answer = follower.headers["sec-websocket-extensions"]
    assert answer.startswith("permessage-deflate")
    assert "server_no_context_takeover" in answer
    [extension] = follower.websocket_extensions_in_use
    assert isinstance(extension, PerMessageDeflate)
    assert extension.server_no_context_takeover
    content = log_text(300_000, seed=5)
    for at in range(0, len(content), 7000):
        a.sendMessage(content[at : at + 7000])
    assert await close(a) == 1000
    assert await finished(follower) == 1000
    assert bytes(follower.received) == content
    # Compressed on the wire: fewer octets than the content.
    wire = follower.trafficStats.incomingOctetsWebSocketLevel
    assert wire < len(content) / 2, (wire, len(content))


async def test_a_follower_not_offering_deflate_gets_plain_frames(server):
    a = await appender(server, "plain.log", ack=1)
    probe = await ws(server.ws_url("plain.log"))
    assert "sec-websocket-extensions" not in probe.headers
    assert probe.websocket_extensions_in_use == []
    # Raw: the frames have no reserved bit set (the reader checks).
    raw = await open_follower(server, "plain.log", "ws")
    assert "sec-websocket-extensions" not in raw.headers
    content = log_text(100_000)
    a.sendMessage(content)
    assert await close(a) == 1000
    assert await finished(probe) == 1000
    end = await raw.ended()
    assert end.clean and end.code == 1000
    assert bytes(probe.received) == bytes(raw.received) == content


async def test_each_compressed_message_inflates_on_its_own(server):
    a = await appender(server, "alone.log", ack=1)
    follower = await deflate_follower(server, "alone.log")
    assert follower.head.status == 101
    assert "server_no_context_takeover" in follower.extensions
    content = log_text(200_000, seed=9)[:200_000]
    noise = os.urandom(5000)  # does not shrink: sent plain
    sent = b""
    for at in range(0, len(content), 5000):
        for piece in (content[at : at + 5000], noise):
            a.sendMessage(piece)
            sent += piece
            await follower.until_bytes(len(sent))
    assert await close(a) == 1000
    await follower.until_closed()
    assert follower.close_code == 1000
    assert bytes(follower.received) == sent
    compressed = [m for m in follower.messages if m[1]]
    plain = [m for m in follower.messages if not m[1]]
    assert compressed and plain
    assert all(wire < len(data) for _, _, wire, data in compressed)
    assert all(data == noise for _, _, _, data in plain)
    assert all(opcode == 2 for opcode, _, _, _ in follower.messages)


async def test_a_smaller_window_asked_is_used(server):
    a = await appender(server, "window.log", ack=1)
    offer = "permessage-deflate; server_max_window_bits=10"
    small = await deflate_follower(server, "window.log", offer)
    large = await deflate_follower(server, "window.log")
    assert "server_max_window_bits=10" in small.extensions
    assert "server_max_window_bits" not in large.extensions
    # A block repeated 300 bytes later, another 2000 bytes later: a window
    # of 2**10 reaches the first repetition only, one of 2**15 both.
    near, far = os.urandom(300), os.urandom(2000)
    data = near + near + far + far
    a.sendMessage(data)
    assert await close(a) == 1000
    for follower in (small, large):
        await follower.until_closed()
        assert bytes(follower.received) == data
    # The small one's message was inflated with a window of 2**10 (the raw
    # reader's `window`, from the answer): no reference went further back.
    assert small.window == 10
    [(_, compressed, wire, _)] = small.messages
    assert compressed and 4000 < wire < len(data)
    [(_, compressed, wire, _)] = large.messages
    assert compressed and wire < 2600


async def test_text_frames_with_deflate(make_server):
    server = make_server(text_frame_size=1000)
    a = await appender(server, "text.log", ack=1)
    follower = await ws(server.ws_url("text.log", frames="text"), **DEFLATE)
    raw = await deflate_follower(server, "text.log", frames="text")
    content = log_text(50_000, seed=2)
    a.sendMessage(content)
    assert await close(a) == 1000
    assert await finished(follower) == 1000
    await raw.until_closed()
    assert bytes(follower.received) == bytes(raw.received) == content
    assert all(not binary for _, binary in follower.messages)
    assert all(len(payload) <= 1000 for payload, _ in follower.messages)
    assert all(opcode == 1 and comp for opcode, comp, _, _ in raw.messages)


async def test_many_followers_with_and_without_compression_get_the_same_bytes(
    server,
):
    a = await appender(server, "many.log", ack=1)
    rng = random.Random(11)
    first = log_text(30_000, seed=1)
    a.sendMessage(first)
    await a.until_ack(len(first))
    autobahn = [await ws(server.ws_url("many.log"), **DEFLATE) for _ in range(4)]
    autobahn.append(await ws(server.ws_url("many.log", frames="text"), **DEFLATE))
    plain = [await ws(server.ws_url("many.log")) for _ in range(5)]
    raws = [await deflate_follower(server, "many.log") for _ in range(10)]
    late_offset = len(first) // 2
    late = await deflate_follower(server, "many.log", offset=late_offset)
    http = [await gzip_get(server.url("many.log", follow=1)) for _ in range(3)]
    go = await GoFollower.connect(server, "/logs/many.log?frames=text")
    going = Deferred.fromCoroutine(go.follow())
    sent = first
    for _ in range(300):
        if rng.random() < 0.1:
            piece = os.urandom(rng.randrange(1, 20_000))
        else:
            piece = log_text(rng.randrange(10, 30_000), seed=rng.randrange(1000))
        a.sendMessage(piece)
        sent += piece
    assert await close(a) == 1000
    for probe in autobahn + plain:
        assert await finished(probe, timeout=30) == 1000
    for follower in [*raws, late]:
        await follower.until_closed(timeout=30)
        assert follower.close_code == 1000
    for reader in http:
        await reader.until_ended(timeout=30)
        assert reader.whole_gzip
    assert await going.addTimeout(30, reactor) == 1000
    assert server.file("many.log").getContent() == sent
    for probe in autobahn + plain:
        assert bytes(probe.received) == sent
    for follower in raws:
        assert bytes(follower.received) == sent
    assert bytes(late.received) == sent[late_offset:]
    for reader in http:
        assert bytes(reader.decoded) == sent
    assert go.kept == sent


async def test_caught_up_followers_share_one_compressed_frame(server, monkeypatch):
    compressed: list[int] = []
    real = deflate.segment

    def counted(data, window=deflate.WINDOW):
        compressed.append(len(data))
        return real(data, window)

    monkeypatch.setattr("httpfstream.web.wsdeflate.segment", counted)
    a = await appender(server, "shared.log", ack=1)
    followers = [await deflate_follower(server, "shared.log") for _ in range(30)]
    plain = [await open_follower(server, "shared.log", "ws") for _ in range(5)]
    sent = b""
    for i in range(20):
        line = log_text(2000, seed=i)
        a.sendMessage(line)
        sent += line
        # Every follower is caught up before the next append.
        await gatherResults([f.until_bytes(len(sent)) for f in followers + plain])
    # One compression per append, not one per follower.
    assert len(compressed) == 20
    assert await close(a) == 1000
    for follower in followers:
        await follower.until_closed()
        assert bytes(follower.received) == sent


async def test_a_compressing_appender_appends_the_bytes_it_means(make_server):
    server = make_server(max_message_size=100_000)
    a = await ws(server.ws_url("up.log", ack=1), "APPEND", **DEFLATE)
    assert a.status == 101
    assert "permessage-deflate" in a.headers["sec-websocket-extensions"]
    content = log_text(250_000, seed=4)
    sent = 0
    for at in range(0, len(content), 50_000):
        a.sendMessage(content[at : at + 50_000])
        sent = min(len(content), at + 50_000)
    await a.until_ack(sent)
    assert a.acks[-1] == len(content)
    # What went up was compressed.
    assert a.trafficStats.outgoingOctetsWebSocketLevel < len(content) / 2
    assert await close(a) == 1000
    assert server.file("up.log").getContent() == content
    # Small on the wire, too large once inflated: refused as any message
    # over the limit is, and nothing of it appended.
    b = await ws(server.ws_url("up.log", ack=1), "APPEND", **DEFLATE)
    b.sendMessage(b"z" * 200_000)
    assert await finished(b) == 1009
    assert server.file("up.log").getContent() == content


async def test_compressed_treq_follow_decodes_live(server):
    # treq asks for gzip and decodes as the body comes: a live follow works.
    a = await appender(server, "treq.log", ack=1)
    response = await treq.get(server.url("treq.log", follow=1), unbuffered=True)
    got = bytearray()
    arrived = Conditions(lambda: f"{bytes(got)!r}")

    def take(data: bytes) -> None:
        got.extend(data)
        arrived.check()

    done = treq.collect(response, take)
    for i in range(5):
        a.sendMessage(b"line %d\n" % i)
        await arrived.until(lambda i=i: len(got) == 7 * (i + 1))
    assert await close(a) == 1000
    await done
    assert bytes(got) == server.file("treq.log").getContent()


async def test_an_offer_that_cannot_be_parsed_fails_the_handshake(server):
    a = await appender(server, "odd.log", ack=1)
    odd = await deflate_follower(
        server, "odd.log", "permessage-deflate; server_max_window_bits=8"
    )
    assert odd.head.status == 400
    # Nothing is held for it: the next two followers count each other only.
    good = await deflate_follower(server, "odd.log")
    other = await deflate_follower(server, "odd.log")
    assert other.head.headers["httpfstream-followers"] == "1"
    a.sendMessage(b"still served\n")
    await good.until_bytes(13)
    assert await close(a) == 1000


# -- the cost bound -------------------------------------------------------------


def test_the_budget_is_a_token_bucket():
    budget = deflate.Budget(rate=1000, burst=500)
    assert budget.take(400, now=10.0)
    assert not budget.take(200, now=10.0)  # 100 left
    assert budget.take(100, now=10.0)
    assert not budget.take(1, now=10.0)
    assert budget.take(300, now=10.3)  # 300 earned
    assert not budget.take(600, now=100.0)  # never more than the burst
    assert budget.take(500, now=100.0)


async def test_without_budget_only_shared_bytes_are_compressed(server):
    deflate.SHARED.budget = deflate.Budget(0, 0)
    a = await appender(server, "budget.log", ack=1)
    followers = [await deflate_follower(server, "budget.log") for _ in range(3)]
    sent = b""
    for i in range(10):
        line = log_text(3000, seed=i)
        a.sendMessage(line)
        sent += line
        await gatherResults([f.until_bytes(len(sent)) for f in followers])
    # Caught up, they all send the stream's last batch: compressed once for
    # all, whatever the budget.
    for follower in followers:
        assert [m[1] for m in follower.messages] == [True] * 10
    # One that starts behind reads the history on its own: with no budget
    # left, that goes uncompressed; once caught up, compressed again.
    late = await deflate_follower(server, "budget.log", offset=0)
    await late.until_bytes(len(sent))
    assert not any(compressed for _, compressed, _, _ in late.messages)
    line = log_text(3000, seed=99)
    a.sendMessage(line)
    sent += line
    await late.until_bytes(len(sent))
    assert late.messages[-1][1]
    # A gzip reader of the whole resource, alone: stored blocks, not
    # compressed, and still the very bytes.
    reader = await gzip_get(server.url("budget.log"))
    await reader.until_ended()
    assert reader.whole_gzip and bytes(reader.decoded) == sent
    assert len(reader.wire) > len(sent)
    assert await close(a) == 1000
    for follower in [*followers, late]:
        await follower.until_closed()
        assert bytes(follower.received) == sent


async def test_stamped_lines_compressed_are_the_stamped_lines(server):
    # timestamps=1 (section 13): the body is the lines stamped, compressed
    # for that reader alone; the others still get the resource's bytes.
    a = await appender(server, "stamped.log", ack=1)
    content = b"".join(b"line %d\n" % i for i in range(300))
    a.sendMessage(content)
    await a.until_ack(len(content))
    plain = await deflate_follower(server, "stamped.log")
    stamped = await deflate_follower(server, "stamped.log", timestamps=1)
    reference = await open_follower(server, "stamped.log", "ws", timestamps=1)
    gz_plain = await gzip_get(server.url("stamped.log", follow=1))
    gz_stamped = await gzip_get(server.url("stamped.log", follow=1, timestamps=1))
    more = b"".join(b"more %d\n" % i for i in range(300))
    for at in range(0, len(more), 700):
        a.sendMessage(more[at : at + 700])
    assert await close(a) == 1000
    await gatherResults(
        [
            plain.until_closed(),
            stamped.until_closed(),
            gz_plain.until_ended(),
            gz_stamped.until_ended(),
        ]
    )
    await reference.ended()
    assert bytes(plain.received) == bytes(gz_plain.decoded) == content + more
    lines = bytes(reference.received)
    assert lines.count(b"Z line 0\n") == 1 and lines != content + more
    assert bytes(stamped.received) == bytes(gz_stamped.decoded) == lines
    assert any(compressed for _, compressed, _, _ in stamped.messages)
