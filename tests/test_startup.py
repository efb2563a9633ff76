"""
Failures a new user meets first, each answered clearly: a port in use, a
storage root that cannot be used, a bad token file, an endpoint string
Twisted cannot make, an option's value that is not one it takes (one line
on standard error and status 1, at once: no traceback, no usage), and a
client that trickles its request head in (closed, however slowly it sends).
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
from pathlib import Path

import pytest
from support.clients import appender, close, get, raw
from support.processes import BIN, Twistd, poll_until, tls_files
from twisted.internet import reactor
from twisted.internet.task import LoopingCall

from httpfstream import client
from httpfstream.tap import parse_size


def twistd(*args: str, **kwargs) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "httpfstream", *args],
        capture_output=True,
        timeout=30,
        **kwargs,
    )


def complaint(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The lines that say what went wrong (twistd's start-up banner aside)."""
    text = (result.stdout + result.stderr).decode()
    return [
        line
        for line in text.splitlines()
        if line.strip() and "starting up" not in line and "reactor class" not in line
    ]


def test_a_port_in_use_stops_it_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = twistd(f"--root={tmp_path}", f"--port=tcp:{port}:interface=127.0.0.1")
    assert result.returncode != 0
    lines = complaint(result)
    assert len(lines) == 1, lines
    assert f"cannot listen on tcp:{port}" in lines[0]
    assert "in use" in lines[0]


def test_one_port_of_several_in_use_stops_it_with_one_line_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = twistd(
            f"--root={tmp_path}",
            "--port=tcp:0:interface=127.0.0.1",
            f"--port=tcp:{port}:interface=127.0.0.1",
        )
    assert result.returncode != 0
    # The first port was had, and its start is logged as ever; then the one
    # line that says which could not be.
    lines = [
        line
        for line in complaint(result)
        if "Site starting on" not in line and "Starting factory" not in line
    ]
    assert len(lines) == 1, lines
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1" in lines[0]
    assert "in use" in lines[0]


async def test_every_port_serves_the_same_resources(tmp_path):
    # Like `twist web --listen`: plain HTTP and TLS from one server.
    key_pem, cert_pem, ca = tls_files(tmp_path)
    server = Twistd.start(
        tmp_path / "root",
        "--port",
        f"ssl:0:interface=127.0.0.1:privateKey={key_pem}:certKey={cert_pem}",
    )
    hfs = client.Client(reactor, trust_root=str(ca))
    try:
        poll_until(lambda: len(server.ports) == 2, timeout=10)
        plain, secure = server.ports
        assert plain != secure
        name = "both/ports.log"
        over_http = f"http://127.0.0.1:{plain}/{name}"
        over_tls = f"https://localhost:{secure}/{name}"
        # An appender on one port, a follower on the other, live.
        writer = await hfs.open_append(over_http)
        writer.write(b"plain ")
        await writer.drained()
        chunks: list[bytes] = []
        following = hfs.follow(over_tls, chunks.append)  # wss
        writer.write(b"and tls")
        assert await writer.close() == len(b"plain and tls")
        assert (await following.addTimeout(10, reactor)).complete
        assert b"".join(chunks) == b"plain and tls"
        # And the other way round: POST over TLS, read over plain HTTP.
        await hfs.append(over_tls, b"\n")
        assert await hfs.read(over_http) == b"plain and tls\n"
        assert (tmp_path / "root" / "both" / "ports.log").read_bytes() == (
            b"plain and tls\n"
        )
    finally:
        await hfs.close()
        server.stop()


def test_a_root_that_is_a_file_stops_it_with_one_line(tmp_path):
    root = tmp_path / "file"
    root.write_text("not a folder")
    result = twistd(f"--root={root}", "--port=tcp:0:interface=127.0.0.1")
    assert result.returncode != 0
    assert complaint(result) == [f"httpfstream: --root {root} is not a folder"]


def test_a_root_that_cannot_be_written_is_refused():
    # As root every folder is writable, and the venv under /root cannot be
    # run as another user: check the start-up test itself in a child
    # process that becomes nobody, as a service user would be.
    # A folder of its own (pytest's temporary folders are closed to others).
    import tempfile

    from httpfstream.tap import _check_root

    parent = tempfile.mkdtemp(prefix="httpfstream-ro-")
    os.chmod(parent, 0o755)
    root = os.path.join(parent, "ro")
    os.mkdir(root, 0o555)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            try:
                _check_root(str(root))
                os.write(write, b"started")
            except SystemExit as e:
                os.write(write, str(e.code).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    os.rmdir(root)
    os.rmdir(parent)
    assert said.startswith(f"httpfstream: --root {root} is not writable"), said


def test_a_bad_token_file_stops_it_with_its_error_alone(tmp_path):
    bad = tmp_path / "tokens"
    bad.write_text("short append\n")
    result = twistd(f"--root={tmp_path}", f"--auth={bad}")
    assert result.returncode != 0
    lines = complaint(result)
    assert len(lines) == 1, lines
    assert "16 characters" in lines[0]
    assert "Usage" not in lines[0]


ENDPOINT_EXAMPLE = "tcp:8080:interface=127.0.0.1"


@pytest.mark.parametrize(
    ("option", "value", "why", "expected"),
    [
        ("port", "bogus:1", "Unknown endpoint type: 'bogus'", ENDPOINT_EXAMPLE),
        ("port", "tcp:abc", "'abc' is not a number", ENDPOINT_EXAMPLE),
        # No keys: Twisted looks for server.pem in the working folder.
        ("port", "ssl:18443", "server.pem", "privateKey=KEY.pem:certKey=CERT.pem"),
        ("admin", "bogus:9100", "Unknown endpoint type: 'bogus'", ENDPOINT_EXAMPLE),
    ],
)
def test_an_endpoint_twisted_cannot_make_stops_it_with_one_line(
    tmp_path, option, value, why, expected
):
    root = tmp_path / "root"
    result = twistd(f"--root={root}", f"--{option}={value}", cwd=tmp_path)
    assert result.returncode == 1
    lines = complaint(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"httpfstream: --{option} {value}: "), lines[0]
    assert why in lines[0]
    assert expected in lines[0]
    # Refused before the root is made.
    assert not root.exists()


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("--max-message-size=12Q", "optionally with K, M, G or T"),
        ("--max-resource-size=lots", "optionally with K, M, G or T"),
        ("--idle-timeout=soon", "is not a whole number of seconds"),
        ("--max-age=soon", "optionally with s, m, h, d or w"),
        ("--max-followers=many", "is not a whole number"),
        ("--fsync=sometimes", "give never, close or always"),
        ("--redis-lease=0", "give at least 1 second"),
    ],
)
def test_a_bad_option_value_stops_it_with_one_line(tmp_path, argument, expected):
    option, value = argument.split("=")
    result = twistd(f"--root={tmp_path}", argument)
    assert result.returncode == 1
    lines = complaint(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"httpfstream: {option}: "), lines[0]
    assert value in lines[0]
    assert expected in lines[0]
    assert "Usage" not in result.stdout.decode() + result.stderr.decode()


def test_help_still_lists_every_option_with_the_size_suffixes_it_takes(tmp_path):
    helped = twistd("--help")
    assert helped.returncode == 0, helped.stderr
    text = " ".join(helped.stdout.decode().split())
    assert "--max-message-size=" in text and "--port=" in text
    # The suffixes --help names are the ones a bad size is told to use.
    refused = "\n".join(
        complaint(twistd(f"--root={tmp_path}", "--max-message-size=1X"))
    )
    (suffixes,) = re.findall(r"optionally with ((?:[A-Z], )*[A-Z] or [A-Z])", refused)
    # Every size option: the two maxima, --text-frame-size and --cache-size.
    assert text.count(f"Suffixes {suffixes};") == 4, suffixes
    # So does the README's table of options.
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = [row for row in readme.splitlines() if row.startswith("| `--max-")]
    sized = [row for row in rows if "-size` |" in row]
    assert len(sized) == 2 and all(f"Suffixes {suffixes};" in r for r in sized), sized
    # And each of them is taken.
    units = suffixes.replace(" or ", ", ").split(", ")
    assert [parse_size(f"1{unit}") for unit in units] == [
        1 << 10,
        1 << 20,
        1 << 30,
        1 << 40,
    ]


async def test_a_request_head_trickling_in_is_closed(make_server):
    # The idle timeout (60 s) restarts on every line; the head's own bound
    # (2 s) does not, so the connection is closed while it still trickles.
    server = make_server(site_timeout=60, header_timeout=2)
    client = await raw(server)
    client.send(b"GET /logs/x.log HTTP/1.1\r\nHost: x\r\n")
    lines = iter(range(40))

    def one_more_line() -> None:
        if next(lines, None) is None:
            trickle.stop()
        elif client.transport is not None and client.transport.connected:
            client.send(b"X-Slow: 1\r\n")

    trickle = LoopingCall(one_more_line)
    trickle.clock = reactor
    trickle.start(0.5)
    try:
        await client.closed.addTimeout(15, reactor)
    finally:
        if trickle.running:
            trickle.stop()
    assert client.received == b""
    # A request that sends its head at once is served as ever.
    assert (await get(server.url("x.log")))[0] == 404


async def test_refusals_say_the_true_state_while_an_appender_holds_it(server):
    a = await appender(server, "held.log", ack=1)
    a.sendMessage(b"abc")
    await a.until_ack(3)
    for method, query in [("PUT", {}), ("GET", {"verb": "nonsense"})]:
        status, headers, _ = await get(server.url("held.log", **query), method=method)
        assert status in (400, 405)
        assert headers["httpfstream-active"] == "1"
        assert headers["httpfstream-size"] == "3"
    assert await close(a) == 1000


@pytest.mark.parametrize("follow", [False, True])
async def test_reader_responses_are_never_sniffed(server, follow):
    await get(server.url("n.log"), method="POST", data=b"<script>")
    query = {"follow": 1} if follow else {}
    _, headers, _ = await get(server.url("n.log", **query))
    assert headers["x-content-type-options"] == "nosniff"
    if follow:
        assert headers["x-accel-buffering"] == "no"
