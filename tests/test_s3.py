"""
The archive's S3 client (``httpfstream/shared/s3``) against a real S3 API
server, ``moto_server`` on 127.0.0.1 (`support.s3`), configured as a user
configures the AWS tools: through the environment and the shared files.
"""

from __future__ import annotations

import hashlib
import os
import re
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from support.proxies import TO_CLIENT, TO_SERVER, Forwarder
from support.s3 import ACCESS_KEY, MotoServer, S3Env
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater
from zope.interface import implementer

from httpfstream.shared.s3 import (
    MIN_PART_SIZE,
    ArchiveURL,
    S3Client,
    S3Denied,
    S3Error,
    S3NotFound,
    S3Unavailable,
    check_metadata,
    parse_archive_url,
)
from httpfstream.shared.s3.config import Endpoint, resolve_endpoint

MiB = 1024 * 1024


# Pure parts: the URL, the addressing, the metadata.


def test_archive_urls() -> None:
    assert parse_archive_url("s3://logs-bucket") == ArchiveURL("logs-bucket", "")
    where = parse_archive_url("s3://my.logs-1/ci/finished/")
    assert where == ArchiveURL("my.logs-1", "ci/finished")
    assert where.key(("a b", "build.log")) == "ci/finished/a b/build.log"
    assert where.key("x.log") == "ci/finished/x.log"
    assert where.key_prefix == "ci/finished/"
    assert where.name_of("ci/finished/a b/build.log") == ("a b", "build.log")
    assert where.name_of("elsewhere/build.log") is None
    assert where.name_of("ci/finished/") is None
    assert str(where) == "s3://my.logs-1/ci/finished"
    top = parse_archive_url("s3://logs-bucket/")
    assert top.key(("x",)) == "x" and top.name_of("x") == ("x",)
    for bad in (
        "http://bucket/p",
        "bucket/p",
        "s3://x/p",  # too short a name
        "s3://Upper/p",
        "s3://-dash/p",
        "s3://a..b/p",
        "s3://user@bucket/p",
        "s3://bucket:9000/p",
        "s3://bucket/p?versionId=1",
        "s3://bucket/a//b",
        "s3://bucket/a/../b",
        "s3://" + "b" * 64,
    ):
        with pytest.raises(ValueError):
            parse_archive_url(bad)
    with pytest.raises(ValueError):
        where.key(())


def test_addressing_style() -> None:
    aws = Endpoint("https://s3.eu-west-1.amazonaws.com", "eu-west-1", False)
    assert aws.object_url("logs", "ci/a b+c~/ü.log") == (
        "https://logs.s3.eu-west-1.amazonaws.com/ci/a%20b%2Bc~/%C3%BC.log"
    )
    # Dotted names would break the certificate's wildcard: path style.
    assert aws.bucket_url("my.logs") == "https://s3.eu-west-1.amazonaws.com/my.logs"
    minio = Endpoint("http://minio:9000", "us-east-1", True)
    assert minio.object_url("logs", "x/y") == "http://minio:9000/logs/x/y"


def test_the_standard_configuration_is_read(tmp_path: Path, monkeypatch: Any) -> None:
    """
    Region, endpoint and addressing as the AWS tools read them (botocore
    itself does; nothing here touches the network).
    """
    import botocore.session

    env = S3Env(None, "", tmp_path)

    def resolved(**overrides: str | None) -> Endpoint:
        env.apply(monkeypatch, **overrides)
        endpoint, credentials = resolve_endpoint(botocore.session.get_session())
        assert credentials.access_key == ACCESS_KEY
        return endpoint

    # AWS itself: virtual-host style, the region's endpoint.
    assert resolved(AWS_DEFAULT_REGION="eu-west-1") == Endpoint(
        "https://s3.eu-west-1.amazonaws.com", "eu-west-1", False
    )
    # AWS_REGION, which botocore alone would not read.
    assert resolved(AWS_DEFAULT_REGION=None, AWS_REGION="eu-west-2").region == (
        "eu-west-2"
    )
    assert resolved(AWS_DEFAULT_REGION=None).region == "us-east-1"
    # A configured endpoint (service-specific first): path style.
    assert resolved(
        AWS_ENDPOINT_URL="http://ceph:7480", AWS_ENDPOINT_URL_S3="http://minio:9000/"
    ) == Endpoint("http://minio:9000", "us-east-1", True)
    assert resolved(AWS_ENDPOINT_URL="http://ceph:7480").url == "http://ceph:7480"
    # The profile: endpoint, region, virtual-host style asked for, CA bundle.
    (tmp_path / "config").write_text(
        "[profile archive]\nregion = ap-south-1\nendpoint_url = https://r2.example\n"
        "ca_bundle = /etc/ssl/example.pem\ns3 =\n  addressing_style = virtual\n"
    )
    assert resolved(AWS_PROFILE="archive", AWS_DEFAULT_REGION=None) == Endpoint(
        "https://r2.example", "ap-south-1", False, "/etc/ssl/example.pem"
    )
    # AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, as botocore has it.
    ignored = resolved(
        AWS_ENDPOINT_URL_S3="http://minio:9000",
        AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true",
    )
    assert ignored == Endpoint("https://s3.amazonaws.com", "us-east-1", False)


def test_metadata_must_come_back_as_given() -> None:
    assert check_metadata({"complete": "0", "size": "12"}) == {
        "x-amz-meta-complete": "0",
        "x-amz-meta-size": "12",
    }
    for bad in (
        {"Complete": "1"},
        {"a b": "1"},
        {"x": " padded"},
        {"x": "é"},
        {"x": "a\nb"},
        {"x": "y" * 2048},
    ):
        with pytest.raises(ValueError):
            check_metadata(bad)


# Against moto_server.


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3env(moto: MotoServer, tmp_path: Path, monkeypatch: Any) -> S3Env:
    """A new bucket, and the environment that points the AWS tools at it."""
    env = S3Env(moto, moto.new_bucket(), tmp_path)
    env.apply(monkeypatch)
    return env


async def connect(bucket: str, **options: Any) -> S3Client:
    options.setdefault("part_size", MIN_PART_SIZE)
    client = await S3Client.from_environment(f"s3://{bucket}/archive", **options)
    assert client.endpoint.path_style
    return client


@pytest_twisted.async_yield_fixture
async def client(s3env: S3Env) -> AsyncIterator[S3Client]:
    made = await connect(s3env.bucket)
    yield made
    await made.close()


def random_file(path: Path, size: int, seed: int = 0) -> bytes:
    data = hashlib.shake_256(b"%d" % seed).digest(size)
    path.write_bytes(data)
    return data


@implementer(IConsumer)
class Collect:
    """A consumer that keeps (or only hashes) what it gets, and can pause."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.data = bytearray()
        self.count = 0
        self.digest = hashlib.sha256()
        self.producer: IPushProducer | None = None
        self.registered = self.unregistered = 0
        self.first: Deferred[None] = Deferred()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        assert streaming
        self.producer = producer
        self.registered += 1

    def unregisterProducer(self) -> None:
        self.unregistered += 1

    def write(self, data: bytes) -> None:
        self.count += len(data)
        self.digest.update(data)
        if self.keep:
            self.data += data
        if not self.first.called:
            self.first.callback(None)


async def test_a_multipart_object_round_trips_with_its_metadata(
    client: S3Client, moto: MotoServer, s3env: S3Env, tmp_path: Path
) -> None:
    """
    Three full parts and a short one, then the object read back whole by
    this client and by botocore: the same bytes, the same metadata.
    """
    size = 3 * MIN_PART_SIZE + 12345
    data = random_file(tmp_path / "build.log", size)
    key = client.archive.key(("ci", "build 1.log"))
    meta = {"complete": "1", "size": str(size), "code": "1000"}
    tracemalloc.start()
    try:
        put = await client.put_file(key, tmp_path / "build.log", meta, "text/plain")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB, peak  # streamed from the file: not even a part
    assert (put.size, put.metadata) == (size, meta)
    assert put.etag.endswith('-4"')  # S3's ETag of a four-part object
    head = await client.head(key)
    assert head is not None
    assert (head.size, head.metadata, head.content_type) == (size, meta, "text/plain")
    assert head.etag == put.etag
    got = Collect()
    assert await client.get(key, got) == size
    assert bytes(got.data) == data
    assert (got.registered, got.unregistered) == (1, 1)
    # The same through botocore's own client.
    answer = moto.client().get_object(Bucket=s3env.bucket, Key=key)
    assert answer["Metadata"] == meta and answer["Body"].read() == data
    # Nothing left open.
    assert await client.uploads(client.archive.key_prefix) == []


async def test_a_small_file_is_one_put(client: S3Client, tmp_path: Path) -> None:
    data = random_file(tmp_path / "small.log", 1000)
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    put = await client.put_file(client.archive.key("small.log"), tmp_path / "small.log")
    assert put.etag == f'"{hashlib.md5(data).hexdigest()}"'  # one PUT's ETag
    await client.put_file(client.archive.key("empty.log"), empty, {"complete": "0"})
    head = await client.head(client.archive.key("empty.log"))
    assert head is not None and (head.size, head.metadata) == (0, {"complete": "0"})
    got = Collect()
    assert await client.get(client.archive.key("empty.log"), got) == 0
    assert got.data == b""


async def test_a_ranged_get_streams_with_backpressure(
    client: S3Client, tmp_path: Path
) -> None:
    """
    The middle 24 MiB of a 32 MiB object to a consumer that pauses: while
    paused, (almost) nothing more arrives; the memory the download takes
    stays far below what it reads (the answer is never held whole).
    """
    data = random_file(tmp_path / "big.log", 32 * MiB, seed=1)
    key = client.archive.key("big.log")
    await client.put_file(key, tmp_path / "big.log")
    got = Collect(keep=False)
    start, length = 4 * MiB + 7, 24 * MiB
    tracemalloc.start()
    try:
        download = client.get(key, got, start, length)
        await got.first
        assert got.producer is not None
        got.producer.pauseProducing()
        paused_at = got.count
        # Nothing can be awaited for "nothing more comes": give it time.
        await deferLater(reactor, 0.5, lambda: None)
        during_pause = got.count - paused_at
        got.producer.resumeProducing()
        assert await download.addTimeout(60, reactor) == length
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.digest.digest() == hashlib.sha256(data[start : start + length]).digest()
    assert during_pause <= 256 * 1024, during_pause  # what was already read
    assert peak < 4 * MiB, peak
    # An open end, and a zero length.
    tail = Collect()
    assert await client.get(key, tail, 32 * MiB - 10) == 10
    assert bytes(tail.data) == data[-10:]
    assert await client.get(key, Collect(), 5, 0) == 0


async def test_a_consumer_can_stop_a_download(client: S3Client, tmp_path: Path) -> None:
    random_file(tmp_path / "f", 8 * MiB)
    key = client.archive.key("f")
    await client.put_file(key, tmp_path / "f")
    got = Collect(keep=False)
    download = client.get(key, got)
    await got.first
    assert got.producer is not None
    got.producer.stopProducing()
    with pytest.raises(CancelledError):
        await download
    assert got.unregistered == 1 and got.count < 8 * MiB
    # The client goes on.
    assert (await client.head(key)) is not None


async def test_a_cancelled_download_stops(client: S3Client, tmp_path: Path) -> None:
    random_file(tmp_path / "f", 8 * MiB)
    key = client.archive.key("f")
    await client.put_file(key, tmp_path / "f")
    got = Collect(keep=False)
    download = client.get(key, got)
    await got.first
    download.cancel()
    with pytest.raises(CancelledError):
        await download
    assert got.unregistered == 1
    count = got.count
    await deferLater(reactor, 0.2, lambda: None)  # nothing comes after
    assert got.count == count < 8 * MiB


async def test_missing_objects(client: S3Client) -> None:
    key = client.archive.key("nothing.log")
    assert await client.head(key) is None
    got = Collect()
    with pytest.raises(S3NotFound) as caught:
        await client.get(key, got)
    assert caught.value.code == "NoSuchKey" and caught.value.status == 404
    assert not caught.value.retryable
    assert "GetObject archive/nothing.log: 404 NoSuchKey" in str(caught.value)
    assert got.registered == 0
    await client.delete(key)  # S3 says the same whether it was there or not
    await client.check()
    other = S3Client(
        ArchiveURL("no-such-bucket-here"), client.endpoint, client._signer._credentials
    )
    try:
        with pytest.raises(S3Error) as no_bucket:
            await other.check()
        assert no_bucket.value.code == "NoSuchBucket"
        with pytest.raises(S3Error) as listing:
            await other.list_page()
        assert listing.value.code == "NoSuchBucket"
        assert not isinstance(listing.value, S3NotFound)
    finally:
        await other.close()


async def test_list_pages_through_a_prefix(
    client: S3Client, tmp_path: Path, moto: MotoServer, s3env: S3Env
) -> None:
    """More keys than a page; keys that need encoding; nothing from elsewhere."""
    body = tmp_path / "b"
    body.write_bytes(b"x")
    names = [f"run {i:02d}+ü/log" for i in range(25)]
    s3 = moto.client()
    for name in names:
        s3.put_object(Bucket=s3env.bucket, Key=client.archive.key(name), Body=b"x")
    for other in ("archived", "archive-other/x", "x"):
        s3.put_object(Bucket=s3env.bucket, Key=other, Body=b"x")
    prefix = client.archive.key_prefix
    first = await client.list_page(prefix, max_keys=10)
    assert len(first.objects) == 10 and first.next_token
    second = await client.list_page(prefix, first.next_token, 10)
    third = await client.list_page(prefix, second.next_token, 10)
    assert len(second.objects) == 10 and len(third.objects) == 5
    assert third.next_token is None
    keys = [o.key for page in (first, second, third) for o in page.objects]
    assert keys == [client.archive.key(n) for n in sorted(names)]
    every = await client.list(prefix, page_size=7)
    assert [o.key for o in every] == keys
    assert {o.size for o in every} == {1}
    assert client.archive.name_of(every[0].key) == ("run 00+ü", "log")
    assert len(await client.list()) == 28


async def test_delete(client: S3Client, tmp_path: Path) -> None:
    random_file(tmp_path / "gone.log", 10)
    key = client.archive.key("gone.log")
    await client.put_file(key, tmp_path / "gone.log")
    assert [o.key for o in await client.list(client.archive.key_prefix)] == [key]
    await client.delete(key)
    assert await client.head(key) is None
    assert await client.list(client.archive.key_prefix) == []


async def test_a_cancelled_upload_is_aborted(
    client: S3Client, tmp_path: Path, moto: MotoServer, s3env: S3Env, monkeypatch: Any
) -> None:
    random_file(tmp_path / "f", 4 * MIN_PART_SIZE)
    key = client.archive.key("f")
    first_part: Deferred[None] = Deferred()
    put_range = client._put_range

    async def one_part(operation: str, *args: Any) -> str:
        etag = await put_range(operation, *args)
        if operation == "UploadPart" and not first_part.called:
            first_part.callback(None)
        return etag

    monkeypatch.setattr(client, "_put_range", one_part)
    upload = client.put_file(key, tmp_path / "f")
    await first_part
    assert len(await client.uploads()) == 1  # S3 holds the upload open
    upload.cancel()
    with pytest.raises(CancelledError):
        await upload
    assert await client.uploads() == []  # aborted
    assert await client.head(key) is None
    # An upload left open (a server that died) is found and aborted.
    begun = moto.client().create_multipart_upload(Bucket=s3env.bucket, Key=key)
    (left,) = await client.uploads(client.archive.key_prefix)
    assert (left.key, left.upload_id) == (key, begun["UploadId"])
    await client.abort_upload(key, left.upload_id)
    assert await client.uploads() == []


async def test_a_failed_upload_is_aborted(client: S3Client, tmp_path: Path) -> None:
    """
    Parts under S3's 5 MiB minimum (forced past the client's own check):
    S3 refuses to complete the upload (``EntityTooSmall``), and the client
    aborts it, leaving neither an object nor an open upload.
    """
    random_file(tmp_path / "f", 3 * MiB)
    client.part_size = MiB
    key = client.archive.key("f")
    with pytest.raises(S3Error) as caught:
        await client.put_file(key, tmp_path / "f")
    assert caught.value.code == "EntityTooSmall"
    assert caught.value.operation == "CompleteMultipartUpload"
    assert await client.uploads() == []
    assert await client.head(key) is None


async def test_nothing_blocks_the_reactor(
    s3env: S3Env, tmp_path: Path, monkeypatch: Any
) -> None:
    """
    The reactor keeps turning (a timer called at every turn ticks) while
    botocore reads the configuration and credentials, while each part is
    hashed, and during each part's upload: what blocks runs in threads.
    """
    from httpfstream.shared.s3 import client as module

    ticks = 0

    def tick() -> None:
        nonlocal ticks
        ticks += 1

    spans: dict[str, list[int]] = {"resolve": [], "hash": [], "part": []}

    def counted(kind: str, f: Any) -> Any:
        def call(*args: Any) -> Any:
            start = ticks
            result = f(*args)
            spans[kind].append(ticks - start)
            return result

        return call

    monkeypatch.setattr(
        module, "resolve_endpoint", counted("resolve", resolve_endpoint)
    )
    monkeypatch.setattr(module, "sha256_of", counted("hash", module.sha256_of))
    timer = LoopingCall(tick)
    timer.start(0)
    try:
        # Parts large enough that hashing one takes a while (20 ms or so).
        client = await connect(s3env.bucket, part_size=24 * MiB)
        random_file(tmp_path / "f", 60 * MiB)
        put_range = client._put_range

        async def part(*args: Any) -> str:
            start = ticks
            etag = await put_range(*args)
            spans["part"].append(ticks - start)
            return etag

        client._put_range = part  # type: ignore[method-assign]
        await client.put_file(client.archive.key("f"), tmp_path / "f")
        await client.close()
    finally:
        timer.stop()
    assert len(spans["resolve"]) == 1 and len(spans["hash"]) == len(spans["part"]) == 3
    assert all(n > 0 for n in spans["resolve"] + spans["hash"] + spans["part"]), spans


async def test_an_unreachable_endpoint_is_retryable(
    s3env: S3Env, monkeypatch: Any
) -> None:
    """A closed port, then a port that accepts and never answers."""
    from support.s3 import free_port

    s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}")
    client = await connect(s3env.bucket, attempts=2)
    try:
        with pytest.raises(S3Unavailable) as caught:
            await client.head(client.archive.key("x")).addTimeout(20, reactor)
        assert caught.value.retryable and caught.value.status is None
        assert "refused" in caught.value.message.lower()
    finally:
        await client.close()
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    port = silent.getHost().port
    s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}")
    client = await connect(s3env.bucket, attempts=1, timeout=0.5)
    try:
        with pytest.raises(S3Unavailable) as caught:
            await client.list_page().addTimeout(20, reactor)
        assert caught.value.message == "no answer in 0.5s"
    finally:
        await client.close()
        await silent.stopListening()


class _Faulty(Forwarder):
    """Cuts every connection once, or stalls the answers, after some bytes."""

    def __init__(self, target: int, cut_after: int = 0, stall_after: int = 0) -> None:
        super().__init__(target)
        self.cut_after, self.stall_after = cut_after, stall_after
        self.passed = {TO_SERVER: 0, TO_CLIENT: 0}

    def passing(self, conn: Any, direction: str, data: bytes) -> None:
        self.passed[direction] += len(data)
        if (
            self.cut_after
            and direction == TO_SERVER
            and (self.passed[direction] > self.cut_after)
        ):
            self.cut_after = 0
            reactor.callLater(0, self.cut)
        if (
            self.stall_after
            and direction == TO_CLIENT
            and (self.passed[direction] > self.stall_after)
        ):
            self.stalled[TO_CLIENT] = True
            self.hold_closes = True


async def test_a_cut_connection_is_tried_again(
    s3env: S3Env, moto: MotoServer, tmp_path: Path, monkeypatch: Any
) -> None:
    data = random_file(tmp_path / "f", 2 * MIN_PART_SIZE + 1)
    proxy = _Faulty(moto.port, cut_after=MIN_PART_SIZE + MiB)  # within part 2
    s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{proxy.port}")
    client = await connect(s3env.bucket)
    try:
        key = client.archive.key("f")
        await client.put_file(key, tmp_path / "f")
        assert proxy.cut_after == 0  # it did cut
        got = Collect()
        await client.get(key, got)
        assert bytes(got.data) == data
    finally:
        await client.close()
        await proxy.stop()


class _Recording(Forwarder):
    """Keeps what the client sends."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.sent = bytearray()

    def passing(self, conn: Any, direction: str, data: bytes) -> None:
        if direction == TO_SERVER:
            self.sent += data


async def test_each_body_is_signed_with_its_sha256(
    s3env: S3Env, moto: MotoServer, tmp_path: Path, monkeypatch: Any
) -> None:
    """
    What goes on the wire: every PUT (each part) carries its body's own
    SHA-256 in the signed ``x-amz-content-sha256`` (moto does not compare
    it with the body, so this reads the requests themselves).
    """
    size = 2 * MIN_PART_SIZE + 100
    data = random_file(tmp_path / "f", size)
    proxy = _Recording(moto.port)
    s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{proxy.port}")
    client = await connect(s3env.bucket)
    try:
        await client.put_file(client.archive.key("f"), tmp_path / "f")
    finally:
        await client.close()
        await proxy.stop()
    heads = re.findall(rb"PUT /[^\r\n]* HTTP/1.1\r\n(?:[^\r\n]+\r\n)*", proxy.sent)
    signed = [
        line.split(b":", 1)[1].strip().decode()
        for head in heads
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-amz-content-sha256:")
    ]
    parts = [data[i : i + MIN_PART_SIZE] for i in range(0, size, MIN_PART_SIZE)]
    assert signed == [hashlib.sha256(p).hexdigest() for p in parts]
    assert all(
        b"x-amz-content-sha256" in h.split(b"Signature=")[0].lower() for h in heads
    )


async def test_a_stalled_download_ends_retryable(
    s3env: S3Env, moto: MotoServer, tmp_path: Path, monkeypatch: Any
) -> None:
    random_file(tmp_path / "f", 4 * MiB)
    proxy = _Faulty(moto.port)
    s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{proxy.port}")
    client = await connect(s3env.bucket, timeout=1)
    try:
        key = client.archive.key("f")
        await client.put_file(key, tmp_path / "f")
        proxy.stall_after = proxy.passed[TO_CLIENT] + MiB
        got = Collect(keep=False)
        with pytest.raises(S3Unavailable) as caught:
            await client.get(key, got).addTimeout(20, reactor)
        assert "no data for 1s" in caught.value.message
        assert MiB // 2 < got.count < 4 * MiB and got.unregistered == 1
    finally:
        await client.close()
        await proxy.stop()


async def test_https_with_the_configured_authorities(
    s3env: S3Env, moto: MotoServer, tmp_path: Path, monkeypatch: Any
) -> None:
    """
    An https endpoint (TLS in front of moto, a throwaway authority):
    trusted through ``AWS_CA_BUNDLE``; without it, a TLS failure that is
    not worth retrying.
    """
    from support.processes import tls_files
    from twisted.internet.endpoints import serverFromString
    from twisted.protocols.portforward import ProxyFactory

    key_pem, cert_pem, ca = tls_files(tmp_path)
    front = await serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key_pem}:certKey={cert_pem}"
    ).listen(ProxyFactory("127.0.0.1", moto.port))
    url = f"https://localhost:{front.getHost().port}"
    (tmp_path / "f").write_bytes(b"over TLS")
    try:
        s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=url, AWS_CA_BUNDLE=str(ca))
        client = await connect(s3env.bucket)
        try:
            assert client.endpoint.ca_bundle == str(ca)
            await client.put_file(client.archive.key("f"), tmp_path / "f")
            got = Collect()
            await client.get(client.archive.key("f"), got)
            assert got.data == b"over TLS"
        finally:
            await client.close()
        s3env.apply(monkeypatch, AWS_ENDPOINT_URL_S3=url)
        client = await connect(s3env.bucket)
        try:
            with pytest.raises(S3Error) as caught:
                await client.head(client.archive.key("f"))
            assert caught.value.code == "TLSError" and not caught.value.retryable
        finally:
            await client.close()
    finally:
        await front.stopListening()


async def test_expiring_credentials_are_refreshed_in_a_thread(
    s3env: S3Env, moto: MotoServer
) -> None:
    """
    Credentials that expire (an instance role, SSO): fresh ones are read
    in the reactor; near their expiry they are refreshed once, in a
    thread, however many requests wait for them.
    """
    import threading
    from datetime import UTC, datetime, timedelta

    from botocore.credentials import RefreshableCredentials

    refreshes: list[str] = []

    def metadata(minutes: int) -> dict[str, str]:
        expiry = datetime.now(UTC) + timedelta(minutes=minutes)
        return {
            "access_key": ACCESS_KEY,
            "secret_key": "refreshed",
            "token": "session",
            "expiry_time": expiry.isoformat(),
        }

    def refresh() -> dict[str, str]:
        refreshes.append(threading.current_thread().name)
        return metadata(60)

    endpoint = Endpoint(moto.url, "us-east-1", True)
    fresh = RefreshableCredentials.create_from_metadata(metadata(30), refresh, "test")
    client = S3Client(ArchiveURL(s3env.bucket), endpoint, fresh)
    try:
        assert await client.head("k") is None
        assert refreshes == []  # 30 minutes left: nothing to do
    finally:
        await client.close()
    expiring = RefreshableCredentials.create_from_metadata(metadata(5), refresh, "t")
    client = S3Client(ArchiveURL(s3env.bucket), endpoint, expiring)
    try:
        heads = [client.head(f"k{i}") for i in range(3)]
        for head in heads:
            assert await head is None
        assert len(refreshes) == 1
        assert refreshes[0] != threading.current_thread().name
        assert expiring.get_frozen_credentials().secret_key == "refreshed"
    finally:
        await client.close()


@pytest.fixture
def checking() -> Iterator[tuple[MotoServer, str, str]]:
    """A moto_server of its own that checks keys and signatures."""
    server = MotoServer()
    try:
        key, secret = server.check_credentials()
        yield server, key, secret
    finally:
        server.stop()


async def test_bad_credentials_are_denied(
    checking: tuple[MotoServer, str, str], tmp_path: Path, monkeypatch: Any
) -> None:
    """
    moto checks signatures once told to (``/moto-api/reset-auth``): the
    right keys from the shared credentials file work; a wrong secret or an
    unknown key is `S3Denied`, with S3's code.
    """
    server, key, secret = checking
    bucket = "hfs-checked"
    env = S3Env(server, bucket, tmp_path)
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    (tmp_path / "config").write_text(
        f"[default]\nregion = us-east-1\nendpoint_url = {server.url}\n"
    )
    env.apply(
        monkeypatch,
        AWS_ACCESS_KEY_ID=None,
        AWS_SECRET_ACCESS_KEY=None,
        AWS_ENDPOINT_URL_S3=None,
        AWS_DEFAULT_REGION=None,
    )
    server.client(access_key=key, secret_key=secret).create_bucket(Bucket=bucket)
    client = await connect(bucket)
    try:
        await client.check()
        (tmp_path / "f").write_bytes(b"kept")
        await client.put_file(client.archive.key("f"), tmp_path / "f")
    finally:
        await client.close()
    for access, wrong, code in (
        (key, "not-the-secret", "SignatureDoesNotMatch"),
        ("AKIANOSUCHKEY0000000", secret, "InvalidAccessKeyId"),
    ):
        env.apply(monkeypatch, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=wrong)
        client = await connect(bucket)
        try:
            with pytest.raises(S3Denied) as caught:
                await client.get(client.archive.key("f"), Collect())
            assert (caught.value.status, caught.value.code) == (403, code)
            assert not caught.value.retryable
            with pytest.raises(S3Denied):
                await client.head(client.archive.key("f"))
            with pytest.raises(S3Denied):
                await client.put_file(client.archive.key("g"), tmp_path / "f")
            with pytest.raises(S3Denied):
                await client.check()
        finally:
            await client.close()


async def test_no_credentials_at_all(s3env: S3Env, monkeypatch: Any) -> None:
    s3env.apply(monkeypatch, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    with pytest.raises(S3Error) as caught:
        await connect(s3env.bucket)
    assert caught.value.code == "NoCredentials"


def test_a_file_is_closed_after_its_last_read() -> None:
    """
    An upload's file is read only through the thread callable given, and
    a read still running in its thread when the upload ends (cancelled)
    keeps the file open until it is done.
    """
    from httpfstream.shared.s3.transfer import FileRange, OpenFile

    jobs: list[Any] = []

    def in_thread(job: Any) -> Deferred[Any]:
        jobs.append(job)
        return Deferred()

    fd = os.open(__file__, os.O_RDONLY)
    file = OpenFile(fd, in_thread, lambda f: f())
    reading = FileRange(file, 0, 10).startProducing(Collect())  # type: ignore[arg-type]
    assert len(jobs) == 1
    reading.cancel()
    reading.addErrback(lambda f: f.trap(CancelledError))
    file.close()
    os.fstat(fd)  # still open: the read has not run
    jobs[0]()  # the thread runs it now
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(ValueError):
        file.run(os.fstat)
