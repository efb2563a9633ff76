"""
What a new user still trips on with the CLIs (issue 18), each through the
CLIs as subprocesses against a real ``twistd``: the progress line never
mixed with followed or typed text on a terminal (under a pty), appending
to a resource that already holds bytes said on stderr and refused with
``--new``, and the small mismatches: ``--wait`` only in the follower's
``--help``, no factory start/stop lines in ``-v``, a refusal said once.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from support.processes import APPEND, FOLLOW, Child, Twistd

from httpfstream import client
from httpfstream.cli._exits import explain


def run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        child.reap()


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
