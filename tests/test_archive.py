"""
``--archive`` on one server (issue 21): finished resources in an S3
bucket, one object each, and the storage root a bounded cache of them.
Real ``twistd httpfstream --archive`` processes against a real
``moto_server`` (`support.s3`), with a `Forwarder` in front of it when the
bucket must become unreachable; the cache's bookkeeping alone, without I/O.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.clients import close, get, raw, ws
from support.compressed import gzip_get
from support.followers import open_follower
from support.processes import BIN, Twistd
from support.proxies import Forwarder
from support.s3 import MotoServer, S3Env
from twisted.internet import threads
from twisted.internet.defer import Deferred, gatherResults

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
            # Shown by pytest only if the test failed.
            print(f"--- twistd on {server.root}:\n{log.decode(errors='replace')}")
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


async def test_a_server_on_an_empty_root_serves_finished_resources_from_the_bucket(
    servers, moto, s3env
):
    first = await servers.start("--archive-idle=0")
    text = lines(3000)  # 300,000 bytes: past a line checkpoint (64 KiB)
    before = time.time()
    probe = await append(first, "done.log", [text[:150_000], text[150_000:]])
    after = time.time()
    assert await close(probe) == 1000
    cut = await append(first, "cut.log", [b"half a line"])
    cut.transport.abortConnection()
    await first.until_logged(rb"archived done\.log: ")
    await first.until_logged(rb"archived cut\.log: ")
    await servers.stop(first)

    second = await servers.start()
    assert not (second.root / "done.log").exists()
    url = second.url
    # Three readers at once: one download, all served from it.
    answers = await gatherResults(
        [Deferred.fromCoroutine(get(url("done.log"))) for _ in range(3)]
    )
    assert [(status, body) for status, _, body in answers] == [(200, text)] * 3
    status, headers, body = answers[0]
    assert (headers["httpfstream-complete"], headers["httpfstream-active"]) == (
        "1",
        "0",
    )
    await second.until_logged(rb"filled done\.log from the bucket: 300000 bytes")
    assert sum(b"filled done.log" in line for line in second.log) == 1
    status, headers, body = await get(
        url("done.log"), headers={"Range": "bytes=100-199"}
    )
    assert (status, body) == (206, text[100:200])
    # Compressed when asked (section 16), from the same local copy.
    zipped = await gzip_get(url("done.log"))
    await zipped.until_ended()
    assert zipped.gzipped and bytes(zipped.decoded) == text
    assert len(zipped.wire) < len(text) // 4
    assert headers["content-range"] == "bytes 100-199/300000"
    status, headers, _ = await get(url("done.log"), method="HEAD")
    assert (status, headers["httpfstream-size"]) == (200, "300000")
    status, headers, body = await get(url("done.log", lines="-2"))
    assert (status, headers["httpfstream-line"], body) == (200, "2999", text[-200:])
    status, _, body = await get(url("done.log", lines="1500-1500"))
    assert body == b"%-99d\n" % 1500
    status, _, body = await get(url("done.log", grep="2999 "))
    found = [json.loads(line) for line in body.splitlines()]
    assert (
        status == 200
        and found[0]["line"] == 2999
        and found[0]["text"].startswith("2999 ")
    )
    # The batch times came with the object: each line is stamped with when
    # the first server persisted it.
    status, _, body = await get(url("done.log", lines="-1", timestamps=1))
    stamp = body.split(b" ", 1)[0].decode()
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = when.replace(tzinfo=UTC).timestamp()
    assert before - 1 <= seconds <= after + 1
    for transport in ("http", "ws"):
        follower = await open_follower(second, "done.log", transport, offset=1000)
        await follower.ended()
        assert follower.status == 200
        assert bytes(follower.received) == text[1000:]
    # A resource whose session was lost says so from the bucket too, and
    # the event stream (section 15) reads it as any follow does.
    status, headers, body = await get(url("cut.log"))
    assert (status, body, headers["httpfstream-complete"]) == (200, b"half a line", "0")
    status, headers, body = await get(
        url("cut.log"), headers={"Accept": "text/event-stream"}
    )
    assert (status, headers["content-type"]) == (200, "text/event-stream")
    assert b'id: 11\ndata: "half a line"\n\n' in body
    assert b'event: end\ndata: {"complete": false' in body
    status, _, body = await get(url(""))
    assert status == 200
    listed = {r["name"]: r for r in json.loads(body)["resources"]}
    assert (listed["done.log"]["size"], listed["done.log"]["complete"]) == (
        300000,
        True,
    )
    assert (listed["cut.log"]["size"], listed["cut.log"]["complete"]) == (11, False)
    status, _, _ = await get(url("never.log"))
    assert status == 404


async def test_the_cache_stays_within_its_size_evicting_the_least_recently_used(
    servers, moto, s3env
):
    server = await servers.start("--cache-size=250K")
    body = {
        name: name.encode() * (100 * KiB // len(name))
        for name in ("a.log", "b.log", "c.log")
    }
    for name in ("a.log", "b.log", "c.log"):
        status, _, _ = await get(server.url(name), method="POST", data=body[name])
        assert status == 200
        await server.until_logged(rb"archived %s: " % name.encode())
    # Three files of 100 KiB: the oldest went, once safely in the bucket.
    await server.until_logged(rb"evicted a\.log \(102400 bytes\) from the cache")
    on_disk = lambda: sorted(  # noqa: E731
        p.name for p in server.root.iterdir() if p.name != ".httpfstream"
    )
    assert on_disk() == ["b.log", "c.log"]
    assert in_bucket(moto, s3env.bucket, "a.log")
    # b used now: c is the least recently used when a comes back.
    assert (await get(server.url("b.log")))[2] == body["b.log"]
    status, _, got = await get(server.url("a.log"))
    assert (status, got) == (200, body["a.log"])
    await server.until_logged(rb"evicted c\.log ")
    assert on_disk() == ["a.log", "b.log"]
    assert not (server.root / ".httpfstream/archived/c.log").exists()


async def test_a_file_in_use_is_not_evicted_until_it_is_closed(servers, moto, s3env):
    server = await servers.start("--cache-size=1M")
    big = lines(330_000)  # 33 MB: more than the sockets' buffers hold
    probe = await append(
        server, "big.log", [big[i : i + (1 << 20)] for i in range(0, len(big), 1 << 20)]
    )
    assert await close(probe) == 1000
    await server.until_logged(rb"archived big\.log: ")
    await server.until_logged(rb"evicted big\.log ")  # over the budget alone
    # A reader that stops reading keeps big.log open (its cursor paused).
    reader = await raw(server)
    reader.send(b"GET /big.log HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _ = await reader.response_head()
    assert status == 200
    reader.transport.pauseProducing()
    await server.until_logged(rb"filled big\.log from the bucket")
    # Another resource archived: the cache is over its budget, and only
    # what is not in use goes.
    status, _, _ = await get(server.url("small.log"), method="POST", data=b"s" * 1000)
    await server.until_logged(rb"archived small\.log: ")
    await server.until_logged(rb"evicted small\.log ")
    assert (server.root / "big.log").stat().st_size == len(big)
    assert sum(b"evicted big.log " in line for line in server.log) == 1
    # Closed: it goes.
    reader.transport.abortConnection()
    await server.until_logged(rb"evicted big\.log ", count=2)
    assert not (server.root / "big.log").exists()


async def test_an_unreachable_bucket_loses_nothing_and_is_caught_up_with(
    servers, moto, s3env, monkeypatch
):
    forwarder = Forwarder(moto.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{forwarder.port}")
    try:
        server = await servers.start("--cache-size=150K", "--archive-idle=0")
        old, kept = b"o" * 100 * KiB, b"k" * 100 * KiB
        for name, body in (("old.log", old), ("kept.log", kept)):
            await get(server.url(name), method="POST", data=body)
            await server.until_logged(rb"archived %s: " % name.encode())
        await server.until_logged(rb"evicted old\.log ")
        live = lines(3000)
        probe = await append(server, "live.log", [live[:100_000]])
        # The bucket goes away mid-session: appends go on.
        forwarder.target = None
        forwarder.cut()
        probe.sendMessage(live[100_000:], isBinary=True)
        await probe.until_ack(len(live))
        assert await close(probe) == 1000
        await server.until_logged(rb"archiving live\.log: .* trying again")
        # Appends went on; what is on local disk is served...
        assert (await get(server.url("live.log")))[2] == live
        assert (await get(server.url("kept.log")))[2] == kept
        # ...and not evicted while the bucket lacks it, over budget or not.
        assert (server.root / "live.log").stat().st_size == len(live)
        # What is only in the bucket, or may be, cannot be answered now.
        status, headers, _ = await get(server.url("old.log"))
        assert status == 503 and int(headers["retry-after"]) > 0
        refused = await ws(server.ws_url("new.log"), "APPEND")
        assert refused.status == 503
        status, _, _ = await get(server.url(""))
        assert status == 503
        # The bucket is back: the upload is retried, nothing is lost.
        forwarder.target = moto.port
        logged = await server.until_logged(rb"archived live\.log: ", timeout=30)
        assert b"300000 bytes, complete" in logged[0]
        assert objects(moto, s3env.bucket)[f"{PREFIX}/live.log"] == live
        assert (await get(server.url("old.log")))[:3:2] == (200, old)
    finally:
        await forwarder.stop()


async def test_listing_delete_and_max_age_act_on_the_bucket(servers, moto, s3env):
    server = await servers.start("--cache-size=150K", "--archive-idle=0")
    for name in ("a/one.log", "a/two.log"):
        await get(server.url(name), method="POST", data=b"x" * 100 * KiB)
        await server.until_logged(rb"archived %s: " % name.encode())
    await server.until_logged(rb"evicted a/one\.log ")
    cut = await append(server, "a/cut.log", [b"cut short"])
    cut.transport.abortConnection()
    await server.until_logged(rb"archived a/cut\.log: ")
    live = await append(server, "a/live.log", [b"still going\n"])

    status, _, body = await get(server.url("a/"))
    assert status == 200
    listed = {r["name"]: r for r in json.loads(body)["resources"]}
    assert set(listed) == {"one.log", "two.log", "cut.log", "live.log"}
    assert not (server.root / "a/one.log").exists()  # only in the bucket
    assert (listed["one.log"]["size"], listed["one.log"]["complete"]) == (102400, True)
    assert (listed["cut.log"]["size"], listed["cut.log"]["complete"]) == (9, False)
    assert listed["live.log"]["active"] and not listed["live.log"]["complete"]
    status, _, body = await get(server.url(""))
    assert json.loads(body) == {"resources": [], "folders": ["a/"]}

    # DELETE: the object (and its line data) and the file, wherever they are.
    status, _, _ = await get(server.url("a/one.log"), method="DELETE")
    assert status == 204
    status, _, _ = await get(server.url("a/two.log"), method="DELETE")
    assert status == 204
    assert not (server.root / "a/two.log").exists()
    left = objects(moto, s3env.bucket)
    assert not [k for k in left if "one.log" in k or "two.log" in k], left
    for name in ("a/one.log", "a/two.log"):
        assert (await get(server.url(name)))[0] == 404
    assert (await get(server.url("a/live.log"), method="DELETE"))[0] == 409
    assert (await get(server.url("a/none.log"), method="DELETE"))[0] == 404
    assert await close(live) == 1000
    await server.until_logged(rb"archived a/live\.log: ")
    await servers.stop(server)

    # --max-age: an old object only in the bucket and an old local file
    # that is also there go; recent ones stay.
    s3 = moto.client()
    day_ago = str(int((time.time() - 86400) * 1000))
    s3.put_object(
        Bucket=s3env.bucket,
        Key=f"{PREFIX}/old/x.log",
        Body=b"old",
        Metadata={"complete": "1", "modified": day_ago},
    )
    root = server.root
    stale = time.time() - 3600
    os.utime(root / "a/live.log", (stale, stale))
    sweeper = await servers.start("--max-age=30s", root=root)
    await sweeper.until_logged(rb"removed a/live\.log: unchanged")
    assert not (root / "a/live.log").exists()
    assert not in_bucket(moto, s3env.bucket, "a/live.log")
    # The object's own time (its metadata) is read when it is listed.
    status, _, body = await get(sweeper.url("old/"))
    assert json.loads(body)["resources"][0]["modified"].startswith(
        datetime.fromtimestamp(int(day_ago) / 1000, UTC).strftime("%Y-%m-%d")
    )
    await sweeper.until_logged(rb"removed old/x\.log: unchanged")
    assert not in_bucket(moto, s3env.bucket, "old/x.log")
    assert in_bucket(moto, s3env.bucket, "a/cut.log")


async def test_start_up_finds_what_a_crash_left_at_each_point(servers, moto, s3env):
    """
    A root and a bucket as a crash at each point of archiving, filling and
    evicting leaves them; a server started on them makes both agree, and
    every response tells the truth (section 9).
    """
    s3 = moto.client()

    def put(name: str, body: bytes, complete: bool) -> None:
        s3.put_object(
            Bucket=s3env.bucket,
            Key=f"{PREFIX}/{name}",
            Body=body,
            Metadata={"complete": "1" if complete else "0"},
        )

    root = servers.root()
    state = root / ".httpfstream"

    def local(name: str, body: bytes, record: str | None, marker: bool) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
        if record is not None:
            (state / "archived" / name).parent.mkdir(parents=True, exist_ok=True)
            (state / "archived" / name).write_text(record)
        if marker:
            (state / "incomplete" / name).parent.mkdir(parents=True, exist_ok=True)
            (state / "incomplete" / name).write_bytes(b"")

    # Ended well, then killed before (or during) its upload.
    local("ended.log", b"ended\n", None, marker=False)
    # Killed mid-session long ago: incomplete, and idle long enough.
    local("midway.log", b"half", None, marker=True)
    old = time.time() - 600
    os.utime(root / "midway.log", (old, old))
    # Archived at 5 bytes, then appended to: the bucket lacks the rest.
    put("grown.log", b"12345", True)
    local("grown.log", b"1234567890", "5 1\n", marker=False)
    # Filled from the bucket, the power cut before its data reached the disk.
    put("torn.log", b"t" * 100, True)
    local("torn.log", b"t" * 50, "100 1\n", marker=False)
    # Evicted, killed after the file went but before its marker did.
    put("evicted.log", b"evicted\n", True)
    (state / "incomplete").mkdir(parents=True, exist_ok=True)
    (state / "incomplete" / "evicted.log").write_bytes(b"")
    # Safely archived: nothing to do.
    put("safe.log", b"safe\n", False)
    local("safe.log", b"safe\n", "5 0\n", marker=True)
    # A download cut short.
    (state / "filling").mkdir(parents=True, exist_ok=True)
    (state / "filling" / "fill-x").write_bytes(b"partial")

    server = await servers.start("--archive-idle=60", root=root)
    found = await server.until_logged(rb"resources on local disk")
    assert b"3 not yet in the bucket" in found[0]
    for name, state_said in (
        (b"ended", b"6 bytes, complete"),
        (b"midway", b"4 bytes, incomplete"),
        (b"grown", b"10 bytes, complete"),
    ):
        logged = await server.until_logged(rb"archived %s\.log: " % name)
        assert state_said in logged[0] and b"found at start-up" in logged[0]
    stored = objects(moto, s3env.bucket)
    assert stored[f"{PREFIX}/ended.log"] == b"ended\n"
    assert stored[f"{PREFIX}/midway.log"] == b"half"
    assert stored[f"{PREFIX}/grown.log"] == b"1234567890"
    assert metadata(moto, s3env.bucket, "midway.log")["complete"] == "0"
    assert not (state / "filling").exists()
    await server.until_logged(rb"torn\.log on local disk is shorter")
    for name, body, complete in (
        ("torn.log", b"t" * 100, "1"),
        ("evicted.log", b"evicted\n", "1"),
        ("safe.log", b"safe\n", "0"),
        ("midway.log", b"half", "0"),
    ):
        status, headers, got = await get(server.url(name))
        assert (status, got, headers["httpfstream-complete"]) == (200, body, complete)
    assert not [line for line in server.log if b"archived safe.log" in line]


def _twistd(root: Path, *args: str) -> tuple[int, list[str]]:
    """A twistd that should not start: its status and what it said."""
    result = subprocess.run(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "httpfstream",
            f"--root={root}",
            *args,
        ],
        capture_output=True,
        timeout=60,
    )
    text = (result.stdout + result.stderr).decode()
    said = [
        line
        for line in text.splitlines()
        if line.strip() and "starting up" not in line and "reactor class" not in line
    ]
    return result.returncode, said


@pytest.mark.parametrize(
    ("archive", "extra", "expected"),
    [
        ("http://bucket/p", (), "not an s3://BUCKET/PREFIX URL"),
        ("s3://no-such-bucket-here/p", (), "NoSuchBucket"),
        ("s3://{bucket}/p", ("--live-chunk=1KiB",), "--live-chunk: give 64KiB"),
        ("s3://{bucket}/p", ("--cache-size=lots",), "optionally with K, M, G or T"),
    ],
)
def test_a_wrong_archive_stops_it_at_once_with_one_line(
    s3env, tmp_path, archive, extra, expected
):
    status, said = _twistd(
        tmp_path / "root", f"--archive={archive.format(bucket=s3env.bucket)}", *extra
    )
    assert status == 1
    assert len(said) == 1, said
    assert said[0].startswith("httpfstream: --"), said[0]
    assert expected in said[0]


def test_an_archive_that_does_not_answer_stops_it_with_one_line(
    s3env, tmp_path, monkeypatch
):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    status, said = _twistd(tmp_path / "root", f"--archive=s3://{s3env.bucket}/p")
    assert status == 1
    assert len(said) == 1, said
    assert said[0].startswith(f"httpfstream: --archive s3://{s3env.bucket}/p: ")
    assert "refused" in said[0]
    assert time.monotonic() - started < 20
