"""
Truthful endings (issue 9), through real processes: a ``twistd`` killed or
restarted on the same root, the CLIs as subprocesses, and a `Forwarder`
with a port of its own in front, so the CLIs keep one URL across restarts.

"Done" means every byte is there: a follower exits 0 only after its
appender's clean close, and 6 ("incomplete") when the appender was lost or
interrupted and no new one finished the resource.  An appender never loses
input: its exit status is 0 only when every byte read was acknowledged.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
import treq
from support.processes import APPEND, FOLLOW
from support.proxies import TO_CLIENT, TO_SERVER, Stage
from twisted.internet import threads
from twisted.internet.defer import Deferred


def lines(start: int, count: int) -> bytes:
    """Numbered lines, so a misplaced byte shows where."""
    return b"".join(b"line %06d of the log\n" % i for i in range(start, start + count))


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    made = Stage(tmp_path / "root")
    yield made
    pytest_twisted.blockon(Deferred.fromCoroutine(made.close()))


@pytest.fixture
def watching_stage(tmp_path: Path) -> Iterator[Stage]:
    """A `Stage` whose forwarder reads the WebSocket frames passing."""
    made = Stage(tmp_path / "root", frames=True)
    yield made
    pytest_twisted.blockon(Deferred.fromCoroutine(made.close()))


async def test_sigkill_restart_a_retry_follower_waits_for_the_new_appender(stage):
    """
    SIGKILL during an append, restart on the same root; a ``--retry``
    follower started before the ``--retry`` appender is back sees every
    byte, and exits 0 only after the appender's clean close.
    """
    await stage.start()
    name = "killed.log"
    appender = await stage.appender("--retry", "--retry-for", "60", stage.url(name))
    first, second, third = lines(0, 2000), lines(2000, 2000), lines(4000, 500)
    appender.write(first)
    follower = stage.run(FOLLOW, stage.url(name))
    await follower.until_stdout(len(first))
    appender.write(second)  # killed mid-append: part of it may not be persisted
    await stage.kill()
    assert await follower.exit_status() == 6  # no --retry: the connection was lost
    # A new server on the same root: the resource is there, not complete.
    await stage.start(connect=False)
    assert await stage.complete(name) == "0"
    waiting = stage.run(
        FOLLOW, "-v", "--retry", "--retry-for", "60", stage.direct_url(name)
    )
    await waiting.until_stderr(b"waiting for a new appender")
    so_far = stage.file(name)
    await waiting.until_stdout(len(so_far))
    assert bytes(waiting.stdout) == so_far  # all there is, so far
    # Now the appender gets through: it resumes where the file ends.
    stage.connect()
    await appender.until_stderr(b"resumed appending")
    appender.write(third)
    await waiting.until_stdout(len(first + second + third))
    assert not waiting.ended.called  # more may come: not done yet
    appender.close_stdin()
    assert await appender.exit_status() == 0
    assert await waiting.exit_status() == 0
    assert stage.file(name) == first + second + third
    assert bytes(waiting.stdout) == first + second + third
    assert await stage.complete(name) == "1"


async def test_sigkill_restart_and_no_new_appender_exits_6(stage):
    """The same without a new appender: 6, after ``--retry-for``, never 0."""
    await stage.start()
    name = "abandoned.log"
    appender = await stage.appender(stage.url(name))  # no --retry
    appender.write(lines(0, 1000))
    follower = stage.run(FOLLOW, stage.url(name))
    await follower.until_stdout(len(lines(0, 1000)))
    await stage.kill()
    # The appender's server went away: 6, with the reason, not FirstError.
    assert await appender.exit_status() == 6
    assert b"connection lost" in appender.stderr
    assert b"FirstError" not in appender.stderr
    await stage.start()
    started = time.monotonic()
    waiting = stage.run(FOLLOW, "--retry", "--retry-for", "2", stage.url(name))
    plain = stage.run(FOLLOW, stage.url(name))
    # A plain follower of a finished but incomplete resource: 6 at once.
    assert await plain.exit_status() == 6
    assert b"incomplete" in plain.stderr
    assert bytes(plain.stdout) == stage.file(name)
    assert await waiting.exit_status() == 6
    assert time.monotonic() - started >= 2
    assert b"incomplete" in waiting.stderr and b"--retry-for 2s" in waiting.stderr
    assert bytes(waiting.stdout) == stage.file(name) == lines(0, 1000)


async def test_a_retry_follower_resumes_after_4000_when_a_new_appender_comes(stage):
    await stage.start()
    name = "handover.log"
    first, second = lines(0, 300), lines(300, 300)
    lost = await stage.appender(stage.url(name))
    lost.write(first)
    follower = stage.run(FOLLOW, "-v", "--retry", "--retry-for", "60", stage.url(name))
    await follower.until_stdout(len(first))
    lost.process.kill()  # no Close: the server gives the follower 4000
    await follower.until_stderr(b"waiting for a new appender")
    assert not follower.ended.called
    new = await stage.appender("--offset", str(len(first)), stage.url(name))
    new.write(second)
    await follower.until_stdout(len(first + second))
    assert not follower.ended.called
    new.close_stdin()
    assert await new.exit_status() == 0
    assert await follower.exit_status() == 0
    assert bytes(follower.stdout) == stage.file(name) == first + second


async def test_ctrl_c_leaves_the_resource_incomplete(stage):
    """
    Ctrl-C: the appender's bytes persist, its session ends interrupted;
    a plain follower exits 6, a ``--retry`` one waits and exits 6 after
    ``--retry-for``.
    """
    await stage.start()
    name = "ctrl-c.log"
    appender = await stage.appender(stage.url(name))
    appender.write(lines(0, 100))
    plain = stage.run(FOLLOW, stage.url(name))
    waiting = stage.run(FOLLOW, "-v", "--retry", "--retry-for", "2", stage.url(name))
    await plain.until_stdout(len(lines(0, 100)))
    await waiting.until_stdout(len(lines(0, 100)))
    appender.signal(signal.SIGINT)
    assert await appender.exit_status() == 130
    assert await stage.complete(name) == "0"
    assert stage.file(name) == lines(0, 100)
    assert await plain.exit_status() == 6
    assert await waiting.exit_status() == 6
    assert b"waiting for a new appender" in waiting.stderr
    for follower in (plain, waiting):
        assert bytes(follower.stdout) == lines(0, 100)
    # Its last session did not end well, whoever asks later.
    later = stage.run(FOLLOW, stage.url(name))
    assert await later.exit_status() == 6
    assert bytes(later.stdout) == lines(0, 100)


async def test_sigterm_of_the_client_is_an_interruption_too(stage):
    await stage.start()
    appender = await stage.appender(stage.url("term.log"))
    appender.write(b"kept\n")
    follower = stage.run(FOLLOW, stage.url("term.log"))
    await follower.until_stdout(5)
    appender.signal(signal.SIGTERM)
    assert await appender.exit_status() == 130
    assert await follower.exit_status() == 6
    assert await stage.complete("term.log") == "0"


async def test_resume_after_a_412_over_bytes_persisted_but_not_acknowledged(
    watching_stage,
):
    """
    The server persisted bytes whose acknowledgements never reached the
    appender: its resume with ``offset=`` the acknowledged size gets 412;
    it reads those bytes back, finds them its own, and goes on after them.
    """
    stage = watching_stage
    await stage.start()
    name = "unacked.log"
    first, second, third = lines(0, 100), lines(100, 400), lines(500, 100)
    appender = await stage.appender("--retry", "--retry-for", "60", stage.url(name))
    appender.write(first)
    await stage.forwarder.until_ack(len(first))
    # From now on no acknowledgement reaches the appender...
    stage.forwarder.stalled[TO_CLIENT] = True
    appender.write(second)
    # ...while the server persists (and acknowledges) all it was sent.
    await stage.forwarder.until_ack(len(first + second))
    stage.forwarder.cut()
    stage.forwarder.stalled[TO_CLIENT] = False
    await appender.until_stderr(b"they are ours: resuming at %d" % len(first + second))
    appender.write(third)
    appender.close_stdin()
    assert await appender.exit_status() == 0, appender.stderr
    assert stage.file(name) == first + second + third
    assert await stage.complete(name) == "1"


async def test_resume_refused_when_someone_else_appended(watching_stage):
    """
    The bytes past the acknowledged size are not the appender's own
    (another client appended while it was away): it stops, status 5, and
    says why; nothing of its own is appended after the stranger's bytes.
    """
    stage = watching_stage
    await stage.start()
    name = "stranger.log"
    first, second = lines(0, 100), lines(100, 100)
    appender = await stage.appender("--retry", "--retry-for", "60", stage.url(name))
    appender.write(first)
    await stage.forwarder.until_ack(len(first))
    # Nothing passes any more, either way: the second part never arrives.
    stage.forwarder.stalled.update({TO_CLIENT: True, TO_SERVER: True})
    sent = bytearray()

    def all_sent(direction: str, opcode: int, payload: bytes) -> bool:
        if direction == TO_SERVER and opcode == 2:
            sent.extend(payload)
        return len(sent) >= len(second)

    passing = stage.forwarder.until_frame(all_sent)
    appender.write(second)
    await passing
    assert bytes(sent) == second
    stage.forwarder.target = None  # the appender cannot get back meanwhile
    stage.forwarder.cut()
    stage.forwarder.stalled.update({TO_CLIENT: False, TO_SERVER: False})
    # Its session has ended on the server (the line is logged after the
    # slot is released); someone else appends.
    await stage.server.until_logged(rb"on stranger\.log .* ended lost")
    response = await treq.post(stage.direct_url(name), data=b"a stranger's bytes\n")
    assert response.code == 200
    await response.content()
    stage.connect()
    assert await appender.exit_status() == 5
    assert b"cannot resume (412)" in appender.stderr
    assert b"someone else appended" in appender.stderr
    assert stage.file(name) == first + b"a stranger's bytes\n"


def closing_handshake_answered(direction: str, opcode: int, payload: bytes) -> bool:
    """The appender has answered the server's Close (it is closing)."""
    return direction == TO_SERVER and opcode == 8


async def sigterm_holding_the_appenders_connection(stage: Stage) -> None:
    """
    SIGTERM the server: it persists, sends the appender Close 1001, and
    exits; the appender answers the Close, and the forwarder keeps its
    connection open: closing, but its end not reported yet.
    """
    assert stage.server is not None
    stage.forwarder.hold_closes = True
    answered = stage.forwarder.until_frame(closing_handshake_answered)
    stage.server.process.send_signal(signal.SIGTERM)
    await answered
    await threads.deferToThread(stage.server.process.wait, 20)
    stage.forwarder.target = None


async def test_input_written_while_the_connection_ends_is_not_lost(watching_stage):
    """
    Standard input read after the server's Close arrived, before the
    connection's end: kept and sent after resuming (``--retry``), never
    dropped with an exit status of 0.
    """
    stage = watching_stage
    await stage.start()
    name = "closing.log"
    appender = await stage.appender("--retry", "--retry-for", "60", stage.url(name))
    acked = stage.forwarder.until_ack(7)
    appender.write(b"before\n")
    await acked
    await sigterm_holding_the_appenders_connection(stage)
    appender.write(b"while closing\n")
    await stage.start()
    stage.forwarder.release()
    await appender.until_stderr(b"resumed appending")
    appender.write(b"after\n")
    appender.close_stdin()
    assert await appender.exit_status() == 0, appender.stderr
    assert b"Unhandled" not in appender.stderr
    assert stage.file(name) == b"before\nwhile closing\nafter\n"


async def test_without_retry_input_while_the_connection_ends_fails_loudly(
    watching_stage,
):
    stage = watching_stage
    await stage.start()
    appender = await stage.appender(stage.url("loud.log"))
    acked = stage.forwarder.until_ack(7)
    appender.write(b"before\n")
    await acked
    await sigterm_holding_the_appenders_connection(stage)
    appender.write(b"while closing\n")
    appender.close_stdin()
    stage.forwarder.release()
    assert await appender.exit_status() == 6
    assert b"server went away" in appender.stderr
    assert b"Unhandled" not in appender.stderr
    assert b"Disconnected" not in appender.stderr
    assert stage.file("loud.log") == b"before\n"


def test_retry_for_must_be_positive():
    for tool in (APPEND, FOLLOW):
        result = subprocess.run(
            [tool, "--retry-for", "0", "http://127.0.0.1:1/y"],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert b"--retry-for" in result.stderr
