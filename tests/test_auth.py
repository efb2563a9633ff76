"""docs/PROTOCOL.md section 8: access control with bearer tokens."""

from __future__ import annotations

import subprocess

import pytest
from support.clients import close, get, ws
from support.processes import BIN, Twistd

from httpfstream import client
from httpfstream.web.auth import Access, Right, TokenError, Tokens, mask_token
from httpfstream.web.site import masked_log_formatter

WRITER = "writer-token-0123456789"
READER = "reader-token-0123456789"
SCOPED = "scoped-token-0123456789"
TOKENS = f"""
# token  rights  prefix
{WRITER} append,follow
{READER} follow
{SCOPED} append,follow team-a/
"""


@pytest.fixture
def secured(make_server):
    return make_server(tokens=Tokens.parse(TOKENS))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_no_token_is_401_with_a_challenge_and_no_state_headers(secured):
    await get(secured.url("x.log"), method="POST", data=b"x", headers=bearer(WRITER))
    for method in ("GET", "HEAD", "POST"):
        status, headers, _ = await get(secured.url("x.log"), method=method)
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer")
        assert not any(k.startswith("httpfstream-") for k in headers)
    probe = await ws(secured.ws_url("x.log"))
    assert probe.status == 401
    assert not any(k.startswith("httpfstream-") for k in probe.headers)


async def test_unknown_token_is_401(secured):
    status, headers, _ = await get(secured.url("x.log"), headers=bearer("nope" * 5))
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]


async def test_rights_are_checked_per_verb(secured):
    url = secured.url("r.log")
    status, _, _ = await get(url, method="POST", data=b"x", headers=bearer(READER))
    assert status == 403
    assert not secured.file("r.log").exists()
    probe = await ws(secured.ws_url("r.log"), "APPEND", headers=bearer(READER))
    assert probe.status == 403
    a = await ws(secured.ws_url("r.log"), "APPEND", headers=bearer(WRITER))
    assert a.status == 101
    a.sendMessage(b"data")
    f = await ws(secured.ws_url("r.log"), headers=bearer(READER))
    assert f.status == 101
    await f.until_bytes(4)
    await close(a)
    assert (await get(url, headers=bearer(READER)))[2] == b"data"
    head = await get(url, method="HEAD", headers={**bearer(READER), "X-Verb": "APPEND"})
    assert head[0] == 200


async def test_prefix_limits_a_grant(secured):
    ok = await get(
        secured.url("team-a/x.log"), method="POST", data=b"x", headers=bearer(SCOPED)
    )
    assert ok[0] == 200
    for name in ("team-b/x.log", "team-a-old/x.log", "x.log"):
        status, _, _ = await get(
            secured.url(name), method="POST", data=b"x", headers=bearer(SCOPED)
        )
        assert status == 403, name
    # A name that is not valid is only covered by an unrestricted grant.
    url = f"http://127.0.0.1:{secured.address[1]}/logs/team-a/%2e%2e/x"
    assert (await get(url, method="POST", data=b"x", headers=bearer(SCOPED)))[0] == 403
    assert (await get(url, method="POST", data=b"x", headers=bearer(WRITER)))[0] == 400


async def test_access_token_query_parameter_for_browsers(secured):
    a = await ws(secured.ws_url("q.log", access_token=WRITER), "APPEND")
    assert a.status == 101
    await close(a)
    status, _, body = await get(secured.url("q.log", access_token=READER))
    assert (status, body) == (200, b"")
    assert secured.file("q.log").exists()  # the parameter is not in the name


async def test_client_api_takes_a_token(secured):
    url = secured.url("api.log")
    with pytest.raises(client.AccessDenied) as denied:
        await client.append(url, b"x")
    assert denied.value.status == 401
    with pytest.raises(client.AccessDenied) as denied:
        await client.append(url, b"x", token=READER)
    assert denied.value.status == 403
    assert await client.append(url, b"hello", token=WRITER) == 5
    assert await client.read(url, token=READER) == b"hello"
    got: list[bytes] = []
    assert (await client.follow(url, got.append, token=READER)).complete
    assert got == [b"hello"]


def test_token_file_format():
    tokens = Tokens.parse(TOKENS)
    assert len(tokens) == 3
    assert tokens.check(WRITER.encode(), Right.APPEND, ("a",)) is Access.ALLOWED
    assert tokens.check(READER.encode(), Right.APPEND, ("a",)) is Access.FORBIDDEN
    assert tokens.check(None, Right.FOLLOW, ("a",)) is Access.UNAUTHORIZED
    for bad in (
        "",
        "short append",
        f"{WRITER} delete",
        f"{WRITER} append extra words",
        f"{WRITER} append ../up",
        f"{WRITER} append\n{WRITER} follow",
    ):
        with pytest.raises(TokenError):
            Tokens.parse(bad)


def test_tokens_are_masked_in_access_logs():
    assert mask_token(b"/a.log?x=1&access_token=s3cret&y=2") == (
        b"/a.log?x=1&access_token=***&y=2"
    )

    class FakeRequest:
        uri = b"/a.log?access_token=s3cret"
        method = b"GET"
        clientproto = b"HTTP/1.1"
        code = 200
        sentLength = 0

        def getClientAddress(self):
            from twisted.internet.address import IPv4Address

            return IPv4Address("TCP", "127.0.0.1", 1)

        def getHeader(self, name):
            return None

        def getUser(self):
            return b""

    line = masked_log_formatter("[now]", FakeRequest())
    assert "s3cret" not in line and "access_token=***" in line


def test_twistd_and_clis_with_auth(tmp_path):
    auth = tmp_path / "tokens"
    auth.write_text(TOKENS)
    server = Twistd.start(tmp_path / "root", f"--auth={auth}")
    try:
        url = server.url("cli.log")
        append = str(BIN / "httpfstream-append")
        follow = str(BIN / "httpfstream-follow")
        denied = subprocess.run([append, url], input=b"x", capture_output=True)
        assert denied.returncode == 8 and b"401" in denied.stderr
        ok = subprocess.run(
            [append, "--token", WRITER, url], input=b"line\n", capture_output=True
        )
        assert ok.returncode == 0, ok.stderr
        env = {"HTTPFSTREAM_TOKEN": READER, "PATH": "/usr/bin:/bin"}
        read = subprocess.run([follow, url], capture_output=True, env=env)
        assert (read.returncode, read.stdout) == (0, b"line\n")
        log = b"".join(server.log)
        assert WRITER.encode() not in log and READER.encode() not in log
    finally:
        server.stop()
    bad = tmp_path / "bad"
    bad.write_text("short append\n")
    result = subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "httpfstream", f"--auth={bad}"],
        capture_output=True,
    )
    assert result.returncode != 0
    assert b"16 characters" in result.stdout + result.stderr
