from support.clients import appender, close, finished, get, ws


async def test_append_then_follow_then_snapshot(server):
    a = await appender(server, "build.log", ack=1)
    assert a.headers["httpfstream-active"] == "1"
    a.sendMessage(b"hello ", isBinary=True)
    f = await ws(server.ws_url("build.log"))
    assert f.status == 101, f.headers
    a.sendMessage(b"world\n", isBinary=False)
    await f.until_bytes(12)
    assert bytes(f.received) == b"hello world\n"
    assert await close(a) == 1000
    assert await finished(f) == 1000
    assert a.acks[-1] == 12
    status, headers, body = await get(server.url("build.log"))
    assert (status, body) == (200, b"hello world\n")
    assert headers["httpfstream-active"] == "0"
