"""
``httpfstream-follow --lines``, ``--timestamps`` and ``--grep``
(PROTOCOL.md sections 13 and 14) as a user runs them: subprocesses against
a real ``twistd``, behind a `Forwarder` that cuts connections mid-line
for ``--retry``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from support.processes import (
    APPEND,
    FOLLOW,
    Twistd,
    poll_until,
    run,
    start_append,
    type_line,
)
from support.proxies import Stage
from twisted.internet.defer import Deferred

from httpfstream.cli import EXIT_INCOMPLETE, EXIT_NO_MATCH, EXIT_PAST_END, EXIT_USAGE

LOG = b"".join(b"line %d\n" % i for i in range(1, 31))  # thirty lines
STAMP = rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "



@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    made = Stage(tmp_path / "root")
    yield made
    pytest_twisted.blockon(Deferred.fromCoroutine(made.close()))


def appended(twistd: Twistd, name: str, data: bytes) -> str:
    url = twistd.url(name)
    assert run(APPEND, url, stdin=data).returncode == 0
    return url


def stamped(out: bytes) -> list[bytes]:
    """The lines of ``out``, each checked to start with one stamp, without it."""
    lines = []
    for line in out.splitlines(keepends=True):
        match = re.match(STAMP, line)
        assert match, line
        assert not re.search(STAMP, line[match.end() :]), f"stamped twice: {line!r}"
        lines.append(line[match.end() :])
    return lines


# -- --lines -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        ("3", b"line 28\nline 29\nline 30\n"),
        ("-3", b"line 28\nline 29\nline 30\n"),
        ("+28", b"line 28\nline 29\nline 30\n"),
        ("+0", LOG),
        ("0", b""),
        ("100", LOG),
    ],
)
def test_lines_as_tail_counts_them(twistd: Twistd, given: str, printed: bytes):
    url = appended(twistd, f"tail{given}.log", LOG)
    result = run(FOLLOW, "--lines", given, url)
    assert (result.returncode, result.stdout) == (0, printed), result.stderr


def test_lines_past_the_end_exits_9_saying_so(twistd: Twistd):
    url = appended(twistd, "past.log", LOG)
    result = run(FOLLOW, "--lines", "+32", url)
    assert result.returncode == EXIT_PAST_END
    assert result.stderr.startswith(
        b"httpfstream-follow: --lines is past the end (416)"
    )
    assert b"30 lines" in result.stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--timestamps", "--offset", "5"],
            b"--timestamps does not combine with --offset",
        ),
        (["--lines", "3", "--offset", "5"], b"not allowed with argument"),
        (["--lines", "three"], b"not a number of lines"),
        (["--regex"], b"--regex shapes a search: give --grep TEXT too"),
        (["--max", "3"], b"--max shapes a search"),
        (["--grep", "x", "--offset", "5"], b"--grep does not combine with --offset"),
        (["--grep", "x", "--timestamps"], b"--grep does not combine with --timestamps"),
        (["--grep", ""], b"an empty TEXT"),
        (["--grep", "x", "--max", "0"], b"must be at least 1"),
    ],
)
def test_what_does_not_combine_is_a_usage_error(argv: list[str], said: bytes):
    # Said before any connection (nothing listens there).
    result = run(FOLLOW, *argv, "http://127.0.0.1:9/never.log")
    assert result.returncode == EXIT_USAGE
    assert said in result.stderr, result.stderr
    assert result.stdout == b""


# -- --timestamps ----------------------------------------------------------------


def test_timestamps_stamp_each_line(twistd: Twistd):
    url = appended(twistd, "stamped.log", LOG)
    result = run(FOLLOW, "--timestamps", "--lines", "2", url)
    assert result.returncode == 0, result.stderr
    assert stamped(result.stdout) == [b"line 29\n", b"line 30\n"]
    whole = run(FOLLOW, "--timestamps", url)
    assert stamped(whole.stdout) == LOG.splitlines(keepends=True)


# -- --retry, cut mid-line -------------------------------------------------------


async def _cut_mid_line(stage: Stage, name: str, *options: str) -> bytes:
    """
    A ``--retry`` follower through the forwarder, cut while the last line
    it got is half there; the line is finished and another appended while
    it is away.  Its output, once it exited 0.
    """
    await stage.start()
    appender = await stage.appender(stage.direct_url(name))
    appender.write(LOG + b"line 31 is cut ")
    follower = stage.run(FOLLOW, "--retry", *options, stage.url(name))
    await follower.until(lambda: follower.stdout.endswith(b"line 31 is cut "))
    stage.forwarder.target = None  # refused until it is all there
    stage.forwarder.cut()
    appender.write(b"here\nline 32\n")
    appender.close_stdin()
    assert await appender.exit_status() == 0
    stage.connect()
    assert await follower.exit_status() == 0, bytes(follower.stderr)
    assert stage.file(name) == LOG + b"line 31 is cut here\nline 32\n"
    return bytes(follower.stdout)


async def test_retry_after_lines_resumes_at_the_byte(stage: Stage):
    """--lines decides the start only: a cut follow goes on at its byte."""
    out = await _cut_mid_line(stage, "bytes.log", "--lines", "2")
    assert out == b"line 30\nline 31 is cut here\nline 32\n"


async def test_retry_with_timestamps_prints_each_line_once_stamped_once(stage: Stage):
    """
    Stamped lines resume at the line they were in (``offset`` does not
    combine with ``timestamps=1``): the cut line's stamp and first part are
    not printed again.
    """
    out = await _cut_mid_line(stage, "stamps.log", "--timestamps", "--lines", "2")
    assert stamped(out) == [b"line 30\n", b"line 31 is cut here\n", b"line 32\n"]


# -- --grep --------------------------------------------------------------------

BUILD = b"compiling a\nerror: a.c:1: no such file\ncompiling b\nError: b.c:7\ndone\n"


def test_grep_prints_matching_lines_numbered(twistd: Twistd):
    url = appended(twistd, "build.log", BUILD)
    result = run(FOLLOW, "--grep", "error", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"2:error: a.c:1: no such file\n4:Error: b.c:7\n"
    case = run(FOLLOW, "--grep", "Error", "--case", url)
    assert case.stdout == b"4:Error: b.c:7\n"
    regex = run(FOLLOW, "--grep", r"^compiling \w$", "--regex", url)
    assert regex.stdout == b"1:compiling a\n3:compiling b\n"
    first = run(FOLLOW, "--grep", "compiling", "--max", "1", url)
    assert (first.returncode, first.stdout) == (0, b"1:compiling a\n")


def test_grep_from_lines(twistd: Twistd):
    url = appended(twistd, "tail-grep.log", BUILD)
    last = run(FOLLOW, "--grep", "compiling", "--lines", "3", url)
    assert (last.returncode, last.stdout) == (0, b"3:compiling b\n")
    start = run(FOLLOW, "--grep", "error", "--lines", "+3", url)
    assert (start.returncode, start.stdout) == (0, b"4:Error: b.c:7\n")
    past = run(FOLLOW, "--grep", "error", "--lines", "+9", url)
    assert past.returncode == EXIT_PAST_END
    assert past.stderr.startswith(b"httpfstream-follow: --lines is past the end (416)")


def test_grep_without_a_match_exits_10(twistd: Twistd):
    url = appended(twistd, "quiet.log", BUILD)
    result = run(FOLLOW, "--grep", "panic", url)
    assert (result.returncode, result.stdout, result.stderr) == (
        EXIT_NO_MATCH,
        b"",
        b"",
    )


def test_grep_of_an_incomplete_resource_exits_6(twistd: Twistd):
    """Not every line there is to search: 6 (as a follow), matches or not."""
    url = twistd.url("lost.log")
    appender = start_append(url)
    type_line(appender, b"error: before the crash\n")
    written = twistd.root / "lost.log"
    poll_until(lambda: written.read_bytes() == b"error: before the crash\n", 15)
    appender.kill()
    appender.wait(10)
    result = run(FOLLOW, "--grep", "error", url)
    assert result.returncode == EXIT_INCOMPLETE
    assert result.stdout == b"1:error: before the crash\n"
    assert b"incomplete" in result.stderr and b"1 matched" in result.stderr


def test_an_invalid_regex_is_a_usage_error_with_the_servers_reason(twistd: Twistd):
    url = appended(twistd, "regex.log", BUILD)
    result = run(FOLLOW, "--grep", "(", "--regex", url)
    assert result.returncode == EXIT_USAGE
    assert result.stderr.startswith(
        b"httpfstream-follow: the server refused the search (400): "
    )
    assert len(result.stderr.splitlines()) == 1


async def test_a_cut_grep_with_retry_resumes_after_its_last_match(stage: Stage):
    await stage.start()
    name = "live.log"
    appender = await stage.appender(stage.direct_url(name))
    appender.write(b"error 1\nfine\nerror 3\n")
    follower = stage.run(FOLLOW, "--retry", "--grep", "error", stage.url(name))
    await follower.until(lambda: b"3:error 3\n" in follower.stdout)
    stage.forwarder.target = None
    stage.forwarder.cut()
    appender.write(b"fine\nerror 5\n")
    stage.connect()
    await follower.until(lambda: b"5:error 5\n" in follower.stdout)
    appender.write(b"error 6\n")
    appender.close_stdin()
    assert await appender.exit_status() == 0
    assert await follower.exit_status() == 0, bytes(follower.stderr)
    assert bytes(follower.stdout) == b"1:error 1\n3:error 3\n5:error 5\n6:error 6\n"
