"""
Chaos over the stateless mode (issue 21), bounded in time, in the manner
of ``test_chaos.py``: three servers with ``--redis`` and ``--archive``,
each on a root of its own, behind a `Balancer` (each new connection to
the next server up); every 2-6 s (seeded random) one of them is
SIGKILLed or SIGTERMed and started again on an EMPTY root, and every
connection is cut at random moments, while ``httpfstream-append --retry``
processes fed by generator threads and ``httpfstream-follow --retry
--wait`` processes go through the balancer, each reconnection landing on
whichever server comes next.

Checked at the end: every resource is one object in the bucket equal to
its generator's input, complete, and its live data is gone from Redis and
the bucket; every appender exits 0; every follower's output equals the
input and it exits 0; and any other status tells the truth (an
appender's object is then a prefix of its input, a follower's output a
prefix of it).

It runs ``HTTPFSTREAM_CHAOS_SECONDS`` (default 10; at least 30 when the
``CI`` environment variable is set) with the seed
``HTTPFSTREAM_CHAOS_SEED`` (default: a new one, printed with the
figures)::

    HTTPFSTREAM_CHAOS_SECONDS=300 .venv/bin/pytest -s tests/test_chaos_stateless.py
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.chaos import Generator
from support.processes import APPEND, FOLLOW, Child
from support.s3 import MotoServer, S3Env
from support.stateless import Balancer, Cluster, Redis
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater


def _seconds() -> float:
    seconds = float(os.environ.get("HTTPFSTREAM_CHAOS_SECONDS") or 10)
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        seconds = max(seconds, 30.0)
    return seconds


SECONDS = _seconds()
SEED = int(os.environ.get("HTTPFSTREAM_CHAOS_SEED") or random.randrange(1 << 32))
SERVERS = 3
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
    resumed: int = 0
    bytes_checked: int = 0
    runtime: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"stateless chaos seed={self.seed} for {self.seconds:g}s over"
            f" {SERVERS} servers: restarts on an empty root {self.kills + self.terms}"
            f" ({self.kills} SIGKILL, {self.terms} SIGTERM), connection cuts"
            f" {self.cuts}; appender resumes {self.resumed}; bytes checked"
            f" {self.bytes_checked:,}; runtime {self.runtime:.1f}s;"
            f" exit statuses {self.statuses}"
        )


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def redis() -> Iterator[Redis]:
    server = Redis()
    server.start()
    yield server
    server.kill()


@pytest_twisted.async_yield_fixture
async def cluster(
    tmp_path: Path, redis: Redis, moto: MotoServer, monkeypatch: Any
) -> AsyncIterator[Cluster]:
    env = S3Env(moto, moto.new_bucket(), tmp_path)
    env.apply(monkeypatch)
    made = Cluster(tmp_path, redis, moto, env.bucket)
    yield made
    await made.stop()
    made.check_logs()


@pytest.fixture
def balancer() -> Iterator[Balancer]:
    made = Balancer()
    yield made
    pytest_twisted.blockon(Deferred.fromCoroutine(made.stop()))


async def _sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def _chaos(
    cluster: Cluster,
    balancer: Balancer,
    rng: random.Random,
    until: float,
    figures: Figures,
) -> None:
    """Restart a server on an empty root every 2-6 s, cutting connections."""
    for _ in range(int(SECONDS)):  # at most one restart every 2 s
        if time.monotonic() >= until:
            return
        pause = rng.uniform(2, 6)
        cuts = sorted(rng.uniform(0, pause) for _ in range(rng.randint(0, 2)))
        waited = 0.0
        for at in cuts:
            await _sleep(at - waited)
            waited = at
            balancer.cut()
            figures.cuts += 1
        await _sleep(pause - waited)
        if time.monotonic() >= until:
            return
        victim = rng.choice(cluster.up)
        balancer.ports.remove(victim.port)
        if rng.random() < 0.5:
            await cluster.kill(victim, signal.SIGKILL)
            figures.kills += 1
        else:
            await cluster.kill(victim, signal.SIGTERM)
            figures.terms += 1
        balancer.ports.append((await cluster.start()).port)


async def _check(
    cluster: Cluster,
    name: str,
    appender: Child,
    generator: Generator,
    followers: list[Child],
    statuses: dict[str, int],
    figures: Figures,
) -> list[str]:
    """What is wrong with ``name`` at the end: nothing, when all is well."""
    problems = []
    sent = bytes(generator.sent)
    figures.resumed += appender.stderr.count(b"resumed appending")
    if generator.error is not None:
        problems.append(f"{name}: input not all written: {generator.error}")
    if statuses[name] == 0:
        # Ended well: one object, complete, with every byte.
        try:
            await cluster.until(
                lambda: cluster.head(name) == (len(sent), "1"),
                60,
                f"{name} complete in the bucket with {len(sent)} bytes",
            )
        except AssertionError as e:
            problems.append(f"{e} (it holds {cluster.head(name)})")
    else:
        problems.append(
            f"{name}: appender exited {statuses[name]}: {appender.stderr[-600:]!r}"
        )
    stored = cluster.object(name) or b""
    # Nothing wrong in the bucket, ever: the object is what was written.
    if not _prefix(stored, sent):
        problems.append(f"{name}: the object is not a prefix of its input")
    elif statuses[name] == 0 and stored == sent:
        figures.bytes_checked += len(stored)
    for j, follower in enumerate(followers):
        status = statuses[f"{name} follower {j}"]
        if not _prefix(follower.stdout, sent):
            problems.append(f"{name} follower {j}: output not a prefix of the input")
        if status != 0:
            problems.append(
                f"{name} follower {j}: exited {status}: {follower.stderr[-600:]!r}"
            )
        elif bytes(follower.stdout) != stored or statuses[name] != 0:
            problems.append(
                f"{name} follower {j}: exited 0 with {len(follower.stdout)} bytes"
                f" of {len(sent)} (appender {statuses[name]})"
            )
        else:
            figures.bytes_checked += len(follower.stdout)
    return problems


async def _late_followers(
    balancer: Balancer,
    rng: random.Random,
    followers: dict[str, list[Child]],
    children: list[Child],
) -> None:
    """One more follower per resource, joining mid-run."""
    for name in followers:
        await _sleep(rng.uniform(0.1, 0.5) * SECONDS / len(followers))
        follower = _follower(balancer, name)
        followers[name].append(follower)
        children.append(follower)


def _follower(balancer: Balancer, name: str) -> Child:
    url = balancer.url(name)
    return Child(FOLLOW, "-v", "--retry", "--wait", "--retry-for", RETRY_FOR, url)


def _prefix(short: bytes | bytearray, long: bytes | bytearray) -> bool:
    return bytes(long).startswith(bytes(short))


@pytest.mark.timeout(SECONDS + 2 * FINISH + 120)
async def test_chaos_over_servers_restarted_empty(cluster, balancer, children):
    started = time.monotonic()
    figures = Figures(SEED, SECONDS)
    rng = random.Random(SEED)
    for _ in range(SERVERS):
        balancer.ports.append((await cluster.start()).port)
    names = [f"chaos/{i}.log" for i in range(APPENDERS)]
    appenders: dict[str, Child] = {}
    generators: dict[str, Generator] = {}
    followers: dict[str, list[Child]] = {}
    for i, name in enumerate(names):
        followers[name] = [_follower(balancer, name) for _ in range(2)]
        url = balancer.url(name)
        appenders[name] = Child(APPEND, "-v", "--retry", "--retry-for", RETRY_FOR, url)
        children.extend([appenders[name], *followers[name]])
        assert appenders[name].process.stdin is not None
        # The appenders stop at different times: some close amid the chaos.
        seconds = SECONDS * (0.6 + 0.4 * (i + 1) / APPENDERS)
        generators[name] = Generator(i, SEED, appenders[name].process.stdin, seconds)
    joining = random.Random(f"{SEED}/late")
    late = Deferred.fromCoroutine(
        _late_followers(balancer, joining, followers, children)
    )
    await _chaos(cluster, balancer, rng, started + SECONDS, figures)
    await late

    for name in names:
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
        problems += await _check(
            cluster,
            name,
            appenders[name],
            generators[name],
            followers[name],
            statuses,
            figures,
        )
    try:
        await cluster.until(
            lambda: (
                not cluster.chunks() and not any(cluster.live(name) for name in names)
            ),
            30,
            "the live data dropped",
        )
    except AssertionError:
        problems.append(
            f"live data left: chunks {sorted(cluster.chunks())}, keys"
            f" {[cluster.live(name) for name in names]}"
        )
    print(figures)
    assert not problems, "\n".join([str(figures), *problems])
