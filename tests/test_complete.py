"""
Durable completion (docs/PROTOCOL.md section 9): ``Httpfstream-Complete`` says
whether a resource's last append session ended well, on every response
about an existing resource, and survives the server.
"""

from __future__ import annotations

import pytest
from support.clients import appender, close, finished, get, raw_request, ws

from httpfstream.protocol import ResourceState


def test_headers_of_a_state():
    assert ResourceState(False, None).headers() == {"Httpfstream-Active": "0"}
    assert ResourceState(False, 5, True).headers() == {
        "Httpfstream-Active": "0",
        "Httpfstream-Size": "5",
        "Httpfstream-Complete": "1",
        "Httpfstream-Followers": "0",
    }
    assert ResourceState(True, 5, False, 3).headers()["Httpfstream-Followers"] == "3"
    # Held now: not complete, whatever the last session did.
    assert ResourceState(True, 5, True).headers()["Httpfstream-Complete"] == "0"


async def complete(server, name: str) -> str:
    status, headers, _ = await get(server.url(name), method="HEAD")
    assert status == 200
    return headers["httpfstream-complete"]


async def test_a_clean_close_completes_and_a_new_session_reopens(server):
    a = await appender(server, "c.log", ack=1)
    assert a.headers["httpfstream-complete"] == "0"
    a.sendMessage(b"one")
    await a.until_ack(3)
    assert await complete(server, "c.log") == "0"
    assert await close(a) == 1000
    assert await complete(server, "c.log") == "1"
    # Every kind of response about it says so: snapshot, follow, refusals.
    for url, method in [
        (server.url("c.log"), "GET"),
        (server.url("c.log", follow=1), "GET"),
        (server.url("c.log", offset=99, follow=1), "GET"),  # 416
        (server.url("c.log", verb="nonsense"), "GET"),  # 400
        (server.url("c.log"), "PUT"),  # 405
    ]:
        _, headers, _ = await get(url, method=method)
        assert headers["httpfstream-complete"] == "1", (url, method)
    b = await appender(server, "c.log")
    assert await complete(server, "c.log") == "0"
    assert await close(b) == 1000


@pytest.mark.parametrize("ending", ["lost", "interrupted", "too big"])
async def test_a_session_that_did_not_end_well_leaves_it_incomplete(
    make_server, ending
):
    server = make_server(max_resource_size=10)
    a = await appender(server, "i.log", ack=1)
    f = await ws(server.ws_url("i.log"))
    a.sendMessage(b"kept")
    await a.until_ack(4)
    if ending == "lost":
        a.transport.abortConnection()
    elif ending == "interrupted":
        # What a client interrupted by Ctrl-C sends: its bytes persist, the
        # Close is answered once they have, and the resource is incomplete.
        # (Autobahn's sendClose allows only 1000 and 3000-4999.)
        a.sendCloseFrame(code=1001, reasonUtf8=b"interrupted", isReply=False)
        # Answered with 1000: every byte it sent is persisted.
        assert await finished(a) == 1000
        assert a.acks[-1] == 4
    else:
        a.sendMessage(b"x" * 20)
        assert await finished(a) == 1009
    assert await finished(f) == 4000
    assert bytes(f.received) == b"kept"
    assert await complete(server, "i.log") == "0"
    # A finished-but-incomplete resource is served whole, saying so.
    status, headers, body = await get(server.url("i.log", follow=1))
    assert (status, headers["httpfstream-complete"], body) == (200, "0", b"kept")


async def test_post_completes_and_a_file_put_there_is_complete(server):
    status, headers, _ = await get(server.url("p.log"), method="POST", data=b"x")
    assert (status, headers["httpfstream-complete"]) == (200, "1")
    server.root.child("put.log").setContent(b"by other means")
    assert await complete(server, "put.log") == "1"


async def test_completion_survives_a_new_server_on_the_same_root(make_server):
    first = make_server()
    a = await appender(first, "r.log", ack=1)
    a.sendMessage(b"half")
    await a.until_ack(4)
    a.transport.abortConnection()
    await finished(a)
    await first.stop()
    second = make_server(first.root)
    assert await complete(second, "r.log") == "0"


@pytest.mark.parametrize(
    ("method", "status"), [("GET", 404), ("HEAD", 404), ("POST", 400)]
)
async def test_the_state_folder_is_no_resource(server, method, status):
    await get(server.url("x.log"), method="POST", data=b"x")
    path = "/logs/.httpfstream/incomplete/x.log"
    assert (await raw_request(server, method, path))[0] == status


async def test_a_refused_post_changes_nothing(make_server):
    server = make_server(max_resource_size=10)
    # Too big for any resource: refused before anything exists.
    status, _, _ = await get(server.url("new.log"), method="POST", data=b"x" * 11)
    assert status == 413
    assert not server.file("new.log").exists()
    # Too big for what this one still has room for: it stays complete.
    await get(server.url("old.log"), method="POST", data=b"x" * 6)
    status, headers, _ = await get(server.url("old.log"), method="POST", data=b"y" * 6)
    assert (status, headers["httpfstream-complete"]) == (413, "1")
    assert await complete(server, "old.log") == "1"
    assert server.file("old.log").getContent() == b"x" * 6
