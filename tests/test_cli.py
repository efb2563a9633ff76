"""
The twistd plugin and the command-line clients, run as subprocesses of the
installed package, the way a user runs them.

These tests block on subprocess pipes; the server is another process, so
nothing here needs the reactor to turn.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from support.processes import (
    APPEND,
    BIN,
    FOLLOW,
    Twistd,
    read_line,
    run,
    spawn,
    start_append,
    tls_files,
    type_line,
)


def fetch(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_twistd_help_documents_every_option():
    out = run(str(BIN / "twistd"), "httpfstream", "--help").stdout.decode()
    for option in (
        "--root",
        "--port",
        "--max-message-size",
        "--max-resource-size",
        "--fsync",
        "--ping-interval",
        "--ping-timeout",
        "--handshake-timeout",
    ):
        assert option in out
    assert "tcp:8080" in out


def test_twistd_refuses_bad_options(tmp_path):
    result = run(
        str(BIN / "twistd"), "-n", "--pidfile=", "httpfstream", "--fsync=sometimes"
    )
    assert result.returncode != 0
    assert b"fsync" in result.stdout + result.stderr


def test_walkthrough_follow_sees_each_line_as_it_is_typed(twistd: Twistd):
    url = twistd.url("walk/build.log")
    appender = start_append(url)
    assert appender.stdin is not None
    type_line(appender, b"compiling...\n")
    follower = spawn(FOLLOW, url, stdout=subprocess.PIPE)
    assert follower.stdout is not None
    assert read_line(follower.stdout) == b"compiling...\n"
    # Typed later, seen at once: the appender's stdin stays open.
    type_line(appender, b"linking...\n")
    assert read_line(follower.stdout) == b"linking...\n"
    appender.stdin.close()
    assert appender.wait(30) == 0
    assert follower.wait(30) == 0
    assert follower.stdout.read() == b""
    assert fetch(url) == (200, b"compiling...\nlinking...\n")


def test_binary_exact_through_both_clients(twistd: Twistd):
    data = os.urandom(3 << 20) + b"\x00\xff\r\n"
    url = twistd.url("bin/blob.bin")
    assert run(APPEND, url, stdin=data).returncode == 0
    result = run(FOLLOW, url)
    assert (result.returncode, result.stdout == data) == (0, True)
    result = run(FOLLOW, "--offset", "-4", url)
    assert result.stdout == b"\x00\xff\r\n"
    # Resume an append at the right offset, refuse the wrong one.
    assert run(APPEND, "--offset", str(len(data)), url, stdin=b"+").returncode == 0
    wrong = run(APPEND, "--offset", "5", url, stdin=b"x")
    assert wrong.returncode == 5
    assert b"412" in wrong.stderr
    assert fetch(url)[1] == data + b"+"


def test_follow_not_found_exits_3(twistd: Twistd):
    result = run(FOLLOW, twistd.url("never-written.log"))
    assert result.returncode == 3
    assert b"no such resource" in result.stderr


def test_second_appender_exits_4(twistd: Twistd):
    url = twistd.url("busy.log")
    first = start_append(url)
    result = run(APPEND, url, stdin=b"x")
    assert result.returncode == 4
    assert b"409" in result.stderr
    first.stdin.close()
    assert first.wait(30) == 0


def test_unreachable_server_exits_7():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for tool in (APPEND, FOLLOW):
        result = run(tool, f"http://127.0.0.1:{port}/x.log")
        assert result.returncode == 7
        assert b"cannot reach" in result.stderr


def test_lost_appender_makes_follow_exit_6(twistd: Twistd):
    url = twistd.url("lost.log")
    appender = start_append(url)
    type_line(appender, b"partial output\n")
    follower = spawn(FOLLOW, url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert read_line(follower.stdout) == b"partial output\n"
    appender.kill()
    appender.wait(10)
    assert follower.wait(30) == 6
    assert b"appender was lost" in follower.stderr.read()


def head(url: str) -> dict[str, str]:
    """A HEAD request's headers, lowercase names."""
    request = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        return {k.lower(): v for k, v in response.getheaders()}


def test_ctrl_c_ends_an_append_as_interrupted(twistd: Twistd):
    url = twistd.url("interrupted.log")
    appender = start_append(url)
    type_line(appender, b"kept\n")
    follower = spawn(FOLLOW, url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert read_line(follower.stdout) == b"kept\n"
    appender.send_signal(signal.SIGINT)
    assert appender.wait(30) == 130
    # Persisted, but not complete: the follower is told the appender is
    # gone (4000), and exits "incomplete".
    assert follower.wait(30) == 6
    assert b"interrupted" in follower.stderr.read()
    assert fetch(url) == (200, b"kept\n")
    assert head(url)["httpfstream-complete"] == "0"


def test_ctrl_c_ends_a_follow(twistd: Twistd):
    url = twistd.url("watched.log")
    appender = start_append(url)
    type_line(appender, b"line\n")
    follower = spawn(FOLLOW, url, stdout=subprocess.PIPE)
    assert read_line(follower.stdout) == b"line\n"
    follower.send_signal(signal.SIGINT)
    assert follower.wait(30) == 130
    appender.stdin.close()
    assert appender.wait(30) == 0


@pytest.mark.parametrize("tool", [APPEND, FOLLOW])
def test_help_lists_exit_codes(tool):
    out = run(tool, "--help").stdout
    assert b"exit status" in out and b"401/403" in out


def test_make_run_serves_curl_style_requests(twistd: Twistd):
    assert fetch(twistd.url("curl.log"), data=b"posted\n")[0] == 200
    assert fetch(twistd.url("curl.log")) == (200, b"posted\n")
    assert fetch(twistd.url("curl.log", follow=1)) == (200, b"posted\n")


def test_tls_endpoint_and_cafile(tmp_path):
    key_pem, cert_pem, ca = tls_files(tmp_path)
    server = Twistd.start(
        tmp_path / "root", port=f"ssl:0:privateKey={key_pem}:certKey={cert_pem}"
    )
    try:
        url = server.url("secure.log")
        assert url.startswith("https://localhost:")
        ok = run(APPEND, "--cafile", str(ca), url, stdin=b"over tls\n")
        assert ok.returncode == 0, ok.stderr
        got = run(FOLLOW, "--cafile", str(ca), url)
        assert (got.returncode, got.stdout) == (0, b"over tls\n")
        # Without the authority the certificate is not trusted.
        untrusted = run(FOLLOW, url)
        assert untrusted.returncode != 0
    finally:
        server.stop()


def _post_head(port: int, headers: str, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /big.bin HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def test_post_over_the_limit_is_refused_before_the_body_is_read(tmp_path):
    server = Twistd.start(tmp_path / "root", "--max-message-size=1K")
    try:
        # Announced too large: refused without sending a byte of the body.
        answer = _post_head(server.port, "Content-Length: 10000000\r\n")
        assert answer.startswith(b"HTTP/1.1 413")
        # Chunked: refused once it passes the limit.
        chunks = b"".join(b"200\r\n" + b"x" * 512 + b"\r\n" for _ in range(3))
        answer = _post_head(server.port, "Transfer-Encoding: chunked\r\n", chunks)
        assert answer.startswith(b"HTTP/1.1 413")
        assert not (tmp_path / "root" / "big.bin").exists()
        # Within the limit, POST works as before.
        ok = _post_head(
            server.port, "Content-Length: 5\r\nConnection: close\r\n", b"hello"
        )
        assert ok.startswith(b"HTTP/1.1 200")
        assert (tmp_path / "root" / "big.bin").read_bytes() == b"hello"
    finally:
        server.stop()


def test_follow_wait_for_a_resource_not_written_yet(twistd: Twistd):
    url = twistd.url("later.log")
    follower = spawn(FOLLOW, "--wait", url, stdout=subprocess.PIPE)
    assert run(FOLLOW, url).returncode == 3  # still nothing there
    appender = start_append(url)
    type_line(appender, b"arrived\n")
    assert read_line(follower.stdout) == b"arrived\n"
    appender.stdin.close()
    assert appender.wait(30) == 0
    assert follower.wait(30) == 0
