"""
The CLIs' failures as a new user meets them (issue 10, section 2), each
through the CLIs as subprocesses against a real ``twistd``: the server's
own reason for a refusal, 416's own status, one-line hints for a URL whose
scheme does not match the port or whose certificate is not trusted,
``--retry`` waiting for a server not reachable at start-up, the progress
line, ``--version``, and each tool's own exit statuses in ``--help``.
"""

from __future__ import annotations

import importlib.metadata
import os
import pty
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import APPEND, FOLLOW, Child, Twistd, tls_files
from twisted.internet import threads

import httpfstream


def run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60)


# -- the server's reason, and 416 --------------------------------------------


def test_a_refused_append_says_the_servers_reason(twistd: Twistd):
    url = f"http://127.0.0.1:{twistd.port}/a/%2e%2e/b.log"
    result = run(APPEND, url, stdin=b"x")
    assert result.returncode == 1
    assert result.stderr == (
        b"httpfstream-append: the server refused: 400 Bad Request:"
        b" resource name has a '..' segment\n"
    )


def test_a_wrong_offset_says_the_size(twistd: Twistd):
    url = twistd.url("sized.log")
    assert run(APPEND, url, stdin=b"abc").returncode == 0
    result = run(APPEND, "--offset", "7", url, stdin=b"x")
    assert result.returncode == 5
    assert b"(412): offset 7 does not match" in result.stderr
    assert b"3 bytes" in result.stderr


def test_follow_past_the_end_exits_9_with_the_size(twistd: Twistd):
    url = twistd.url("short.log")
    assert run(APPEND, url, stdin=b"abc").returncode == 0
    result = run(FOLLOW, "--offset", "10", url)
    assert result.returncode == 9
    assert result.stderr == (
        b"httpfstream-follow: --offset is past the end (416):"
        b" offset 10 is past the end of the resource (3 bytes)\n"
    )
    # While an appender holds it, the refusal comes over the WebSocket path.
    appender = subprocess.Popen([APPEND, url], stdin=subprocess.PIPE)
    try:
        # Wait until it holds the resource (a HEAD says so).
        deadline = time.monotonic() + 15
        while b"Httpfstream-Active: 1" not in _head(twistd.port, "short.log"):
            assert time.monotonic() < deadline, "the appender never held it"
            time.sleep(0.05)
        live = run(FOLLOW, "--offset", "10", url)
        assert live.returncode == 9
        assert b"offset 10 is past the end of the resource (3 bytes)" in live.stderr
    finally:
        appender.kill()
        appender.wait(10)
        assert appender.stdin is not None
        appender.stdin.close()


def _head(port: int, name: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"HEAD /{name} HTTP/1.0\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return answer


# -- scheme and trust mistakes -------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twistd, Path]]:
    """A ``twistd`` on an ``ssl:`` endpoint, and its authority's PEM file."""
    folder = tmp_path_factory.mktemp("tls")
    key_pem, cert_pem, ca = tls_files(folder)
    server = Twistd.start(
        folder / "root", port=f"ssl:0:privateKey={key_pem}:certKey={cert_pem}"
    )
    yield server, ca
    server.stop()


@pytest.mark.parametrize("tool", [APPEND, FOLLOW])
def test_https_to_a_plain_port_says_use_http(twistd: Twistd, tool: str):
    url = f"https://localhost:{twistd.port}/x.log"
    began = time.monotonic()
    result = run(tool, url)
    took = time.monotonic() - began
    assert result.returncode == 7
    assert result.stderr.count(b"\n") == 1
    assert b"answers plain HTTP, not TLS: use http://" in result.stderr
    # Found out by a probe, not by waiting for the 10 s handshake timeout.
    assert took < 8


@pytest.mark.parametrize("tool", [APPEND, FOLLOW])
def test_http_to_a_tls_port_says_use_https(tls: tuple[Twistd, Path], tool: str):
    server, _ = tls
    result = run(tool, f"http://localhost:{server.port}/x.log")
    assert result.returncode == 7
    assert (
        result.stderr
        == (
            f"{Path(tool).name}: localhost:{server.port} speaks TLS, not plain HTTP:"
            " use https:// for this port\n"
        ).encode()
    )


def test_an_unknown_authority_suggests_cafile(tls: tuple[Twistd, Path]):
    server, ca = tls
    url = server.url("trusted.log")
    result = run(FOLLOW, url)
    assert result.returncode == 7
    assert result.stderr == (
        b"httpfstream-follow: the server's certificate is not trusted:"
        b" certificate verify failed: give --cafile the PEM file of the"
        b" authority that signed it\n"
    )
    # Given the authority, it works.
    assert run(APPEND, "--cafile", str(ca), url, stdin=b"ok\n").returncode == 0
    assert run(FOLLOW, "--cafile", str(ca), url).stdout == b"ok\n"


def test_a_certificate_for_another_host_says_so(tls: tuple[Twistd, Path]):
    server, ca = tls
    url = f"https://127.0.0.1:{server.port}/x.log"
    result = run(APPEND, "--cafile", str(ca), url, stdin=b"x")
    assert result.returncode == 7
    assert result.stderr == (
        b"httpfstream-append: the server's certificate is not for 127.0.0.1:"
        b" name a host the certificate is for in the URL\n"
    )


def test_a_mistake_is_not_retried(twistd: Twistd):
    """--retry does not wait out --retry-for for a wrong scheme."""
    url = f"https://localhost:{twistd.port}/x.log"
    began = time.monotonic()
    result = run(FOLLOW, "--retry", "--retry-for", "60", url)
    assert result.returncode == 7
    assert time.monotonic() - began < 8


# -- --retry at start-up ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_retry_waits_for_a_server_not_up_yet_both_alike(
    tmp_path: Path, children: list[Child]
):
    """
    With --retry, the appender and the follower both keep trying a server
    that cannot be reached yet (its port refuses connections), saying so
    with -v each time, and go on once it is up.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/early.log"
    retry = ("-v", "--retry", "--retry-for", "60")
    appender = Child(APPEND, *retry, url)
    follower = Child(FOLLOW, *retry, "--wait", url)
    children += [appender, follower]
    for child in (appender, follower):
        await child.until(lambda c=child: c.stderr.count(b"retrying in") >= 2)
        assert b"Connection was refused" in child.stderr
    server = await threads.deferToThread(
        Twistd.start, tmp_path / "root", port=f"tcp:{port}"
    )
    try:
        await appender.until_stderr(b"appending to")
        appender.write(b"made it\n")
        await follower.until_stdout(len(b"made it\n"))
        appender.close_stdin()
        assert await appender.exit_status() == 0
        assert await follower.exit_status() == 0
        assert bytes(follower.stdout) == b"made it\n"
    finally:
        await threads.deferToThread(server.stop)


async def test_retry_gives_up_after_retry_for(children: list[Child]):
    url = f"http://127.0.0.1:{_free_port()}/never.log"
    for tool in (APPEND, FOLLOW):
        child = Child(tool, "--retry", "--retry-for", "1", url)
        children.append(child)
        assert await child.exit_status() == 7
        assert b"cannot reach the server" in child.stderr


# -- the progress line -------------------------------------------------------------


def test_progress_when_asked_and_never_on_a_pipe_by_default(twistd: Twistd):
    url = twistd.url("progress.log")
    data = os.urandom(1 << 20)
    quiet = run(APPEND, url, stdin=data)
    assert (quiet.returncode, quiet.stderr) == (0, b"")
    shown = run(APPEND, "--progress", twistd.url("progress2.log"), stdin=data)
    assert shown.returncode == 0
    assert shown.stderr.startswith(b"\r")
    last = shown.stderr.rstrip(b"\n").split(b"\r")[-1]
    assert last.startswith(b"sent 1.0 MiB, acknowledged 1.0 MiB, ")
    assert last.rstrip().endswith(b"/s")
    assert run(FOLLOW, url).stderr == b""
    followed = run(FOLLOW, "--progress", url)
    assert followed.stdout == data
    assert (
        followed.stderr.rstrip(b"\n").split(b"\r")[-1].startswith(b"received 1.0 MiB, ")
    )


def _on_a_terminal(*argv: str) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal: (status, stdout, terminal output)."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
        )
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "no output from the terminal within 30 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            seen += chunk
        assert process.stdout is not None
        out = process.stdout.read()
        process.stdout.close()
        return process.wait(30), out, seen
    finally:
        os.close(master)


def test_progress_on_a_terminal_and_quiet(twistd: Twistd):
    url = twistd.url("tty.log")
    assert run(APPEND, url, stdin=b"x" * 5000).returncode == 0
    code, out, seen = _on_a_terminal(FOLLOW, url)
    assert (code, out) == (0, b"x" * 5000)
    assert b"\rreceived 4.9 KiB, " in seen
    code, out, seen = _on_a_terminal(FOLLOW, "--quiet", url)
    assert (code, out, seen) == (0, b"x" * 5000, b"")


# -- --version and --help ------------------------------------------------------


@pytest.mark.parametrize("tool", [APPEND, FOLLOW])
def test_version(tool: str):
    installed = importlib.metadata.version("httpfstream")
    assert httpfstream.__version__ == installed
    result = run(tool, "--version")
    assert result.returncode == 0
    assert result.stdout == f"{Path(tool).name} {installed}\n".encode()


def _statuses(tool: str) -> list[str]:
    out = run(tool, "--help").stdout.decode()
    table = out.split("exit status:\n", 1)[1]
    return [line.split()[0] for line in table.splitlines() if line[:4].strip()]


def test_help_lists_only_the_statuses_each_tool_returns():
    assert _statuses(APPEND) == ["0", "1", "2", "4", "5", "6", "7", "8", "130"]
    assert _statuses(FOLLOW) == ["0", "1", "2", "3", "6", "7", "8", "9", "10", "130"]
    assert "409" in run(APPEND, "--help").stdout.decode()
    assert "416" in run(FOLLOW, "--help").stdout.decode()


def test_the_readme_tables_list_the_same_statuses():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for tool in (APPEND, FOLLOW):
        name = Path(tool).name
        table = readme.split(f"Exit status of `{name}`", 1)[1].split("\n\n", 2)[1]
        rows = [row.split("|")[1].strip() for row in table.splitlines()[2:]]
        assert rows == _statuses(tool), name
