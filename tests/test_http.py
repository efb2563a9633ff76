"""docs/PROTOCOL.md sections 1, 2, 5 and 6: names, verbs, plain GET/HEAD, POST."""

from __future__ import annotations

import json
import os

import pytest
from support.clients import appender, close, finished, get, raw, raw_request, ws
from twisted.internet.defer import Deferred, DeferredList

# -- 1. names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/logs/dir/",  # trailing slash
        "/logs/a/%2e%2e/b",  # a '..' segment, percent-encoded
        "/logs/a/%2E/b",  # a '.' segment
        "/logs/a//b",  # an empty segment
        "/logs/a%00b",  # NUL
        "/logs/a/..%2F..%2Fetc%2Fpasswd",  # %2F makes '..' a segment
        "/logs/%c0%ae%c0%ae/x",  # overlong UTF-8 for '.': not UTF-8
        "/logs/%2e%2e%2f%2e%2e%2fx",  # all encoded
    ],
)
async def test_invalid_names_are_400_for_writes_and_404_for_reads(server, path):
    url = f"http://127.0.0.1:{server.address[1]}{path}"
    status, headers, _ = await get(url, method="POST", data=b"x")
    assert status == 400
    assert headers["httpfstream-active"] == "0"
    status, _, _ = await get(url)
    assert status == 404
    probe = await ws(url.replace("http", "ws", 1), "APPEND")
    assert probe.status == 400
    assert list(server.root.walk()) == [server.root]


async def test_raw_dot_dot_in_the_request_line_is_refused(server):
    # treq would normalise '..' away; a raw client can send it.
    client = await raw(server)
    client.send(
        b"POST /logs/../../escape HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
    )
    status, _ = await client.response_head()
    assert status == 400
    assert not server.root.parent().child("escape").exists()


async def test_symlink_out_of_the_root_is_refused(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside, server.root.child("link").path)
    status, _, body = await get(server.url("link/secret"))
    assert status == 404 and b"secret" not in body
    status, _, _ = await get(server.url("link/new"), method="POST", data=b"x")
    assert status == 400
    assert not (outside / "new").exists()
    os.symlink(outside / "secret", server.root.child("file-link").path)
    status, _, _ = await get(server.url("file-link"))
    assert status == 404


async def test_query_string_is_not_part_of_the_name_and_parents_are_created(server):
    status, headers, _ = await get(
        server.url("a/b/c.log", unused="1"), method="POST", data=b"hi"
    )
    assert (status, headers["httpfstream-size"]) == (200, "2")
    assert server.file("a/b/c.log").getContent() == b"hi"
    assert (await get(server.url("a/b/c.log", x="y")))[2] == b"hi"


async def test_percent_encoded_names_map_to_the_decoded_path(server):
    await get(server.url("dir/with space.log"), method="POST", data=b"ok")
    assert server.file("dir/with space.log").getContent() == b"ok"
    url = f"http://127.0.0.1:{server.address[1]}/logs/dir%2Fwith%20space.log"
    assert (await get(url))[2] == b"ok"


async def test_a_directory_is_not_a_resource(server):
    await get(server.url("d/f"), method="POST", data=b"x")
    assert (await get(server.url("d")))[0] == 404
    assert (await get(server.url("d"), method="POST", data=b"x"))[0] == 400
    assert (await get(server.url("d/f/g"), method="POST", data=b"x"))[0] == 400


# -- 2. verbs ------------------------------------------------------------------


async def test_x_verb_header_wins_over_the_query_parameter(server):
    probe = await ws(server.ws_url("v.log", verb="follow"), "append")
    assert probe.status == 101
    assert probe.headers["httpfstream-active"] == "1"
    await close(probe)


async def test_verb_query_parameter_is_case_insensitive(server):
    probe = await ws(server.ws_url("v.log", verb="aPPend"))
    assert probe.status == 101
    await close(probe)


async def test_unknown_verb_is_400(server):
    status, headers, body = await get(server.url("v.log", verb="delete"))
    assert status == 400 and b"unknown verb" in body
    assert headers["httpfstream-active"] == "0"
    probe = await ws(server.ws_url("v.log"), "TRUNCATE")
    assert probe.status == 400


async def test_append_over_plain_get_is_400(server):
    status, _, body = await get(server.url("v.log"), headers={"X-Verb": "APPEND"})
    assert status == 400 and b"WebSocket" in body
    assert not server.file("v.log").exists()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS"])
async def test_other_methods_are_405_with_allow(server, method):
    status, headers, _ = await get(server.url("v.log"), method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD, POST, DELETE"


async def test_every_response_says_whether_an_appender_is_active(server):
    assert (await get(server.url("s.log")))[1]["httpfstream-active"] == "0"
    a = await appender(server, "s.log", ack=1)
    a.sendMessage(b"abc")
    await a.until_ack(3)
    for method in ("GET", "HEAD"):
        _, headers, _ = await get(server.url("s.log"), method=method)
        assert headers["httpfstream-active"] == "1"
        assert headers["httpfstream-size"] == "3"
    _, headers, _ = await get(server.url("s.log"), method="POST", data=b"x")
    assert (headers["httpfstream-active"], headers["httpfstream-size"]) == ("1", "3")
    await close(a)
    _, headers, _ = await get(server.url("s.log"))
    assert headers["httpfstream-active"] == "0"


# -- 5. plain GET and HEAD ------------------------------------------------------


async def test_get_never_written_is_404_without_size(server):
    status, headers, _ = await get(server.url("nothing.log"))
    assert status == 404
    assert headers["httpfstream-active"] == "0"
    assert "httpfstream-size" not in headers


async def test_snapshot_while_active_has_persisted_bytes_and_no_store(server):
    a = await appender(server, "snap.log", ack=1)
    a.sendMessage(b"0123456789")
    await a.until_ack(10)
    status, headers, body = await raw_request(server, "GET", "/logs/snap.log")
    assert (status, body) == (200, b"0123456789")
    assert headers["content-length"] == "10"
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    await close(a)
    _, headers, _ = await get(server.url("snap.log"))
    assert "cache-control" not in headers


async def test_head_gives_the_snapshot_headers_without_body(server):
    await get(server.url("h.bin"), method="POST", data=b"x" * 100)
    status, headers, body = await raw_request(server, "HEAD", "/logs/h.bin")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == "100"
    assert headers["httpfstream-size"] == "100"
    assert headers["content-type"] == "application/octet-stream"
    assert (await get(server.url("none"), method="HEAD"))[0] == 404


@pytest.mark.parametrize(
    ("range_", "status", "body", "content_range"),
    [
        ("bytes=0-9", 206, b"0123456789", "bytes 0-9/50"),
        ("bytes=45-", 206, b"56789", "bytes 45-49/50"),
        ("bytes=-5", 206, b"56789", "bytes 45-49/50"),
        ("bytes=40-1000", 206, b"0123456789", "bytes 40-49/50"),
        ("bytes=50-", 416, None, "bytes */50"),
        ("bytes=100-200", 416, None, "bytes */50"),
        ("bytes=0-1,5-6", 200, b"0123456789" * 5, None),
        ("lines=1-2", 200, b"0123456789" * 5, None),
    ],
)
async def test_range_requests(server, range_, status, body, content_range):
    await get(server.url("r.txt"), method="POST", data=b"0123456789" * 5)
    got_status, headers, got_body = await raw_request(
        server, "GET", "/logs/r.txt", Range=range_
    )
    assert got_status == status
    assert headers.get("content-range") == content_range
    if body is not None:
        assert got_body == body
        assert headers["content-length"] == str(len(body))


async def test_get_follow_streams_live_until_the_appender_ends(server):
    a = await appender(server, "live.log", ack=1)
    a.sendMessage(b"first\n")
    await a.until_ack(6)
    client = await raw(server)
    client.send(b"GET /logs/live.log?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers = await client.response_head()
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert headers["httpfstream-offset"] == "0"
    await client.until(lambda b: b"first\n" in b)
    a.sendMessage(b"second\n")
    await client.until(lambda b: b"second\n" in b)
    assert not client.closed.called
    await close(a)
    await client.until(lambda b: b.endswith(b"0\r\n\r\n"))


async def test_get_follow_with_offsets(server):
    await get(server.url("o.log"), method="POST", data=b"0123456789")
    status, headers, body = await get(server.url("o.log", follow=1, offset=-3))
    assert (status, body, headers["httpfstream-offset"]) == (200, b"789", "7")
    status, headers, body = await get(server.url("o.log", follow=1, offset=4))
    assert (status, body, headers["httpfstream-offset"]) == (200, b"456789", "4")
    status, headers, body = await get(server.url("o.log", follow=1, offset=-99))
    assert (body, headers["httpfstream-offset"]) == (b"0123456789", "0")
    status, headers, _ = await get(server.url("o.log", follow=1, offset=11))
    assert status == 416
    assert headers["httpfstream-size"] == "10"
    status, _, _ = await get(server.url("o.log", follow=1, offset="abc"))
    assert status == 400


# -- 6. POST -------------------------------------------------------------------


async def test_post_appends_and_reports_the_new_size(server):
    status, headers, _ = await get(server.url("p.log"), method="POST", data=b"abc")
    assert (status, headers["httpfstream-size"]) == (200, "3")
    status, headers, _ = await get(server.url("p.log"), method="POST", data=b"de")
    assert (status, headers["httpfstream-size"]) == (200, "5")
    assert server.file("p.log").getContent() == b"abcde"


async def test_post_refusals(make_server):
    server = make_server(max_message_size=100, max_resource_size=150)
    url = server.url("p.log")
    assert (await get(url, method="POST", data=b"x" * 101))[0] == 413
    assert not server.file("p.log").exists()
    assert (await get(url, method="POST", data=b"x" * 100))[0] == 200
    status, headers, _ = await get(url, method="POST", data=b"y" * 51)
    assert (status, headers["httpfstream-size"]) == (413, "100")
    status, headers, _ = await get(
        server.url("p.log", offset=7), method="POST", data=b"z"
    )
    assert (status, headers["httpfstream-size"]) == (412, "100")
    assert (await get(server.url("p.log", offset=100), method="POST", data=b"z"))[
        0
    ] == 200
    a = await appender(server, "p.log")
    status, headers, _ = await get(url, method="POST", data=b"w")
    assert (status, headers["httpfstream-active"]) == (409, "1")
    await close(a)
    assert server.file("p.log").getContent() == b"x" * 100 + b"z"


async def test_post_is_seen_whole_or_not_at_all(server):
    body = os.urandom(1 << 20)
    await get(server.url("atomic.bin"), method="POST", data=b"head")
    follower_a = await ws(server.ws_url("atomic.bin"))  # 200: not active
    assert follower_a.status == 200
    post = Deferred.fromCoroutine(
        get(server.url("atomic.bin"), method="POST", data=body)
    )
    snapshots = [
        Deferred.fromCoroutine(get(server.url("atomic.bin"))) for _ in range(10)
    ]
    results = await DeferredList([post, *snapshots], consumeErrors=False)
    for ok, (status, _, got) in results[1:]:
        assert ok and status == 200
        assert got in (b"head", b"head" + body)
    assert server.file("atomic.bin").getContent() == b"head" + body


async def test_follower_sees_a_post_made_during_a_ws_session_end(server):
    a = await appender(server, "mix.log")
    f = await ws(server.ws_url("mix.log"))
    a.sendMessage(b"ws ")
    await close(a)
    assert await finished(f) == 1000
    await get(server.url("mix.log"), method="POST", data=b"post")
    assert (await get(server.url("mix.log")))[2] == b"ws post"


async def test_out_of_file_descriptors_is_503(make_server, tmp_path):
    import errno

    from twisted.internet import reactor
    from twisted.internet.defer import fail
    from twisted.python.filepath import FilePath

    from httpfstream.core.store import FileStore

    class Exhausted(FileStore):
        def open(self, name, create, expected_size):
            return fail(OSError(errno.EMFILE, "Too many open files"))

    root = FilePath(str(tmp_path)).child("fds")
    server = make_server(root, store=Exhausted(root, reactor))
    root.child("there.log").setContent(b"x")
    for method, kwargs in (("GET", {}), ("POST", {"data": b"x"})):
        status, headers, _ = await get(server.url("there.log"), method=method, **kwargs)
        assert (status, headers["retry-after"]) == (503, "5")
    probe = await ws(server.ws_url("there.log"), "APPEND")
    assert probe.status == 503


async def test_backslashes_are_ordinary_characters_inside_the_root(server):
    url = f"http://127.0.0.1:{server.address[1]}/logs/a%5C..%5C..%5Cx"
    assert (await get(url, method="POST", data=b"x"))[0] == 200
    names = [p.basename() for p in server.root.children()]
    assert sorted(names) == [".httpfstream", "a\\..\\..\\x"]  # and the state
    assert [p.basename() for p in server.root.parent().children()] == ["root"]


# -- 2. Httpfstream-Followers ---------------------------------------------------


async def test_responses_and_listings_say_how_many_follow_live(server):
    from support.followers import open_follower

    a = await appender(server, "watched.log", ack=1)
    a.sendMessage(b"x")
    await a.until_ack(1)
    assert a.headers["httpfstream-followers"] == "0"
    over_ws = await ws(server.ws_url("watched.log"))
    over_http = await open_follower(server, "watched.log", "http")
    # A snapshot is no follower.
    status, headers, body = await get(server.url("watched.log"))
    assert (status, body) == (200, b"x")
    assert headers["httpfstream-followers"] == "2"
    # Refusals about the resource say it too.
    conflict = await ws(server.ws_url("watched.log"), "APPEND")
    assert conflict.status == 409
    assert conflict.headers["httpfstream-followers"] == "2"
    _, _, listing = await get(server.url("") + "?format=json")
    entries = {e["name"]: e for e in json.loads(listing)["resources"]}
    assert entries["watched.log"]["followers"] == 2
    # A resource nobody follows: 0; one that does not exist: no header.
    status, headers, _ = await get(server.url("other.log"), method="POST", data=b"y")
    assert headers["httpfstream-followers"] == "0"
    _, _, listing = await get(server.url("") + "?format=json")
    entries = {e["name"]: e for e in json.loads(listing)["resources"]}
    assert (entries["watched.log"]["followers"], entries["other.log"]["followers"]) == (
        2,
        0,
    )
    status, headers, _ = await get(server.url("none.log"))
    assert status == 404 and "httpfstream-followers" not in headers
    assert await close(a) == 1000
    assert await finished(over_ws) == 1000
    await over_http.ended()
    status, headers, _ = await get(server.url("watched.log"), method="HEAD")
    assert headers["httpfstream-followers"] == "0"
    # Following a finished resource is a download, not a live follower.
    download = await open_follower(server, "watched.log", "http")
    assert download.headers["httpfstream-followers"] == "0"
    await download.ended()
