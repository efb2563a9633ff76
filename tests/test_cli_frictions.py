"""
What a new user still trips on with the CLIs (issue 18), each through the
CLIs as subprocesses against a real ``twistd``: the progress line never
mixed with followed or typed text on a terminal (under a pty), appending
to a resource that already holds bytes said on stderr and refused with
``--new``, and the small mismatches: ``--wait`` only in the follower's
``--help``, no factory start/stop lines in ``-v``, a refusal said once.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.processes import (
    APPEND,
    FOLLOW,
    Child,
    Twistd,
    run,
    spawn,
    start_append,
    type_line,
)

from httpfstream import client
from httpfstream.cli import Progress
from httpfstream.cli._exits import explain

# -- small mismatches ------------------------------------------------------------


def test_only_the_followers_help_mentions_wait():
    assert b"--wait" not in run(APPEND, "--help").stdout
    follow = run(FOLLOW, "--help").stdout
    assert b"--wait" in follow
    assert b"how long --retry and --wait keep trying" in b" ".join(follow.split())


async def test_verbose_says_no_factory_starting_or_stopping(
    twistd: Twistd, children: list[Child]
):
    url = twistd.url("verbose.log")
    appender = Child(APPEND, "-v", url)
    follower = Child(FOLLOW, "-v", "--wait", url)
    children += [appender, follower]
    await appender.until_stderr(b"appending to")
    appender.write(b"logged\n")
    await follower.until_stdout(len(b"logged\n"))
    appender.close_stdin()
    assert await appender.exit_status() == 0
    assert await follower.exit_status() == 0
    # And a follower of the finished resource (a GET through the pool).
    late = Child(FOLLOW, "-v", url)
    children.append(late)
    assert await late.exit_status() == 0
    for child in (appender, follower, late):
        assert b"factory" not in child.stderr.lower(), child.stderr.decode()
    assert b"done: " in appender.stderr


async def test_a_conflict_is_said_once(twistd: Twistd, children: list[Child]):
    url = twistd.url("held.log")
    first = Child(APPEND, "-v", url)
    children.append(first)
    await first.until_stderr(b"appending to")
    second = run(APPEND, url, stdin=b"x")
    assert second.returncode == 4
    assert second.stderr == (
        b"httpfstream-append: another appender holds the resource (409)\n"
    )
    first.close_stdin()
    assert await first.exit_status() == 0


def test_not_found_is_said_once(twistd: Twistd):
    result = run(FOLLOW, twistd.url("nothing-here.log"))
    assert result.returncode == 3
    assert result.stderr == b"httpfstream-follow: no such resource (404)\n"


def test_a_reason_that_differs_is_still_given():
    conflict = client.AppenderConflict(
        409, "Conflict", {}, reason="held by the appender on server B"
    )
    assert explain(conflict).message == (
        "another appender holds the resource (409): held by the appender on server B"
    )
    # No reason (a server that sends none): the status alone.
    bare = client.AppenderConflict(409, "Conflict", {})
    assert explain(bare).message == "another appender holds the resource (409)"
    missing = client.NotFound(404, "Not Found", {}, reason="no such folder")
    assert explain(missing).message == "no such resource (404): no such folder"


# -- appending to a resource that already holds bytes -------------------------------


def test_appending_after_bytes_already_there_says_so(twistd: Twistd):
    url = twistd.url("ci/job.log")
    first = run(APPEND, url, stdin=b"run 1\n")
    assert (first.returncode, first.stderr) == (0, b"")
    again = run(APPEND, url, stdin=b"run 2\n")
    assert again.returncode == 0
    assert again.stderr.count(b"\n") == 1
    assert again.stderr.startswith(b"httpfstream-append: ")
    assert b"already holds 6 bytes" in again.stderr
    assert b"--new" in again.stderr
    # Resuming with --offset is meant: nothing said.
    resumed = run(APPEND, "--offset", "12", url, stdin=b"run 2, more\n")
    assert (resumed.returncode, resumed.stderr) == (0, b"")
    assert run(FOLLOW, url).stdout == b"run 1\nrun 2\nrun 2, more\n"


def test_new_refuses_a_resource_that_holds_bytes(twistd: Twistd):
    url = twistd.url("ci/new.log")
    made = run(APPEND, "--new", url, stdin=b"run 1\n")
    assert (made.returncode, made.stderr) == (0, b"")
    refused = run(APPEND, "--new", url, stdin=b"run 2\n")
    assert refused.returncode == 5
    assert refused.stderr == (
        b"httpfstream-append: --new: the resource is not new, it holds 6 bytes"
        b" (412); append to another URL, or leave out --new to append after them\n"
    )
    assert run(FOLLOW, url).stdout == b"run 1\n"
    # An empty resource is new enough.
    empty = twistd.url("ci/empty.log")
    assert run(APPEND, empty).returncode == 0
    assert run(APPEND, "--new", empty, stdin=b"first\n").returncode == 0
    assert run(FOLLOW, empty).stdout == b"first\n"


def test_new_and_offset_together_are_bad_arguments(twistd: Twistd):
    result = run(APPEND, "--new", "--offset", "3", twistd.url("both.log"))
    assert result.returncode == 2
    assert b"not allowed with argument" in result.stderr


def test_help_documents_new():
    text = b" ".join(run(APPEND, "--help").stdout.split())
    assert b"--new" in text
    assert b"refuse unless the resource is empty or absent" in text


async def test_the_api_requires_a_new_resource_with_offset_0(twistd: Twistd):
    """`Client.open_append(url, offset=0)` is the API's ``--new``."""
    from twisted.internet import reactor

    url = twistd.url("api/new.log")
    assert run(APPEND, url, stdin=b"taken\n").returncode == 0
    api = client.Client(reactor)
    try:
        with pytest.raises(client.OffsetMismatch) as refused:
            await api.open_append(url, offset=0)
        assert refused.value.size == 6
    finally:
        await api.close()


# -- the progress line, never mixed with the data on a terminal ---------------------


def render(seen: bytes) -> list[str]:
    """
    The lines a terminal shows for ``seen``: ``\\r`` returns to the start of
    the line, later characters overwrite earlier ones.
    """
    lines: list[list[str]] = [[]]
    column = 0
    for char in seen.decode("utf-8", "replace"):
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append([])
            column = 0
        elif char.isprintable():
            line = lines[-1]
            line[column : column + 1] = [char]
            column += 1
    shown = ["".join(line).rstrip() for line in lines]
    while shown and not shown[-1]:
        shown.pop()
    return shown


class Terminal:
    """
    A pseudo-terminal, and what was written to it: `screen` is its lines as
    a terminal shows them (``\r`` returns to the start of the line, later
    characters overwrite earlier ones).
    """

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.seen = b""
        self.closed = False

    def started(self) -> None:
        """The child has its end: close ours, so its exit ends the output."""
        os.close(self.slave)

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def until(self, predicate: Callable[[bytes], bool], timeout: float = 30) -> None:
        """Read until ``predicate(seen)`` holds (or the other side closes)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            assert not self.closed, f"the terminal closed first: {self.seen!r}"
            left = deadline - time.monotonic()
            assert left > 0, f"not within {timeout}s: {self.seen!r}"
            if not select.select([self.master], [], [], left)[0]:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the other side is closed
                chunk = b""
            if not chunk:
                self.closed = True
            self.seen += chunk

    def until_closed(self) -> None:
        self.until(lambda _: self.closed)

    def screen(self) -> list[str]:
        return render(self.seen)

    def close(self) -> None:
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    made = Terminal()
    yield made
    made.close()


def follow_on(terminal: Terminal, *argv: str) -> subprocess.Popen[bytes]:
    """A follower whose standard output and error are both ``terminal``."""
    process = spawn(
        FOLLOW,
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=terminal.slave,
        stderr=terminal.slave,
    )
    terminal.started()
    return process


def test_a_follower_on_a_terminal_shows_only_the_text(
    twistd: Twistd, terminal: Terminal
):
    url = twistd.url("walk/plain.log")
    appender = start_append(url)
    type_line(appender, b"compiling...\n")
    follower = follow_on(terminal, url)
    terminal.until(lambda seen: b"compiling...\r\n" in seen)
    type_line(appender, b"linking...\n")
    terminal.until(lambda seen: b"linking...\r\n" in seen)
    assert appender.stdin is not None
    appender.stdin.close()
    assert appender.wait(30) == 0
    assert follower.wait(30) == 0
    terminal.until_closed()
    assert terminal.seen == b"compiling...\r\nlinking...\r\n"


def test_a_forced_progress_line_is_cleared_before_each_write(
    twistd: Twistd, terminal: Terminal
):
    url = twistd.url("walk/forced.log")
    appender = start_append(url)
    type_line(appender, b"compiling...\n")
    follower = follow_on(terminal, "--progress", url)
    terminal.until(lambda seen: b"compiling..." in seen)
    # The line is drawn again below the text, and cleared for the next.
    terminal.until(lambda seen: b"received 13 B, " in seen)
    type_line(appender, b"linking...\n")
    terminal.until(lambda seen: b"linking..." in seen)
    terminal.until(lambda seen: b"received 24 B, " in seen)
    assert appender.stdin is not None
    appender.stdin.close()
    assert appender.wait(30) == 0
    assert follower.wait(30) == 0
    terminal.until_closed()
    screen = terminal.screen()
    assert screen[:2] == ["compiling...", "linking..."], terminal.seen
    assert len(screen) == 3 and screen[2].startswith("received 24 B, "), screen
    assert screen[2].endswith("/s")


def test_an_appender_typed_into_shows_no_progress_line(
    twistd: Twistd, terminal: Terminal
):
    url = twistd.url("walk/typed.log")
    appender = spawn(
        APPEND,
        url,
        stdin=terminal.slave,
        stdout=subprocess.DEVNULL,
        stderr=terminal.slave,
    )
    terminal.started()
    terminal.type(b"step 1 ok\n")
    terminal.until(lambda seen: b"step 1 ok\r\n" in seen)  # the echo
    terminal.type(b"\x04")  # Ctrl-D
    assert appender.wait(30) == 0
    terminal.until_closed()
    assert terminal.screen() == ["step 1 ok"], terminal.seen
    assert run(FOLLOW, url).stdout == b"step 1 ok\n"


def test_progress_still_shows_when_the_data_is_not_on_the_terminal(
    twistd: Twistd, tmp_path: Path
):
    url = twistd.url("walk/redirected.log")
    data = tmp_path / "in.txt"
    data.write_bytes(b"x" * 5000)
    # The appender reads a file; its stderr is a terminal.
    shown = Terminal()
    try:
        with data.open("rb") as given:
            appender = spawn(
                APPEND, url, stdin=given, stdout=subprocess.DEVNULL, stderr=shown.slave
            )
        shown.started()
        assert appender.wait(30) == 0
        shown.until_closed()
        assert shown.screen()[-1].startswith("sent 4.9 KiB, acknowledged 4.9 KiB, ")
    finally:
        shown.close()
    # The follower writes to a file; its stderr is a terminal.
    shown = Terminal()
    out = tmp_path / "out.txt"
    try:
        with out.open("wb") as written:
            follower = spawn(
                FOLLOW,
                url,
                stdin=subprocess.DEVNULL,
                stdout=written,
                stderr=shown.slave,
            )
        shown.started()
        assert follower.wait(30) == 0
        shown.until_closed()
        assert shown.screen()[-1].startswith("received 4.9 KiB, ")
    finally:
        shown.close()
    assert out.read_bytes() == b"x" * 5000


def test_help_says_where_the_line_shows_by_default():
    for tool, data in ((APPEND, b"stdin"), (FOLLOW, b"stdout")):
        text = b" ".join(run(tool, "--help").stdout.split())
        assert b"shown by default when stderr is a terminal and %s is not" % data in (
            text
        )


def test_the_line_waits_for_the_end_of_a_line_of_output():
    """
    Sharing the terminal, the line is not drawn over output that ended
    mid-line (a ``50%`` with no newline yet), and at the end it goes below.
    """
    terminal = io.StringIO()
    progress = Progress(terminal, lambda: "received 3 B", lambda: 3, shares=True)
    progress.start()
    for data in (b"50%", b" done"):
        progress.before_output()
        terminal.write(data.decode())
        progress.after_output(data)
        progress.show()
    progress.stop()
    assert render(terminal.getvalue().encode()) == [
        "50% done",
        "received 3 B, 0 B/s",
    ]
