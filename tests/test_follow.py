"""PROTOCOL.md sections 4 and 7: FOLLOW over WebSocket, and close codes."""

from __future__ import annotations

import struct

from helpers import (
    appender,
    close,
    finished,
    get,
    raw,
    upgrade_request,
    ws,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred


async def test_follow_never_written_is_404(server):
    f = await ws(server.ws_url("missing.log"))
    assert f.status == 404
    assert f.headers["httpfstream-active"] == "0"


async def test_follow_finished_resource_is_200_with_the_content(server):
    await get(server.url("done.log"), method="POST", data=b"all of it\n")
    client = await raw(server)
    client.send(upgrade_request("/logs/done.log"))
    status, headers = await client.response_head()
    assert status == 200
    assert headers["httpfstream-active"] == "0"
    assert headers["httpfstream-size"] == "10"
    assert headers["content-length"] == "10"
    await client.until(lambda b: b.endswith(b"all of it\n"))
    assert client.body() == b"all of it\n"


async def test_follow_finished_resource_from_an_offset(server):
    await get(server.url("done.log"), method="POST", data=b"0123456789")
    client = await raw(server)
    client.send(upgrade_request("/logs/done.log?offset=-4"))
    status, headers = await client.response_head()
    assert (status, headers["httpfstream-offset"]) == (200, "6")
    await client.until(lambda b: b.endswith(b"\r\n\r\n6789"))


async def test_follow_live_sends_history_then_live_bytes(server):
    a = await appender(server, "live.log", ack=1)
    a.sendMessage(b"history ")
    await a.until_ack(8)
    f = await ws(server.ws_url("live.log"))
    assert f.status == 101
    assert f.headers["httpfstream-active"] == "1"
    assert f.headers["httpfstream-size"] == "8"
    assert f.headers["httpfstream-offset"] == "0"
    a.sendMessage(b"live", isBinary=False)
    await f.until_bytes(12)
    assert bytes(f.received) == b"history live"
    assert all(binary for _, binary in f.messages)
    assert await close(a) == 1000
    assert await finished(f) == 1000


async def test_follow_offsets(server):
    a = await appender(server, "off.log", ack=1)
    a.sendMessage(b"0123456789")
    await a.until_ack(10)
    for offset, start, expect in [
        (4, "4", b"456789"),
        (-3, "7", b"789"),
        (-50, "0", b"0123456789"),
        (10, "10", b""),
    ]:
        f = await ws(server.ws_url("off.log", offset=offset))
        assert f.headers["httpfstream-offset"] == start
        if expect:
            await f.until_bytes(len(expect))
        assert bytes(f.received) == expect
        await close(f)
    past = await ws(server.ws_url("off.log", offset=11))
    assert past.status == 416
    assert past.headers["httpfstream-size"] == "10"
    bad = await ws(server.ws_url("off.log", offset="x"))
    assert bad.status == 400
    await close(a)


async def test_frames_text(server):
    a = await appender(server, "t.log")
    f = await ws(server.ws_url("t.log", frames="text"))
    a.sendMessage("h\u00e9llo".encode(), isBinary=True)
    await f.until_bytes(6)
    assert all(not binary for _, binary in f.messages)
    assert bytes(f.received) == "h\u00e9llo".encode()
    await close(a)
    assert await finished(f) == 1000


async def test_many_followers_each_get_every_byte(server):
    a = await appender(server, "fan.log")
    followers = [await ws(server.ws_url("fan.log")) for _ in range(10)]
    payload = b"".join(b"line %05d\n" % i for i in range(2000))
    for i in range(0, len(payload), 1000):
        a.sendMessage(payload[i : i + 1000])
    assert await close(a) == 1000
    for f in followers:
        assert await finished(f) == 1000
        assert bytes(f.received) == payload


async def test_follower_that_joins_after_the_close_gets_200(server):
    a = await appender(server, "late.log")
    a.sendMessage(b"x")
    await close(a)
    f = await ws(server.ws_url("late.log"))
    assert f.status == 200


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


async def test_follower_limits_answer_503_with_retry_after(make_server):
    server = make_server(max_followers_per_resource=2, max_followers=3)
    appenders = [await appender(server, name) for name in ("a.log", "b.log", "c.log")]
    first = [await ws(server.ws_url("a.log")) for _ in range(2)]
    assert [f.status for f in first] == [101, 101]
    refused = await ws(server.ws_url("a.log"))
    assert refused.status == 503
    assert refused.headers["retry-after"] == "5"
    status, headers, _ = await get(server.url("a.log", follow=1))
    assert (status, headers["retry-after"]) == (503, "5")
    assert (await ws(server.ws_url("b.log"))).status == 101  # 3 in total
    assert (await ws(server.ws_url("c.log"))).status == 503  # over the total
    # HEAD reads nothing and is never refused.
    assert (await get(server.url("c.log"), method="HEAD"))[0] == 200
    for a in appenders:
        await close(a)
