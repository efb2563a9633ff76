"""
The README's examples, run as printed (issue 10, section 3).

Every fenced ```sh, ```console and ```python block of README.md is run, in
the README's order, in a temporary copy of the clone (its files, with
``.venv`` linked to this one), against a server started as ``make run``
starts it there: ``.venv/bin/twistd --nodaemon --pidfile= httpfstream
--root=<the copy>/data --port=tcp:PORT:interface=127.0.0.1``.

- ```sh blocks run with ``bash -e -o pipefail``; ```console blocks run
  each ``$ `` command with the lines after it as standard input (what the
  user types; an end of input is Ctrl-D), and whatever it prints must be
  those lines (what the user sees); ```python blocks run with the venv's
  python; the embedding example, which the README runs with
  ``.venv/bin/twistd -n --pidfile= -y app.tac``, is run so (`TAC_COMMAND`),
  and answers a POST and a GET.
- Each block has `BLOCK_TIMEOUT` seconds.
- The port: the examples name ``localhost:8080``, the port ``make run``
  takes.  The test does not take 8080 itself: a developer's own ``make
  run``, which the README tells them to keep running, holds it, and so may
  a test suite running beside this one.  So ``localhost:8080`` and
  ``tcp:8080`` become the test server's free port, and the embedding
  example's ``tcp:8081`` / ``localhost:8081`` another free port: that one
  substitution is the only change made to what is printed.

Every twistd the README starts outside Docker is the venv's (or the
install in /opt), with ``-n --pidfile=``, so two run from one folder: the
README's two servers on ``./data`` are started side by side to show it.

Skipped, each with its reason in `SKIPPED` (matched by the block's first
line; a `SKIPPED` entry that matches no block fails the test, so the list
stays true): blocks that start a long-running server of their own or need
one started with other options (``make run`` itself, ``twistd`` command
lines, ``--admin``, ``--auth``, TLS certificates, ``--max-age``), blocks
that run ``make`` (whose first target is ``make run``), and blocks that
need root, Docker, nginx or systemd.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.processes import BIN, Twistd, read_line, stop_process

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
#: Seconds each block may take.
BLOCK_TIMEOUT = 60

#: How the README starts twistd (in the foreground, with no twistd.pid).
VENV_TWISTD = ".venv/bin/twistd -n --pidfile="
#: First line of a block not run -> why.
SKIPPED = {
    "make run     #": "make run is the long-running server of its own (and"
    " make test is this suite)",
    "make 2>&1 | .venv/bin/httpfstream-append": "runs make, whose first target"
    " is make run: a long-running server of its own",
    # (the nginx line first: the next one is a prefix of it)
    f"{VENV_TWISTD} httpfstream --root /var/lib/httpfstream --port tcp:8080:inter": "a"
    " server for nginx in front, as root",
    f"{VENV_TWISTD} httpfstream --root /var/lib/httpfstream --port tcp:8080": "a"
    " long-running server of its own, with a root only root may write",
    "curl http://127.0.0.1:9100/metrics": "needs a server started with --admin",
    f"{VENV_TWISTD} httpfstream --root data --fin-ends-appender": "a long-running"
    " server of its own",
    'curl -H "Authorization: Bearer $TOKEN"': "needs a server started with"
    " --auth and a token",
    f"{VENV_TWISTD} httpfstream --root data \\": "a long-running TLS server of"
    " its own, with certificates to make",
    f"{VENV_TWISTD} httpfstream --root /var/lib/httpfstream \\": "a long-running"
    " server of its own, as root",
    "python3 -m venv /opt/httpfstream": "installs into /opt: root",
    "sudo cp docs/systemd": "systemd set-up, as root",
    "systemd-socket-activate": "systemd, and a long-running server of its own",
    "docker build": "Docker",
    f"{VENV_TWISTD} --logger=httpfstream.logs.json_observer": "a long-running"
    " server of its own, as root (/var/lib/httpfstream)",
    "curl -X DELETE": "its second line starts a long-running server of its own"
    " (--max-age)",
    "export AWS_ENDPOINT_URL_S3=": "needs an S3 bucket, and starts a"
    " long-running server of its own (tests/test_archive.py runs --archive"
    " against moto_server)",
    f"{VENV_TWISTD} httpfstream --root cache --port tcp:8080 \\": "needs Redis"
    " and an S3 bucket, and starts a long-running server of its own"
    " (tests/test_stateless.py runs the mode against redis-server and"
    " moto_server)",
}
#: The embedding example, run with the command the README gives for it.
TAC_FIRST_LINE = "from twisted.application import service, strports"
(TAC_COMMAND,) = re.findall(r"run it with `([^`]*twistd[^`]*app\.tac)`", README)


@dataclass
class Block:
    kind: str
    text: str
    line: int

    @property
    def first(self) -> str:
        return self.text.split("\n", 1)[0]

    def skipped(self) -> str | None:
        for start, why in SKIPPED.items():
            if self.first.startswith(start):
                return why
        return None


def blocks() -> list[Block]:
    found = []
    for match in re.finditer(
        r"^```(sh|console|python)\n(.*?)^```$", README, re.M | re.S
    ):
        line = README.count("\n", 0, match.start()) + 1
        found.append(Block(match.group(1), match.group(2), line))
    return found


BLOCKS = blocks()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Clone:
    """The temporary copy the blocks run in, and its server."""

    path: Path
    server: Twistd
    app_port: int

    def rewrite(self, text: str) -> str:
        port, app = str(self.server.port), str(self.app_port)
        for before, after in (
            ("localhost:8080", f"localhost:{port}"),
            ("tcp:8080", f"tcp:{port}"),
            ("localhost:8081", f"localhost:{app}"),
            ("tcp:8081", f"tcp:{app}:interface=127.0.0.1"),
        ):
            text = text.replace(before, after)
        return text


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clone]:
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("the README's examples need curl")
        pytest.skip("the README's examples need curl")
    path = tmp_path_factory.mktemp("clone") / "httpfstream"
    shutil.copytree(
        REPO,
        path,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "data", "__pycache__", "*.egg-info", ".*_cache"
        ),
    )
    (path / ".venv").symlink_to(BIN.parent)
    (path / "data").mkdir()  # as make run does
    # As make run starts it, from the clone: twistd's own relative root.
    server = Twistd.start(path / "data", port="tcp:0")
    try:
        yield Clone(path, server, _free_port())
    finally:
        server.stop()


def _env(clone: Clone) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HTTPFSTREAM_TOKEN", None)
    return env


def _run_sh(clone: Clone, text: str) -> None:
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", clone.rewrite(text)],
        cwd=clone.path,
        capture_output=True,
        timeout=BLOCK_TIMEOUT,
        env=_env(clone),
    )
    assert result.returncode == 0, result.stderr.decode()


def _run_console(clone: Clone, text: str) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            assert commands, f"a console block that does not start with $: {line!r}"
            commands[-1][1].append(line)
    for command, lines in commands:
        typed = "".join(f"{line}\n" for line in lines).encode()
        result = subprocess.run(
            ["bash", "-c", clone.rewrite(command)],
            cwd=clone.path,
            input=typed,
            capture_output=True,
            timeout=BLOCK_TIMEOUT,
            env=_env(clone),
        )
        assert result.returncode == 0, (command, result.stderr.decode())
        # What is shown is what was typed, or what it prints.
        assert result.stdout in (b"", typed), (command, result.stdout)


def _run_python(clone: Clone, text: str) -> None:
    result = subprocess.run(
        [str(BIN / "python"), "-c", clone.rewrite(text)],
        cwd=clone.path,
        capture_output=True,
        timeout=BLOCK_TIMEOUT,
        env=_env(clone),
    )
    assert result.returncode == 0, result.stderr.decode()


def _run_tac(clone: Clone, text: str) -> None:
    """`TAC_COMMAND` as the README says; a POST and a GET through it."""
    (clone.path / "app.tac").write_text(clone.rewrite(text))
    process = subprocess.Popen(
        shlex.split(TAC_COMMAND),
        cwd=clone.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        log = b""
        for line in process.stdout:
            log += line
            if re.search(rb"starting on %d" % clone.app_port, line):
                break
        else:
            raise AssertionError(f"app.tac did not start:\n{log.decode()}")
        url = f"http://localhost:{clone.app_port}/logs/build.log"
        posted = subprocess.run(
            ["curl", "-sf", "--data-binary", "@-", url],
            input=b"embedded\n",
            capture_output=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert posted.returncode == 0, posted.stderr
        got = subprocess.run(
            ["curl", "-sf", url], capture_output=True, timeout=BLOCK_TIMEOUT
        )
        assert got.stdout == b"embedded\n"
        assert (clone.path / "app-data" / "build.log").read_bytes() == b"embedded\n"
    finally:
        try:
            stop_process(process)
        finally:
            process.stdout.close()


def _twistd_commands() -> list[list[str]]:
    """
    Every command of the README's shell blocks and inline code that runs
    twistd on this machine (not in a container), as its words.
    """
    texts = [b.text for b in BLOCKS if b.kind == "sh"]
    texts += re.findall(r"`([^`\n]*twistd -[^`\n]*)`", README)
    commands = []
    for text in texts:
        for line in text.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if (
                words
                and words[0] != "docker"
                and any(w.endswith("twistd") for w in words)
            ):
                commands.append(words)
    return commands


def test_every_twistd_the_readme_starts_is_the_venvs_and_writes_no_pidfile():
    # The walkthrough's convention (.venv/bin/, or the install in /opt the
    # systemd unit expects), with -n and --pidfile= so that two servers can
    # run from one folder.
    commands = _twistd_commands()
    assert len(commands) >= 10, commands
    for words in commands:
        (at,) = [i for i, w in enumerate(words) if w.endswith("twistd")]
        assert words[at] in (".venv/bin/twistd", "/opt/httpfstream/bin/twistd"), words
        if "--help" in words:
            continue
        own = words[at + 1 :]
        own = own[: own.index("httpfstream")] if "httpfstream" in own else own
        assert "-n" in own or "--nodaemon" in own, words
        assert "--pidfile=" in own, words


def test_two_servers_start_from_one_folder_as_the_readme_starts_them(clone: Clone):
    # The README's servers on ./data, each on a port of its own (all the
    # test adds), started side by side from the clone.
    commands = [
        words
        for words in _twistd_commands()
        if words[0] == ".venv/bin/twistd"
        and "data" in words
        and not any(w.startswith("--port") for w in words)
    ]
    assert len(commands) == 2, commands
    processes = []
    try:
        for words in commands:
            processes.append(
                subprocess.Popen(
                    [*words, "--port=tcp:0:interface=127.0.0.1"],
                    cwd=clone.path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        for process, words in zip(processes, commands, strict=True):
            assert process.stdout is not None
            log = b""
            while b"Site starting on" not in log:
                line = read_line(process.stdout, timeout=BLOCK_TIMEOUT)
                assert line, f"{words} ended:\n{log.decode()}"
                log += line
        assert [p.poll() for p in processes] == [None, None]
        assert not (clone.path / "twistd.pid").exists()
    finally:
        for process in processes:
            stop_process(process)
            if process.stdout is not None:
                process.stdout.close()


def test_every_skip_names_a_block():
    for start in SKIPPED:
        assert any(b.first.startswith(start) for b in BLOCKS), start


@pytest.mark.parametrize(
    "block", BLOCKS, ids=[f"line{b.line}-{b.kind}" for b in BLOCKS]
)
def test_readme_block(clone: Clone, block: Block):
    why = block.skipped()
    if why is not None:
        pytest.skip(f"README line {block.line}: {why}")
    if block.kind == "sh":
        _run_sh(clone, block.text)
    elif block.kind == "console":
        _run_console(clone, block.text)
    elif block.first == TAC_FIRST_LINE:
        _run_tac(clone, block.text)
    else:
        _run_python(clone, block.text)
