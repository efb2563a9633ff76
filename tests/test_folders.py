"""
Listing (section 10), deleting and retention (section 11), and what a
browser gets (section 12) as far as HTTP goes; the page itself is tested in
a real browser in test_viewer.py.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from support.clients import appender, close, finished, get, raw_request, ws
from support.processes import Twistd, poll_until

from httpfstream.web.auth import Tokens

BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


async def listing(server, path: str = "", **query) -> dict:
    status, headers, body = await get(server.url(path, **query))
    assert status == 200
    assert headers["content-type"] == "application/json"
    return json.loads(body)


async def test_a_folder_lists_what_a_name_can_reach(server, tmp_path):
    await get(server.url("b.log"), method="POST", data=b"bee")
    await get(server.url("a.log"), method="POST", data=b"a")
    await get(server.url("sub/c.log"), method="POST", data=b"c")
    a = await appender(server, "live.log")
    outside = tmp_path / "outside.log"
    outside.write_text("secret")
    os.symlink(outside, server.root.child("link.log").path)
    os.symlink(server.root.child("a.log").path, server.root.child("alias.log").path)
    found = await listing(server)
    assert found["folders"] == ["sub/"]  # not the state folder
    names = [r["name"] for r in found["resources"]]
    assert names == ["a.log", "alias.log", "b.log", "live.log"]  # no link out
    b = found["resources"][2]
    assert (b["size"], b["active"], b["complete"]) == (3, False, True)
    assert b["modified"].endswith("Z")
    live = found["resources"][3]
    assert (live["active"], live["complete"]) == (True, False)
    assert (await listing(server, "sub/"))["resources"][0]["name"] == "c.log"
    assert await close(a) == 1000


async def test_listing_forms(server):
    await get(server.url("f/x.log"), method="POST", data=b"x")
    # The mount point itself, with or without its slash.
    port = server.address[1]
    status, _, body = await get(f"http://127.0.0.1:{port}/logs")
    assert status == 200 and json.loads(body)["folders"] == ["f/"]
    # A browser gets an index linking each resource to its viewer.
    status, headers, body = await get(server.url("f/"), headers=BROWSER)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert 'href="x.log"' in body.decode()
    assert "content-security-policy" in headers
    # ?format=json wins over Accept.
    status, headers, _ = await get(server.url("f/", format="json"), headers=BROWSER)
    assert headers["content-type"] == "application/json"
    # No such folder; a file is not a folder.
    assert (await get(server.url("nope/")))[0] == 404
    assert (await get(server.url("f/x.log/")))[0] == 404
    # Folders are not written to.
    assert (await get(server.url("f/"), method="POST", data=b"x"))[0] == 400


async def test_listing_needs_the_follow_right(make_server):
    tokens = Tokens.parse(
        "reader-0123456789abcdef follow builds/\nwriter-0123456789abcdef append\n"
    )
    server = make_server(tokens=tokens)
    auth = {"Authorization": "Bearer reader-0123456789abcdef"}
    assert (await get(server.url("builds/"), headers=auth))[0] in (200, 404)
    assert (await get(server.url(""), headers=auth))[0] == 403
    writer = {"Authorization": "Bearer writer-0123456789abcdef"}
    assert (await get(server.url("builds/"), headers=writer))[0] == 403


async def test_delete(server):
    await get(server.url("d/e/gone.log"), method="POST", data=b"x" * 100_000)
    # A reader in the middle of it finishes with what it was given.
    reader = await ws(server.ws_url("d/e/gone.log"))
    status, headers, _ = await get(server.url("d/e/gone.log"), method="DELETE")
    assert status == 204
    assert headers["httpfstream-active"] == "0"
    assert (await get(server.url("d/e/gone.log")))[0] == 404
    assert (await get(server.url("d/e/gone.log"), method="DELETE"))[0] == 404
    # The folders it leaves empty go too.
    assert not server.root.child("d").exists()
    del reader
    # Held by an appender: 409, and nothing removed.
    a = await appender(server, "held.log", ack=1)
    a.sendMessage(b"abc")
    await a.until_ack(3)
    status, headers, _ = await get(server.url("held.log"), method="DELETE")
    assert (status, headers["httpfstream-active"]) == (409, "1")
    assert await close(a) == 1000
    assert server.file("held.log").getContent() == b"abc"


async def test_a_reader_of_a_deleted_resource_finishes(server):
    content = os.urandom(1 << 20)
    await get(server.url("big.log"), method="POST", data=content)
    status, _, _ = await get(server.url("big.log"), method="DELETE")
    assert status == 204
    # Gone for everybody who comes after.
    assert (await raw_request(server, "GET", "/logs/big.log"))[0] == 404
    await server.registry.when_idle()


async def test_the_sweep_removes_old_finished_resources_only(make_server):
    server = make_server(max_age=3600, sweep_interval=3600)
    old = time.time() - 7200
    for name in ("old/a.log", "young.log", "busy.log"):
        await get(server.url(name), method="POST", data=b"x")
    for name in ("old/a.log", "busy.log"):
        os.utime(server.file(name).path, (old, old))
    a = await appender(server, "busy.log")
    assert await server.registry.sweep() == 1
    assert not server.file("old/a.log").exists()
    assert not server.root.child("old").exists()
    assert server.file("young.log").exists()
    assert server.file("busy.log").exists()  # never an active one
    assert server.registry.counters.swept == 1
    a.sendClose(1000)
    await finished(a)


def test_twistd_sweeps_with_max_age(tmp_path):
    root = tmp_path / "root"
    (root / "logs").mkdir(parents=True)
    stale = root / "logs" / "stale.log"
    stale.write_bytes(b"old")
    os.utime(stale, (time.time() - 100, time.time() - 100))
    server = Twistd.start(root, "--max-age=60s")
    try:
        # The first sweep runs at start-up; another process's files give
        # no event to wait on.
        poll_until(lambda: not stale.exists(), timeout=10)
        assert not (root / "logs").exists()
        # The log line comes through another thread's pipe: wait for it too.
        poll_until(
            lambda: any(b"removed logs/stale.log" in line for line in server.log),
            timeout=10,
        )
    finally:
        server.stop()


async def test_a_browser_gets_the_viewer_and_raw_gets_the_bytes(server):
    await get(server.url("v.log"), method="POST", data=b"<script>alert(1)</script>")
    status, headers, body = await get(server.url("v.log"), headers=BROWSER)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["vary"] == "Accept"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    assert b"alert(1)" not in body  # the bytes never enter the page
    assert headers["httpfstream-complete"] == "1"
    for query, extra in [({"raw": 1}, {}), ({}, {"Range": "bytes=0-7"})]:
        status, headers, body = await get(
            server.url("v.log", **query), headers={**BROWSER, **extra}
        )
        assert body.startswith(b"<script>")
        assert headers["x-content-type-options"] == "nosniff"
    # Never written: a 404, browser or not; a browser gets the page, which
    # waits for the resource (section 12), a program a line of text.
    status, headers, body = await get(server.url("none.log"), headers=BROWSER)
    assert status == 404
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert headers["httpfstream-active"] == "0"
    assert b"<title>none.log</title>" in body
    status, headers, _ = await get(server.url("none.log"))
    assert (status, headers["content-type"]) == (404, "text/plain; charset=utf-8")
    # An invalid name can never be written: no page waits for it.
    status, headers, _ = await get(server.url("a/../b.log"), headers=BROWSER)
    assert (status, headers["content-type"]) == (404, "text/plain; charset=utf-8")


async def test_pages_bring_their_own_icon_so_no_favicon_is_asked(server):
    """A browser asks /favicon.ico of a page without an icon: a 404 each time."""
    await get(server.url("i.log"), method="POST", data=b"x")
    for url in (server.url("i.log"), server.url("")):
        status, headers, body = await get(url, headers=BROWSER)
        assert status == 200
        assert b'<link rel="icon" href="data:image/svg+xml,' in body
        assert "img-src 'self' data:;" in headers["content-security-policy"]
    assert server.registry.counters.refused == {}


async def test_a_name_is_never_taken_for_a_part_of_the_page(server):
    # The page is filled from its template in one pass: a name that looks
    # like one of its fields stays a name.
    await get(server.url("{script}{config}.log"), method="POST", data=b"x")
    _, _, body = await get(server.url("{script}{config}.log"), headers=BROWSER)
    assert b"<title>{script}{config}.log</title>" in body


@pytest.mark.parametrize("name", ["a b.log", "ü.log", "x&y<z>.log"])
async def test_index_links_are_escaped(server, name):
    await get(server.url(name), method="POST", data=b"x")
    _, _, body = await get(server.url(""), headers=BROWSER)
    assert f">{name}<".encode() not in body or "<" not in name
    assert b"<z>" not in body
