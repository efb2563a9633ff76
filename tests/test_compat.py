"""
The original Go clients, as they behave on the wire: the appender ends with
an orderly TCP close (FIN) and no Close frame; the follower accepts only
text frames and asks for nothing.  Both get through with the server's
options for them (`WebSocketOptions`, ``--fin-ends-appender``,
``--text-frames``), and the strict default stays.
"""

from __future__ import annotations

import pytest
from support.clients import client_frame, finished, get, raw, upgrade_request, ws
from support.processes import Twistd


async def go_appender(server, path: str):
    """A raw client that appends as the Go appender does (text frames)."""
    client = await raw(server)
    client.send(upgrade_request(path, X_Verb="APPEND"))
    status, _ = await client.response_head()
    assert status == 101
    return client


@pytest.mark.parametrize(("lenient", "code"), [(True, 1000), (False, 4000)])
async def test_a_fin_after_the_last_message(make_server, lenient, code):
    server = make_server(fin_ends_appender=lenient)
    a = await go_appender(server, "/logs/go.log")
    a.send(client_frame(b"one ", opcode=1))
    follower = await ws(server.ws_url("go.log"))
    assert follower.status == 101
    await follower.until_bytes(4)
    a.send(client_frame(b"two", opcode=1))
    a.transport.loseConnection()  # FIN, no Close frame
    assert await finished(follower) == code
    assert bytes(follower.received) == b"one two"
    _, headers, body = await get(server.url("go.log"))
    assert body == b"one two"
    assert headers["httpfstream-complete"] == ("1" if lenient else "0")


async def test_a_reset_is_never_a_clean_end(make_server):
    server = make_server(fin_ends_appender=True)
    a = await go_appender(server, "/logs/rst.log")
    a.send(client_frame(b"x", opcode=1))
    follower = await ws(server.ws_url("rst.log"))
    await follower.until_bytes(1)
    a.transport.abortConnection()  # RST: a crash, not an ending
    assert await finished(follower) == 4000


@pytest.mark.parametrize(
    ("text_frames", "query", "binary"),
    [(False, {}, True), (True, {}, False), (True, {"frames": "binary"}, True)],
)
async def test_followers_frames(make_server, text_frames, query, binary):
    server = make_server(text_frames=text_frames)
    a = await ws(server.ws_url("t.log"), "APPEND")
    follower = await ws(server.ws_url("t.log", **query))
    a.sendMessage(b"line\n")
    await follower.until_bytes(5)
    assert {is_binary for _, is_binary in follower.messages} == {binary}
    a.sendClose(1000)
    assert await finished(follower) == 1000


async def test_the_twistd_options(tmp_path):
    server = Twistd.start(tmp_path / "root", "--fin-ends-appender", "--text-frames")
    try:
        a = await go_appender(server, "/go.log")
        a.send(client_frame(b"hello", opcode=1))
        follower = await ws(server.ws_url("go.log"))
        await follower.until_bytes(5)
        assert follower.messages[0][1] is False  # text
        a.transport.loseConnection()
        assert await finished(follower) == 1000
    finally:
        server.stop()
    assert (tmp_path / "root" / "go.log").read_bytes() == b"hello"
