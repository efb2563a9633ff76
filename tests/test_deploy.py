"""
Running it as people do (README "Deploying"), each through the real thing:
Debian's nginx in front with the configuration the README shows, the
systemd units (``systemd-analyze verify``, and socket activation through
``systemd-socket-activate``), JSON log lines through twistd's
``--logger``, the wheel as pip builds and installs it, and what can be
checked of the Dockerfile without a Docker daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from support.clients import close, get, ws
from support.compressed import gzip_get
from support.followers import open_follower
from support.processes import BIN, Twistd, poll_until, require, stop_process

from httpfstream.tap import Options, parse_duration, parse_size

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def shown_in_readme(path: Path, fence: str) -> str:
    """
    The text of ``path``, checked to be in the README whole, as a fenced
    block of kind ``fence``: what the tests run is what the README shows.
    """
    text = path.read_text()
    assert f"```{fence}\n{text}```\n" in README, (
        f"README.md does not show {path.relative_to(REPO)} as it is"
        f" (a ```{fence} block holding exactly the file)"
    )
    return text


def server_defaults() -> Options:
    options = Options()
    options.parseOptions([])
    return options


def free_port() -> int:
    """A port nothing listens on now (the caller retries if one takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@dataclass
class Front:
    """Where clients reach a server (a process in front of it, or itself)."""

    port: int

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def url(self, name: str, **query: object) -> str:
        qs = ("?" + urlencode(query)) if query else ""
        return f"http://127.0.0.1:{self.port}/{quote(name)}{qs}"

    def ws_url(self, name: str, **query: object) -> str:
        return self.url(name, **query).replace("http", "ws", 1)


async def append_and_follow(front: Front, name: str, payload: bytes) -> None:
    """
    Through ``front``: APPEND ``payload`` over a WebSocket while it is
    followed over a WebSocket and with ``follow=1``, each follower joining
    after the first piece; both get every byte, in order, and a clean end.
    """
    chunks = [payload[i : i + 4000] for i in range(0, len(payload), 4000)]
    a = await ws(front.ws_url(name, ack=1), "APPEND", timeout=30)
    assert a.status == 101, (a.status, a.close_reason)
    a.sendMessage(chunks[0], isBinary=True)
    await a.until_ack(len(chunks[0]))
    followers = [await open_follower(front, name, t) for t in ("ws", "http")]
    for follower in followers:
        assert follower.live, (follower.transport_name, follower.status)
    for chunk in chunks[1:]:
        a.sendMessage(chunk, isBinary=True)
    await a.until_ack(len(payload))
    for follower in followers:
        await follower.until_bytes(len(payload))
    assert await close(a) == 1000
    ws_end, http_end = [await f.ended() for f in followers]
    assert (ws_end.clean, ws_end.code) == (True, 1000)
    assert http_end.clean
    for follower in followers:
        assert bytes(follower.received) == payload, follower.transport_name


# -- nginx in front -------------------------------------------------------------

NGINX_CONF = REPO / "docs" / "nginx.conf"
#: What the test changes in docs/nginx.conf, and nothing else: where nginx
#: listens and where the server is.
NGINX_LISTEN = "listen 80;"
NGINX_UPSTREAM = "proxy_pass http://127.0.0.1:8080;"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@dataclass
class Nginx(Front):
    """A private nginx on 127.0.0.1: its own prefix, pid, logs and temp files."""

    process: subprocess.Popen[bytes]
    prefix: Path

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @classmethod
    def start(cls, binary: str, prefix: Path, upstream: int) -> Nginx:
        """
        Run docs/nginx.conf, as the README shows it, in an nginx.conf of
        its own whose http context includes it (as Debian's includes
        conf.d/*.conf); only its listen address and upstream port change.
        """
        site = shown_in_readme(NGINX_CONF, "nginx")
        assert site.count(NGINX_LISTEN) == 1 and site.count(NGINX_UPSTREAM) == 1
        for _ in range(5):
            port = free_port()
            (prefix / "httpfstream.conf").write_text(
                site.replace(NGINX_LISTEN, f"listen 127.0.0.1:{port};").replace(
                    NGINX_UPSTREAM, f"proxy_pass http://127.0.0.1:{upstream};"
                )
            )
            # As root, nginx's workers would run as nobody, who cannot
            # enter pytest's temporary folders.
            user = "user root;\n" if os.geteuid() == 0 else ""
            (prefix / "nginx.conf").write_text(
                f"{user}worker_processes 1;\n"
                f"pid {prefix}/nginx.pid;\n"
                f"lock_file {prefix}/nginx.lock;\n"
                f"error_log {prefix}/error.log info;\n"
                "events { worker_connections 512; }\n"
                "http {\n"
                f"    access_log {prefix}/access.log;\n"
                f"    client_body_temp_path {prefix}/client_body;\n"
                f"    proxy_temp_path {prefix}/proxy;\n"
                f"    fastcgi_temp_path {prefix}/fastcgi;\n"
                f"    uwsgi_temp_path {prefix}/uwsgi;\n"
                f"    scgi_temp_path {prefix}/scgi;\n"
                f"    include {prefix}/httpfstream.conf;\n"
                "}\n"
            )
            process = subprocess.Popen(
                [
                    binary,
                    "-p",
                    f"{prefix}/",
                    "-c",
                    str(prefix / "nginx.conf"),
                    "-e",
                    str(prefix / "error.log"),
                    "-g",
                    "daemon off;",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # A group of its own: its workers go with it, come what may.
                start_new_session=True,
            )
            nginx = cls(port, process, prefix)
            # nginx says nothing when it is ready: try its port.
            try:
                poll_until(nginx.ready, 15)
            except TimeoutError:
                nginx.stop()
                raise
            if process.poll() is None:
                return nginx
            if "Address already in use" not in nginx.error_log():
                raise RuntimeError(f"nginx did not start:\n{nginx.error_log()}")
        raise RuntimeError(f"no free port for nginx:\n{nginx.error_log()}")

    def ready(self) -> bool:
        """Whether it has exited, or answers on its port."""
        return self.process.poll() is not None or accepts(self.port)

    def stop(self) -> None:
        """SIGTERM to the master, which stops its workers; else kill them all."""
        try:
            stop_process(self.process)
        finally:
            # Usually the master took its workers with it: nothing is left.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The server behind nginx, with its default options."""
    server = Twistd.start(tmp_path_factory.mktemp("behind-nginx"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nginx(request, tmp_path_factory):
    binary = nginx_binary()
    require("nginx", binary, "apt-get install nginx")
    assert binary is not None
    backend = request.getfixturevalue("backend")  # only once nginx is there
    front = Nginx.start(binary, tmp_path_factory.mktemp("nginx"), backend.port)
    yield front
    front.stop()


def test_the_nginx_configuration_fits_the_servers_defaults():
    site = shown_in_readme(NGINX_CONF, "nginx")
    defaults = server_defaults()

    def value(directive: str) -> str:
        found = re.findall(rf"^\s*{directive}\s+(\S+);", site, re.MULTILINE)
        assert len(found) == 1, (directive, found)
        return found[0]

    # A POST the server takes is one nginx takes, and no larger.
    assert parse_size(value("client_max_body_size")) == defaults["max-message-size"]
    # A WebSocket carrying only pings is never cut for being quiet.
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        assert parse_duration(value(directive)) > defaults["ping-interval"]
    assert value("proxy_http_version") == "1.1"
    assert "proxy_buffering" not in site


async def test_append_and_follow_through_nginx_byte_exact(nginx, backend):
    name = "through nginx/build 1.log"  # a space and a folder on the way
    payload = bytes(range(256)) * 256
    await append_and_follow(nginx, name, payload)
    assert (backend.root / name).read_bytes() == payload
    # The finished resource: a snapshot, a range, and a follow from the end.
    status, headers, body = await get(nginx.url(name))
    assert (status, body) == (200, payload)
    assert headers["httpfstream-complete"] == "1"
    status, headers, body = await get(nginx.url(name), headers={"Range": "bytes=-100"})
    assert (status, body) == (206, payload[-100:])
    late = await open_follower(nginx, name, "ws", offset=-10)
    assert (await late.ended()).clean
    assert bytes(late.received) == payload[-10:]


async def test_follow_1_is_streamed_through_nginx_unbuffered(nginx):
    # nginx buffers a proxied answer unless told otherwise; the server's
    # "X-Accel-Buffering: no" tells it, so one byte, far below any proxy
    # buffer, reaches the follower while the appender is still open.
    a = await ws(nginx.ws_url("unbuffered.log", ack=1), "APPEND")
    assert a.status == 101
    follower = await open_follower(nginx, "unbuffered.log", "http")
    assert follower.live and follower.status == 200
    a.sendMessage(b"!", isBinary=True)
    await follower.until_bytes(1)
    assert a.close_code is None and follower.end is None
    a.sendMessage(b"?", isBinary=True)
    await follower.until_bytes(2)
    assert bytes(follower.received) == b"!?"
    assert await close(a) == 1000
    assert (await follower.ended()).clean
    assert bytes(follower.received) == b"!?"


async def test_a_gzipped_follow_streams_through_nginx(nginx):
    # Compressed (PROTOCOL.md section 16), each batch is flushed, and nginx
    # passes the flushed bytes on at once: a line is decoded before the
    # next one is appended.
    a = await ws(nginx.ws_url("gzipped.log", ack=1), "APPEND")
    assert a.status == 101
    reader = await gzip_get(nginx.url("gzipped.log", follow=1))
    assert reader.status == 200 and reader.gzipped
    sent = b""
    for i in range(20):
        line = b"\x1b[32mstep %d\x1b[0m ok\n" % i
        a.sendMessage(line, isBinary=True)
        sent += line
        await reader.until_decoded(len(sent))
        assert bytes(reader.decoded) == sent
    assert await close(a) == 1000
    await reader.until_ended()
    assert reader.whole_gzip and bytes(reader.decoded) == sent
    # The finished resource's snapshot, gzipped through nginx too.
    snapshot = await gzip_get(nginx.url("gzipped.log"))
    await snapshot.until_ended()
    assert snapshot.gzipped and snapshot.whole_gzip
    assert bytes(snapshot.decoded) == sent


async def test_post_and_its_size_limit_through_nginx(nginx, backend):
    body = bytes(range(256)) * 100 + b"\r\n\0end"
    status, _, _ = await get(nginx.url("posted.bin"), method="POST", data=body)
    assert status == 200
    status, headers, got = await get(nginx.url("posted.bin"))
    assert (status, got) == (200, body)
    assert headers["httpfstream-size"] == str(len(body))
    # The limits agree: the server's largest body passes nginx, one byte
    # more is refused (by nginx, before the server sees it).
    limit = server_defaults()["max-message-size"]
    status, _, _ = await get(nginx.url("big.bin"), method="POST", data=b"b" * limit)
    assert status == 200
    assert (backend.root / "big.bin").stat().st_size == limit
    status, _, _ = await get(
        nginx.url("too-big.bin"), method="POST", data=b"b" * (limit + 1)
    )
    assert status == 413
    assert not (backend.root / "too-big.bin").exists()


async def test_the_viewer_page_through_nginx(nginx, backend):
    await get(nginx.url("viewed.log"), method="POST", data=b"\x1b[31mred\x1b[0m\n")
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    direct = await get(backend.url("viewed.log"), headers=browser)
    proxied = await get(nginx.url("viewed.log"), headers=browser)
    for status, headers, _ in (direct, proxied):
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
    # Each answer has its own script nonce: otherwise the same bytes.
    nonce = re.compile(r"'nonce-([^']+)'")
    direct_nonce = nonce.findall(direct[1]["content-security-policy"])[0]
    proxied_nonce = nonce.findall(proxied[1]["content-security-policy"])[0]
    assert proxied[1]["content-security-policy"] == direct[1][
        "content-security-policy"
    ].replace(direct_nonce, proxied_nonce)
    assert proxied[2] == direct[2].replace(
        direct_nonce.encode(), proxied_nonce.encode()
    )
    # And the bytes behind the page, for a browser asking for them raw.
    status, _, raw = await get(nginx.url("viewed.log", raw=1), headers=browser)
    assert (status, raw) == (200, b"\x1b[31mred\x1b[0m\n")


# -- systemd ---------------------------------------------------------------------

SYSTEMD = REPO / "docs" / "systemd"
#: Where the unit expects the install (README "Installing"), and its root.
UNIT_TWISTD = "/opt/httpfstream/bin/twistd"
UNIT_ROOT = "/var/lib/httpfstream"


def unit_setting(unit: str, key: str) -> str:
    found = re.findall(rf"^{key}=(.*)$", unit, re.MULTILINE)
    assert len(found) == 1, (key, found)
    return found[0]


def units() -> tuple[str, str]:
    """httpfstream.socket and httpfstream.service, as the README shows them."""
    return (
        shown_in_readme(SYSTEMD / "httpfstream.socket", "ini"),
        shown_in_readme(SYSTEMD / "httpfstream.service", "ini"),
    )


def test_the_systemd_units_are_valid(tmp_path):
    analyze = shutil.which("systemd-analyze")
    require("systemd-analyze", analyze, "apt-get install systemd")
    assert analyze is not None
    socket_unit, service = units()
    (tmp_path / "httpfstream.socket").write_text(socket_unit)
    # Only the install path changes: systemd checks that it can be run.
    assert service.count(UNIT_TWISTD) == 1
    (tmp_path / "httpfstream.service").write_text(
        service.replace(UNIT_TWISTD, str(BIN / "twistd"))
    )
    result = subprocess.run(
        [analyze, "verify", "httpfstream.socket", "httpfstream.service"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    # Unknown keys are only warned about: nothing must be said at all.
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


async def test_socket_activation_as_the_units_say(tmp_path):
    activate = shutil.which("systemd-socket-activate")
    require("systemd-socket-activate", activate, "apt-get install systemd")
    assert activate is not None
    socket_unit, service = units()
    host, _ = unit_setting(socket_unit, "ListenStream").rsplit(":", 1)
    assert host == "127.0.0.1"
    name = unit_setting(socket_unit, "FileDescriptorName")
    # The service's command, with the install and the root put here.
    command = shlex.split(unit_setting(service, "ExecStart"))
    assert command[0] == UNIT_TWISTD
    assert f"systemd:domain=INET:name={name}" in command
    command[0] = str(BIN / "twistd")
    command[command.index("--root") + 1] = str(tmp_path / "root")
    log = tmp_path / "activate.log"
    for _ in range(5):
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [activate, "-l", f"{host}:{port}", f"--fdname={name}", *command],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def listening(process: subprocess.Popen[bytes] = process) -> bool:
            return process.poll() is not None or b"Listening on" in log.read_bytes()

        try:
            # It says when it listens; another process, so watch its output.
            poll_until(listening, timeout=15)
        except TimeoutError:
            stop_process(process)
            raise
        if process.poll() is None:
            break
        assert b"in use" in log.read_bytes(), log.read_text()
    try:
        # Nothing runs until a client connects; the first one starts
        # twistd on the socket, and waits in its queue meanwhile.
        assert b"Execing" not in log.read_bytes()
        payload = os.urandom(50_000)
        await append_and_follow(Front(port), "activated.log", payload)
        assert (tmp_path / "root" / "activated.log").read_bytes() == payload
        text = log.read_text()
        assert f"Execing {command[0]}" in text
        assert re.search(rf"Site starting on {port}\b", text), text
        # systemd-socket-activate became twistd; SIGTERM stops it cleanly.
        # twistd ends by the signal once shut down, which systemd counts as
        # a clean stop.
        stop_process(process)
        assert process.returncode == -signal.SIGTERM, log.read_text()
        assert "Server Shut Down." in log.read_text()
    finally:
        stop_process(process)


# -- JSON log lines ---------------------------------------------------------------


async def test_json_log_lines_through_twistds_logger_option(tmp_path):
    server = Twistd.start(
        tmp_path / "root", twistd_options=("--logger=httpfstream.logs.json_observer",)
    )

    def sessions() -> list[dict]:
        events = [json.loads(line) for line in server.log]
        return [e for e in events if e["log_namespace"] == "httpfstream.session"]

    try:
        a = await ws(server.ws_url("json.log", ack=1), "APPEND")
        a.sendMessage(b"12345", isBinary=True)
        await a.until_ack(5)
        follower = await open_follower(server, "json.log", "ws")
        streamed = await open_follower(server, "json.log", "http")
        await follower.until_bytes(5)
        await streamed.until_bytes(5)
        assert await close(a) == 1000
        assert (await follower.ended()).clean and (await streamed.ended()).clean
        assert (await get(server.url("json.log"), method="POST", data=b"678"))[0] == 200
        assert (await get(server.url("json.log")))[2] == b"12345678"
        # The server writes its session lines as sessions end; another
        # process gives no event to wait on, so watch its output.
        poll_until(lambda: len(sessions()) == 5, timeout=10)
    finally:
        server.stop()
    # Every line it wrote, start-up and access log included, is one JSON
    # object.
    for line in server.log:
        assert isinstance(json.loads(line), dict), line
    ended = {
        (e["kind"], e["name"], e["offset"], e["nbytes"], e["outcome"])
        for e in sessions()
    }
    assert ended == {
        ("append", "json.log", 0, 5, "1000"),
        ("follow-ws", "json.log", 0, 5, "1000"),
        ("follow-http", "json.log", 0, 5, "1000"),
        ("post", "json.log", 5, 3, "200"),
        ("snapshot", "json.log", 0, 8, "200"),
    }
    # And each still reads as the text line twistd would otherwise write.
    append = next(e for e in sessions() if e["kind"] == "append")
    text = append["log_format"].format(**append)
    assert re.fullmatch(
        r"append .+ on json\.log from 0: 5 bytes in [0-9]+\.[0-9]{3}s, ended 1000",
        text,
    ), text


# -- the wheel and the Dockerfile -------------------------------------------------


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, **kwargs
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result


@pytest.mark.slow
def test_the_wheel_builds_and_installs_with_pip_alone(tmp_path):
    """
    pip builds the wheel from the files a clone has and installs it into a
    new virtualenv, where twistd finds the plugin and the viewer's files.
    No network: the build uses the setuptools installed here (the test
    extra), and the new virtualenv sees the test virtualenv's packages as
    its dependencies (a .pth file), so pip finds them installed.  CI's
    .ci/wheel does the same from the package index.
    """
    files = run("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=REPO)
    source = tmp_path / "clone"
    for name in filter(None, files.stdout.split("\0")):
        if (REPO / name).is_file():  # not one deleted in the work tree
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    python = BIN / "python"
    dist = tmp_path / "dist"
    offline = ("--no-index", "--disable-pip-version-check")
    run(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        *offline, "-w", dist, source)  # fmt: skip
    (wheel,) = dist.glob("httpfstream-*-py3-none-any.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    assets = {
        f"httpfstream/web/assets/{p.name}" for p in (REPO / "httpfstream/web/assets").iterdir()
    }
    assert assets and assets <= inside
    assert {"twisted/plugins/httpfstream_plugin.py", "httpfstream/py.typed"} <= inside
    assert not any("dropin.cache" in n or n.startswith("tests/") for n in inside)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    fresh = venv / "bin" / "python"
    site = run(fresh, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    ours = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    Path(site.stdout.strip(), "dependencies.pth").write_text(ours.stdout)
    run(fresh, "-m", "pip", "install", *offline, wheel)
    # Away from the source tree, so that only the installed copy is seen.
    away = tmp_path / "elsewhere"
    away.mkdir()
    twistd = "import sys; from twisted.scripts.twistd import run; sys.exit(run())"
    listed = run(fresh, "-c", twistd, "--help", cwd=away).stdout
    assert re.search(r"^\s*httpfstream\s", listed, re.MULTILINE), listed
    assert "--max-message-size" in run(fresh, "-c", twistd, "httpfstream", "--help",
                                       cwd=away).stdout  # fmt: skip
    check = run(
        fresh,
        "-c",
        "import httpfstream; from importlib import resources;"
        " from httpfstream.web import viewer;"
        " print(httpfstream.__file__);"
        " print(sorted(p.name for p in"
        " resources.files('httpfstream.web').joinpath('assets').iterdir()));"
        " assert b'<script' in viewer.resource_page(('x.log',), None).body",
        cwd=away,
    ).stdout.splitlines()
    assert check[0].startswith(site.stdout.strip()), check
    assert check[1] == repr(sorted(Path(a).name for a in assets)), check
    assert "usage" in run(venv / "bin" / "httpfstream-follow", "--help").stdout.lower()


DOCKERFILE = REPO / "Dockerfile"


def test_the_dockerfile_as_documented(twistd):
    """
    No Docker daemon here to build it: check what it says, and run its
    health check against a real server.
    """
    text = shown_in_readme(DOCKERFILE, "dockerfile")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == [
        "python:3.11-slim",
        "python:3.11-slim",
    ]
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user not in ("root", "0") and "useradd" in text and user in text
    assert "VOLUME /data" in lines and "EXPOSE 8080" in lines
    (cmd,) = re.findall(r"^CMD (.*)$", text, re.MULTILINE)
    assert json.loads(cmd) == [
        "twistd", "-n", "--pidfile=", "httpfstream", "--root", "/data",
        "--port", "tcp:8080",
    ]  # fmt: skip
    # The install steps of README "Installing from a wheel" (and .ci/wheel).
    cache = "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
    for shown in (text, README, (REPO / ".ci" / "wheel").read_text()):
        assert f'python -c "{cache}"' in shown
    assert "python -m pip wheel --no-cache-dir --no-deps -w /dist ." in text
    assert "python -m pip install --no-cache-dir /dist/*.whl" in text
    (health,) = re.findall(r"^HEALTHCHECK .*? CMD (.*)$", text, re.MULTILINE)
    probe = json.loads(health)
    assert probe[:2] == ["python", "-c"] and probe[2].count("8080") == 1
    healthy = subprocess.run(
        [sys.executable, "-c", probe[2].replace("8080", str(twistd.port))],
        capture_output=True,
        timeout=30,
    )
    assert healthy.returncode == 0, healthy.stderr
    down = subprocess.run(
        [sys.executable, "-c", probe[2].replace("8080", str(free_port()))],
        capture_output=True,
        timeout=30,
    )
    assert down.returncode != 0
