"""
``--archive`` on one server (issue 21): finished resources in an S3
bucket, one object each, and the storage root a bounded cache of them.
Real ``twistd httpfstream --archive`` processes against a real
``moto_server`` (`support.s3`), with a `Forwarder` in front of it when the
bucket must become unreachable; the cache's bookkeeping alone, without I/O.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.clients import close, get, ws
from support.followers import open_follower
from support.processes import BIN, Twistd
from support.proxies import Forwarder
from support.s3 import MotoServer, S3Env
from twisted.internet import threads

from httpfstream.shared.archive.cache import Cache

PREFIX = "ci/logs"
KiB = 1024


# The cache's bookkeeping alone.


def test_the_cache_evicts_the_least_recently_used_safe_unpinned_files():
    cache = Cache(budget=300)
    for name in ("a", "b", "c", "d"):
        cache.add((name,), 100, safe=True)
    assert cache.used == 400
    assert cache.victims() == [("a",)]
    cache.touch(("a",))  # used now: b is the oldest
    assert cache.victims() == [("b",)]
    assert cache.victims(room=100) == [("b",), ("c",)]
    cache.pin(("b",))  # open: never chosen
    assert cache.victims() == [("c",)]
    cache.pending(("c",))  # a session began: not safe any more
    assert cache.victims() == [("d",)]
    cache.grew(("d",), 50)  # appended to: pending, and larger
    assert cache.used == 450
    assert cache.victims() == [("a",)]
    assert cache.unevictable == 100 + 100 + 150
    cache.archived(("d",), 100)  # an upload of what it held before: still pending
    assert not cache.safe(("d",))
    cache.archived(("d",), 150)
    assert cache.safe(("d",))
    cache.unpin(("b",))
    assert cache.victims(room=100) == [("b",), ("d",)]
    cache.drop(("b",))
    assert cache.used == 350 and ("b",) not in cache
    assert Cache(budget=0).victims(room=1 << 40) == []  # no limit


# Real servers against a real S3 API server.


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3env(moto: MotoServer, tmp_path: Path, monkeypatch: Any) -> S3Env:
    """The standard AWS environment (inherited by every twistd), a new bucket."""
    env = S3Env(moto, moto.new_bucket(), tmp_path)
    env.apply(monkeypatch)
    return env


class Servers:
    """Every twistd a test starts, stopped after it; none may log a traceback."""

    def __init__(self, s3env: S3Env, tmp_path: Path) -> None:
        self.s3env = s3env
        self.tmp_path = tmp_path
        self.started: list[Twistd] = []
        self._roots = 0

    def root(self) -> Path:
        self._roots += 1
        return self.tmp_path / f"root{self._roots}"

    async def start(self, *options: str, root: Path | None = None) -> Twistd:
        archive = f"--archive=s3://{self.s3env.bucket}/{PREFIX}"
        server = await threads.deferToThread(
            Twistd.start, root or self.root(), archive, *options
        )
        self.started.append(server)
        return server

    async def stop(self, server: Twistd) -> None:
        # In a thread: the reactor keeps turning (a Forwarder in front of
        # the bucket goes on forwarding while the server archives).
        await threads.deferToThread(server.stop)

    def check_logs(self) -> None:
        for server in self.started:
            log = b"".join(server.log)
            assert b"Traceback" not in log and b"Unhandled" not in log, log.decode()


@pytest_twisted.async_yield_fixture
async def servers(s3env: S3Env, tmp_path: Path) -> AsyncIterator[Servers]:
    made = Servers(s3env, tmp_path)
    yield made
    for server in made.started:
        await made.stop(server)
    made.check_logs()


def objects(moto: MotoServer, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket with its bytes."""
    s3 = moto.client()
    found = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in found
    }


def metadata(moto: MotoServer, bucket: str, name: str) -> dict[str, str]:
    head = moto.client().head_object(Bucket=bucket, Key=f"{PREFIX}/{name}")
    return dict(head["Metadata"])


def in_bucket(moto: MotoServer, bucket: str, name: str) -> bool:
    return f"{PREFIX}/{name}" in objects(moto, bucket)


async def append(server: Twistd, name: str, chunks: list[bytes], **query: Any) -> Any:
    """An APPEND session that sends ``chunks``, acknowledged; left open."""
    probe = await ws(server.ws_url(name, ack=1, **query), "APPEND")
    assert probe.status == 101, (probe.status, probe.close_reason)
    for chunk in chunks:
        probe.sendMessage(chunk, isBinary=True)
    await probe.until_ack(sum(map(len, chunks)))
    return probe


def lines(count: int, width: int = 100) -> bytes:
    return b"".join(b"%-*d\n" % (width - 1, i) for i in range(1, count + 1))


async def test_a_finished_session_becomes_one_object_with_its_completion(
    servers, moto, s3env
):
    server = await servers.start()
    sent = [lines(500), b"\x00\xff binary \r\n", lines(10)]
    probe = await append(server, "nightly/build.log", sent)
    before = time.time()
    assert await close(probe) == 1000
    # POST too: one session, one object.
    status, _, _ = await get(server.url("post.log"), method="POST", data=b"posted\n")
    assert status == 200
    logged = await server.until_logged(rb"archived nightly/build\.log: ")
    assert b"bytes, complete, in" in logged[0]
    assert b"after its session ended" in logged[0]
    await server.until_logged(rb"archived post\.log: ")
    found = objects(moto, s3env.bucket)
    assert found[f"{PREFIX}/nightly/build.log"] == b"".join(sent)
    assert found[f"{PREFIX}/post.log"] == b"posted\n"
    meta = metadata(moto, s3env.bucket, "nightly/build.log")
    assert meta["complete"] == "1"
    assert abs(int(meta["modified"]) / 1000 - before) < 5
    # Nothing but the objects and their line data under the prefix.
    assert {k for k in found if not k.startswith(f"{PREFIX}/.httpfstream/")} == {
        f"{PREFIX}/nightly/build.log",
        f"{PREFIX}/post.log",
    }
    # The local file stays, as a cache entry, and says the same.
    assert (server.root / "nightly/build.log").read_bytes() == b"".join(sent)
    status, headers, _ = await get(server.url("nightly/build.log"), method="HEAD")
    assert (status, headers["httpfstream-complete"]) == (200, "1")


async def test_a_lost_session_is_archived_incomplete_and_a_later_append_resumes_it(
    servers, moto, s3env
):
    first = await servers.start("--archive-idle=1")
    sent = lines(300)
    probe = await append(first, "job.log", [sent])
    probe.transport.abortConnection()  # the appender is lost
    logged = await first.until_logged(rb"archived job\.log: ")
    assert b"%d bytes, incomplete" % len(sent) in logged[0]
    assert objects(moto, s3env.bucket)[f"{PREFIX}/job.log"] == sent
    assert metadata(moto, s3env.bucket, "job.log")["complete"] == "0"
    await servers.stop(first)
    # Another server, with nothing on its disk: the offset is checked
    # against the bucket's size before anything is downloaded...
    second = await servers.start("--archive-idle=1")
    wrong = await ws(second.ws_url("job.log", offset=len(sent) - 1), "APPEND")
    assert wrong.status == 412
    assert wrong.headers["httpfstream-size"] == str(len(sent))
    assert wrong.headers["httpfstream-complete"] == "0"
    assert not (second.root / "job.log").exists()
    # ...and the right one resumes it where the bytes are.
    more = lines(20)
    probe = await append(second, "job.log", [more], offset=len(sent))
    assert await close(probe) == 1000
    logged = await second.until_logged(rb"archived job\.log: ")
    assert b"%d bytes, complete" % (len(sent) + len(more)) in logged[0]
    assert objects(moto, s3env.bucket)[f"{PREFIX}/job.log"] == sent + more
    assert metadata(moto, s3env.bucket, "job.log")["complete"] == "1"


async def test_a_session_cut_by_sigkill_is_archived_incomplete_after_a_restart(
    servers, moto, s3env
):
    root = servers.root()
    first = await servers.start(root=root)
    sent = lines(200)
    await append(first, "killed.log", [sent])
    first.process.kill()
    await threads.deferToThread(first.process.wait)
    assert not in_bucket(moto, s3env.bucket, "killed.log")
    # The file was written long ago, as far as the idle time goes.
    old = time.time() - 120
    os.utime(root / "killed.log", (old, old))
    again = await servers.start("--archive-idle=60", root=root)
    logged = await again.until_logged(rb"archived killed\.log: ")
    assert b"incomplete" in logged[0] and b"found at start-up" in logged[0]
    assert objects(moto, s3env.bucket)[f"{PREFIX}/killed.log"] == sent
    assert metadata(moto, s3env.bucket, "killed.log")["complete"] == "0"
