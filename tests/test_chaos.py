"""
Chaos, bounded in time: the server SIGKILLed or SIGTERMed every 2-8 s
(seeded random) and started again on the same root, every connection cut
at random moments by the forwarder in front, while ``httpfstream-append
--retry`` processes are fed known bytes (with pauses) by generator threads
and ``httpfstream-follow --retry`` processes follow them.

Checked at the end: every file equals its generator's input exactly, every
appender exits 0, every follower's output equals the file and it exits 0;
and any status that is not 0 tells the truth (an appender's file is then a
prefix of its input, a follower's output a prefix of the file).

It runs ``HTTPFSTREAM_CHAOS_SECONDS`` (default 12; at least 60 when the
``CI`` environment variable is set) with the seed
``HTTPFSTREAM_CHAOS_SEED`` (default: a new one, printed with the figures).
``-s`` shows the figures; a failure shows them too::

    HTTPFSTREAM_CHAOS_SECONDS=300 .venv/bin/python -m pytest -s tests/test_chaos.py
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from support.chaos import Generator
from support.processes import APPEND, FOLLOW, Child
from support.proxies import Stage
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater


def _seconds() -> float:
    seconds = float(os.environ.get("HTTPFSTREAM_CHAOS_SECONDS") or 12)
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        seconds = max(seconds, 60.0)
    return seconds


SECONDS = _seconds()
SEED = int(os.environ.get("HTTPFSTREAM_CHAOS_SEED") or random.randrange(1 << 32))
APPENDERS = 3
#: How long a client keeps retrying: far longer than any outage here.
RETRY_FOR = "120"
#: What the processes get to finish once the chaos stops.
FINISH = 120.0


@dataclass
class Figures:
    """What the run went through and what it checked."""

    seed: int
    seconds: float
    kills: int = 0
    terms: int = 0
    cuts: int = 0
    bytes_checked: int = 0
    resumed: int = 0
    taken_back: int = 0
    waited: int = 0
    runtime: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"chaos seed={self.seed} for {self.seconds:g}s: restarts survived"
            f" {self.kills + self.terms} ({self.kills} SIGKILL, {self.terms}"
            f" SIGTERM), connection cuts {self.cuts}; appender resumes"
            f" {self.resumed} ({self.taken_back} after a 412 over their own"
            f" unacknowledged bytes), follower waits for an appender"
            f" {self.waited}; bytes checked {self.bytes_checked:,};"
            f" runtime {self.runtime:.1f}s; exit statuses {self.statuses}"
        )


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    made = Stage(tmp_path / "root")
    yield made
    pytest_twisted.blockon(Deferred.fromCoroutine(made.close()))


async def _chaos(stage: Stage, rng: random.Random, until: float, figures: Figures):
    """Restart the server every 2-8 s, cutting connections in between."""
    for _ in range(int(SECONDS)):  # at most one restart every 2 s
        if time.monotonic() >= until:
            return
        pause = rng.uniform(2, 8)
        cuts = sorted(rng.uniform(0, pause) for _ in range(rng.randint(0, 2)))
        waited = 0.0
        for at in cuts:
            await deferLater(reactor, at - waited, lambda: None)
            waited = at
            stage.forwarder.cut()
            figures.cuts += 1
        await deferLater(reactor, pause - waited, lambda: None)
        if time.monotonic() >= until:
            return
        if rng.random() < 0.5:
            await stage.kill(signal.SIGKILL)
            figures.kills += 1
        else:
            await stage.kill(signal.SIGTERM)
            figures.terms += 1
        await stage.start()


async def _late_followers(
    stage: Stage, rng: random.Random, names: list[str], followers: dict[str, list]
):
    """One more follower per resource, joining mid-run."""
    for name in names:
        await deferLater(
            reactor, rng.uniform(0.1, 0.5) * SECONDS / len(names), lambda: None
        )
        followers[name].append(_follower(stage, name))


def _follower(stage: Stage, name: str) -> Child:
    return stage.run(
        FOLLOW, "-v", "--retry", "--wait", "--retry-for", RETRY_FOR, stage.url(name)
    )


def _prefix(short: bytes | bytearray, long: bytes | bytearray) -> bool:
    return bytes(long).startswith(bytes(short))


@pytest.mark.timeout(SECONDS + FINISH + 120)
async def test_chaos(stage: Stage):
    started = time.monotonic()
    figures = Figures(SEED, SECONDS)
    rng = random.Random(SEED)
    await stage.start()
    names = [f"chaos/{i}.log" for i in range(APPENDERS)]
    appenders: dict[str, Child] = {}
    generators: dict[str, Generator] = {}
    followers: dict[str, list[Child]] = {name: [] for name in names}
    for i, name in enumerate(names):
        followers[name].append(_follower(stage, name))
        appenders[name] = stage.run(
            APPEND, "-v", "--retry", "--retry-for", RETRY_FOR, stage.url(name)
        )
        assert appenders[name].process.stdin is not None
        # The appenders stop at different times: some close amid the chaos.
        seconds = SECONDS * (0.6 + 0.4 * (i + 1) / APPENDERS)
        generators[name] = Generator(i, SEED, appenders[name].process.stdin, seconds)
    chaos = Deferred.fromCoroutine(_chaos(stage, rng, started + SECONDS, figures))
    late = Deferred.fromCoroutine(_late_followers(stage, rng, names, followers))
    await chaos
    await late
    stage.connect()  # the server stays up from now on

    for name in names:
        # (An appender that stopped reading would block its generator.)
        await generators[name].done.addTimeout(FINISH, reactor)
    statuses = {}
    for name in names:
        statuses[name] = await appenders[name].exit_status(FINISH)
        for j, follower in enumerate(followers[name]):
            statuses[f"{name} follower {j}"] = await follower.exit_status(FINISH)
    figures.runtime = time.monotonic() - started
    figures.statuses = statuses

    problems: list[str] = []
    for name in names:
        appender, generator = appenders[name], generators[name]
        content = stage.file(name)
        figures.resumed += appender.stderr.count(b"resumed appending")
        figures.taken_back += appender.stderr.count(b"they are ours")
        if generator.error is not None:
            problems.append(f"{name}: input not all written: {generator.error}")
        # Nothing wrong on disk, ever: the file is what was written.
        if not _prefix(content, generator.sent):
            problems.append(f"{name}: the file is not a prefix of its input")
        if statuses[name] == 0:
            if content != generator.sent:
                problems.append(
                    f"{name}: appender exited 0 with {len(content)} of"
                    f" {len(generator.sent)} bytes in the file"
                )
            figures.bytes_checked += len(content)
        else:
            problems.append(
                f"{name}: appender exited {statuses[name]}: {appender.stderr[-600:]!r}"
            )
            if content == generator.sent:
                problems.append(f"{name}: ...although every byte is there")
        complete = await stage.complete(name)
        if (complete == "1") != (statuses[name] == 0):
            problems.append(f"{name}: Httpfstream-Complete {complete}")
        for j, follower in enumerate(followers[name]):
            figures.waited += follower.stderr.count(b"waiting for a new appender")
            status = statuses[f"{name} follower {j}"]
            if not _prefix(follower.stdout, content):
                problems.append(f"{name} follower {j}: output not a prefix of the file")
            if status == 0:
                if bytes(follower.stdout) != content or complete != "1":
                    problems.append(
                        f"{name} follower {j}: exited 0 with"
                        f" {len(follower.stdout)} of {len(content)} bytes"
                        f" (complete {complete})"
                    )
                figures.bytes_checked += len(follower.stdout)
            else:
                problems.append(
                    f"{name} follower {j}: exited {status}: {follower.stderr[-600:]!r}"
                )
                if (
                    status == 6
                    and bytes(follower.stdout) == content
                    and complete == "1"
                ):
                    problems.append(f"{name} follower {j}: 6, yet it has everything")
    print(figures)
    assert not problems, "\n".join([str(figures), *problems])
