"""
docs/PROTOCOL.md sections 4, 5 and 7: following a resource, and how a follow
ends.

The tests that take the ``transport`` fixture run over WebSocket FOLLOW and
over ``GET ?follow=1`` alike (STYLE.md habit 7) and assert what both promise:
the answer's headers, the bytes from the offset, and that the stream ends.
What only a WebSocket can say (close codes, text frames, pings) is in the
WebSocket tests below them; an HTTP follow cannot say how it ended (section
5), which the last test shows.
"""

from __future__ import annotations

import struct

import pytest
from support.clients import appender, close, finished, get, raw, upgrade_request, ws
from support.followers import TRANSPORTS, End, open_follower
from support.proxies import Proxy
from twisted.internet import reactor
from twisted.internet.defer import Deferred

# -- over both transports ------------------------------------------------------


async def test_follow_never_written_is_404(server, transport):
    f = await open_follower(server, "missing.log", transport)
    assert f.status == 404
    assert f.headers["httpfstream-active"] == "0"
    assert "httpfstream-size" not in f.headers


async def test_follow_finished_resource_is_200_with_the_content(server, transport):
    await get(server.url("done.log"), method="POST", data=b"all of it\n")
    f = await open_follower(server, "done.log", transport)
    assert (f.status, f.live) == (200, False)
    assert f.headers["httpfstream-active"] == "0"
    assert f.headers["httpfstream-size"] == "10"
    # treq asks for gzip, and a gzipped body has no length (section 16;
    # the identity body's is checked in test_compression.py).
    if transport == "ws":
        assert f.headers["content-length"] == "10"
    assert (await f.ended()).clean
    assert f.received == b"all of it\n"


async def test_follow_finished_resource_from_an_offset(server, transport):
    await get(server.url("done.log"), method="POST", data=b"0123456789")
    f = await open_follower(server, "done.log", transport, offset=-4)
    assert (f.status, f.offset) == (200, 6)
    assert (await f.ended()).clean
    assert f.received == b"6789"


async def test_follow_live_sends_history_then_live_bytes(server, transport):
    a = await appender(server, "live.log", ack=1)
    a.sendMessage(b"history ")
    await a.until_ack(8)
    f = await open_follower(server, "live.log", transport)
    assert f.live
    assert f.headers["httpfstream-active"] == "1"
    assert f.headers["httpfstream-size"] == "8"
    assert f.offset == 0
    a.sendMessage(b"live", isBinary=False)
    await f.until_bytes(12)
    assert f.received == b"history live"
    assert f.end is None  # open for as long as the appender is
    assert await close(a) == 1000
    assert (await f.ended()).clean
    assert f.received == b"history live"


async def test_follow_offsets(server, transport):
    a = await appender(server, "off.log", ack=1)
    a.sendMessage(b"0123456789")
    await a.until_ack(10)
    followers = []
    for offset, start, expect in [
        (4, 4, b"456789"),
        (-3, 7, b"789"),
        (-50, 0, b"0123456789"),
        (10, 10, b""),
    ]:
        f = await open_follower(server, "off.log", transport, offset=offset)
        assert (f.live, f.offset) == (True, start)
        await f.until_bytes(len(expect))
        followers.append((f, expect))
    past = await open_follower(server, "off.log", transport, offset=11)
    assert past.status == 416
    assert past.headers["httpfstream-size"] == "10"
    bad = await open_follower(server, "off.log", transport, offset="x")
    assert bad.status == 400
    await close(a)
    for f, expect in followers:
        assert (await f.ended()).clean
        assert f.received == expect


async def test_many_followers_each_get_every_byte(server, transport):
    a = await appender(server, "fan.log")
    followers = [await open_follower(server, "fan.log", transport) for _ in range(10)]
    payload = b"".join(b"line %05d\n" % i for i in range(2000))
    for i in range(0, len(payload), 1000):
        a.sendMessage(payload[i : i + 1000])
    assert await close(a) == 1000
    for f in followers:
        assert (await f.ended()).clean
        assert f.received == payload


async def test_follower_that_joins_after_the_close_gets_the_content(server, transport):
    a = await appender(server, "late.log")
    a.sendMessage(b"x")
    await close(a)
    f = await open_follower(server, "late.log", transport)
    assert (f.status, f.live) == (200, False)
    assert (await f.ended()).clean
    assert f.received == b"x"


async def test_server_shutdown_ends_followers_after_every_byte(server, transport):
    a = await appender(server, "stop.log", ack=1)
    f = await open_follower(server, "stop.log", transport)
    a.sendMessage(b"before shutdown")
    await f.until_bytes(15)
    stopping = Deferred.fromCoroutine(server.stop())
    end = await f.ended()
    # Over WebSocket a Close 1001 says why; a chunked body can say nothing,
    # so it is cut off rather than ended as if the appender had finished.
    assert end.clean == (transport == "ws")
    if transport == "ws":
        assert end.code == 1001
    await stopping
    assert f.received == b"before shutdown"
    assert server.file("stop.log").getContent() == b"before shutdown"


async def test_follower_limits_answer_503_with_retry_after(make_server, transport):
    server = make_server(max_followers_per_resource=2, max_followers=3)
    appenders = [await appender(server, name) for name in ("a.log", "b.log", "c.log")]
    first = [await open_follower(server, "a.log", transport) for _ in range(2)]
    assert [f.live for f in first] == [True, True]
    # Followers over either transport count against the same limits.
    for other in TRANSPORTS:
        refused = await open_follower(server, "a.log", other)
        assert (refused.status, refused.headers["retry-after"]) == (503, "5")
    assert (await open_follower(server, "b.log", transport)).live  # 3 in total
    for other in TRANSPORTS:
        refused = await open_follower(server, "c.log", other)  # over the total
        assert (refused.status, refused.headers["retry-after"]) == (503, "5")
    # HEAD reads nothing and is never refused.
    assert (await get(server.url("c.log"), method="HEAD"))[0] == 200
    for a in appenders:
        await close(a)


async def test_a_cut_follow_is_told_from_an_ended_one_and_resumes(server, transport):
    a = await appender(server, "cut.log", ack=1)
    a.sendMessage(b"before ")
    await a.until_ack(7)
    proxy = Proxy(server)
    try:
        f = await open_follower(proxy, "cut.log", transport)
        await f.until_bytes(7)
        proxy.cut()
        assert not (await f.ended()).clean
    finally:
        await proxy.stop()
    # The appender carries on; the follower resumes from the bytes it has.
    _, headers, _ = await get(server.url("cut.log"), method="HEAD")
    assert headers["httpfstream-active"] == "1"
    a.sendMessage(b"after")
    g = await open_follower(server, "cut.log", transport, offset=len(f.received))
    assert (g.live, g.offset) == (True, 7)
    await close(a)
    assert (await g.ended()).clean
    assert f.received + g.received == b"before after"


# -- WebSocket only: frames, close codes, pings --------------------------------


@pytest.mark.parametrize(("ending", "code"), [("close", 1000), ("lost", 4000)])
async def test_ws_followers_get_binary_frames_then_the_appenders_ending(
    server, ending, code
):
    a = await appender(server, "end.log", ack=1)
    a.sendMessage(b"history ")
    await a.until_ack(8)
    followers = [await ws(server.ws_url("end.log")) for _ in range(3)]
    assert [f.status for f in followers] == [101] * 3
    a.sendMessage(b"live", isBinary=False)  # binary all the same
    for f in followers:
        await f.until_bytes(12)
    if ending == "close":
        assert await close(a) == 1000
    else:
        a.transport.abortConnection()
        await finished(a)
    for f in followers:
        assert await finished(f) == code
        assert f.received == b"history live"
        assert all(binary for _, binary in f.messages)


async def test_frames_text(server):
    a = await appender(server, "t.log")
    f = await ws(server.ws_url("t.log", frames="text"))
    a.sendMessage("h\u00e9llo".encode(), isBinary=True)
    await f.until_bytes(6)
    assert all(not binary for _, binary in f.messages)
    assert bytes(f.received) == "h\u00e9llo".encode()
    await close(a)
    assert await finished(f) == 1000


async def test_server_shutdown_closes_followers_and_appender_with_1001(server):
    a = await appender(server, "stop.log", ack=1)
    f = await ws(server.ws_url("stop.log"))
    a.sendMessage(b"before shutdown")
    await f.until_bytes(15)
    stopping = Deferred.fromCoroutine(server.stop())
    assert await finished(f) == 1001
    assert await finished(a) == 1001
    await stopping
    assert a.acks[-1] == 15
    assert server.file("stop.log").getContent() == b"before shutdown"


async def test_followers_frames_from_a_raw_socket_are_binary_by_default(server):
    a = await appender(server, "frames.log", ack=1)
    a.sendMessage(b"abc")
    await a.until_ack(3)
    client = await raw(server)
    client.send(upgrade_request("/logs/frames.log"))
    status, _ = await client.response_head()
    assert status == 101
    await client.until(lambda b: b.endswith(b"\x82\x03abc"))
    await close(a)
    # Close frame with code 1000.
    await client.until(lambda b: b"\x88" in b.split(b"abc", 1)[1])
    tail = client.body().split(b"abc", 1)[1]
    assert tail[0] == 0x88
    assert struct.unpack("!H", tail[2:4])[0] == 1000


async def test_unanswered_pings_drop_the_follower(make_server):
    server = make_server(ping_interval=2, ping_timeout=2)
    a = await appender(server, "ping.log")
    client = await raw(server)
    client.send(upgrade_request("/logs/ping.log"))
    status, _ = await client.response_head()
    assert status == 101
    started = reactor.seconds()
    # The raw client never answers the ping (opcode 0x9) it receives.
    await client.until(lambda b: b"\x89" in b.split(b"\r\n\r\n", 1)[1], timeout=8)
    await client.closed.addTimeout(8, reactor)
    assert reactor.seconds() - started < 8
    # The appender, which answers its pings, is still there.
    assert a.state == a.STATE_OPEN
    assert await close(a) == 1000


# -- HTTP only -----------------------------------------------------------------


@pytest.mark.parametrize("ending", ["close", "lost"])
async def test_http_follow_ends_the_same_way_however_the_appender_ended(server, ending):
    a = await appender(server, "end.log", ack=1)
    a.sendMessage(b"history ")
    await a.until_ack(8)
    f = await open_follower(server, "end.log", "http")
    a.sendMessage(b"live")
    await f.until_bytes(12)
    if ending == "close":
        assert await close(a) == 1000
    else:
        a.transport.abortConnection()
        await finished(a)
    # Every persisted byte, then the last chunk: no code says how the
    # appender ended (section 5; over a WebSocket, 1000 or 4000)...
    assert await f.ended() == End(clean=True, code=None)
    assert f.received == b"history live"
    # ...a client that needs to know asks afterwards: no appender is active,
    # so the stream ended rather than being cut while one goes on.
    _, headers, _ = await get(server.url("end.log"), method="HEAD")
    assert headers["httpfstream-active"] == "0"
