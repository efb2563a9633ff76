"""
Unit tests with fakes, for what real timing would make slow or flaky:
`names`, the `stream` write queue and cursors over a fake file, the twistd
options.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from httpfstream.names import InvalidName, parse_name
from httpfstream.store import IStoreFile
from httpfstream.stream import (
    APPENDER_LOST,
    COMPLETE,
    FsyncPolicy,
    IFollowerSink,
    ResourceFull,
    Stream,
    WriteFailed,
)
from httpfstream.tap import Options, parse_size

# -- names ---------------------------------------------------------------------


@given(st.lists(st.binary(max_size=12), max_size=6))
def test_parsed_names_never_leave_the_root(segments):
    try:
        name = parse_name(segments)
    except InvalidName:
        return
    assert name
    for part in name:
        assert part not in ("", ".", "..")
        assert "/" not in part and "\0" not in part


def test_percent_encoded_slash_separates_segments():
    assert parse_name([b"a/b", b"c.log"]) == ("a", "b", "c.log")
    with pytest.raises(InvalidName):
        parse_name([b"a", b".."])
    with pytest.raises(InvalidName):
        parse_name([b"\xff"])


# -- stream over a fake file ---------------------------------------------------


@implementer(IStoreFile)
class FakeFile:
    """Each write waits until the test fires it."""

    def __init__(self) -> None:
        self.size = 0
        self.content = bytearray()
        self.writes: list[tuple[bytes, Deferred[None]]] = []
        self.syncs = 0

    def write(self, data: bytes, sync: bool) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.writes.append((data, d))
        return d

    def complete(self) -> bytes:
        data, d = self.writes.pop(0)
        self.content += data
        d.callback(None)
        return data

    def fail(self) -> None:
        _, d = self.writes.pop(0)
        d.errback(Failure(OSError(errno.EIO, "I/O error")))

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        return succeed(bytes(self.content[offset : offset + length]))

    def sync(self) -> Deferred[None]:
        self.syncs += 1
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.failures: list[Failure] = []

    def persisted(self, size: int) -> None:
        self.sizes.append(size)

    def failed(self, reason: Failure) -> None:
        self.failures.append(reason)

    def shutdown(self) -> None:
        pass


@implementer(IFollowerSink)
class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: tuple[int, str] | None = None

    def send(self, data: bytes) -> None:
        self.data += data

    def finish(self, code: int, reason: str) -> None:
        self.ended = (code, reason)


def make_stream(**kwargs) -> tuple[Stream, FakeFile, Observer]:
    file = FakeFile()
    stream = Stream(("s",), file, **kwargs)
    observer = Observer()
    stream.begin_session(observer)
    return stream, file, observer


def test_bytes_arriving_during_a_write_are_joined_into_the_next():
    stream, file, observer = make_stream()
    stream.append(b"a")
    stream.append(b"b")
    stream.append(b"c")
    assert [w[0] for w in file.writes] == [b"a"]
    assert file.complete() == b"a"
    assert [w[0] for w in file.writes] == [b"bc"]
    file.complete()
    assert observer.sizes == [1, 3]
    assert stream.size == 3


def test_queue_full_tells_the_appender_to_pause():
    stream, file, _ = make_stream(queue_size=10)
    stream.append(b"x" * 5)  # in flight, not queued
    stream.append(b"y" * 9)
    assert not stream.queue_full
    stream.append(b"z")
    assert stream.queue_full
    file.complete()
    assert not stream.queue_full


def test_resource_full_appends_nothing_of_the_crossing_message():
    stream, file, _ = make_stream(max_size=10)
    stream.append(b"x" * 6)
    with pytest.raises(ResourceFull):
        stream.append(b"y" * 5)  # counts the bytes still in flight
    file.complete()
    assert file.writes == []
    assert stream.size == 6


def test_write_failure_fails_flush_and_later_appends():
    stream, file, observer = make_stream()
    stream.append(b"kept")
    file.complete()
    stream.append(b"lost")
    flushed = stream.flush()
    file.fail()
    assert observer.failures
    assert isinstance(flushed.result.value, WriteFailed)
    flushed.addErrback(lambda f: None)
    with pytest.raises(WriteFailed):
        stream.append(b"more")
    assert stream.size == 4


def test_cursor_sends_from_its_offset_and_finishes_with_the_session_code():
    stream, file, _ = make_stream(tail_size=4, read_size=3)
    stream.append(b"0123456789")
    file.complete()
    sink = Sink()
    cursor = stream.follow(sink, 2)
    cursor.wake()
    assert bytes(sink.data) == b"23456789"  # from the file, then the tail
    cursor.pauseProducing()
    stream.append(b"ab")
    file.complete()
    assert bytes(sink.data) == b"23456789"
    cursor.resumeProducing()
    assert bytes(sink.data) == b"23456789ab"
    ended = stream.end_session(APPENDER_LOST, "appender lost")
    assert ended.result == 12
    assert sink.ended == (APPENDER_LOST, "appender lost")
    assert stream.idle


def test_end_session_persists_then_syncs_then_releases():
    stream, file, _ = make_stream(fsync=FsyncPolicy.CLOSE)
    sink = Sink()
    stream.follow(sink, 0).wake()
    stream.append(b"abc")
    ended = stream.end_session(COMPLETE)
    assert not ended.called and stream.active
    file.complete()
    assert ended.result == 3
    assert file.syncs == 1
    assert not stream.active
    assert sink.ended == (COMPLETE, "")
    assert bytes(sink.data) == b"abc"


def test_fsync_never_does_not_sync():
    stream, file, _ = make_stream(fsync=FsyncPolicy.NEVER)
    stream.append(b"x")
    file.complete()
    stream.end_session(COMPLETE)
    assert file.syncs == 0


# -- twistd options ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("100", 100), ("4K", 4096), ("16M", 16 << 20), ("2g", 2 << 30)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5M", "10X", "M"])
def test_parse_size_refuses(text):
    with pytest.raises(usage.UsageError):
        parse_size(text)


def test_options_defaults():
    options = Options()
    options.parseOptions([])
    assert dict(options) == {
        "root": "httpfstream-data",
        "port": "tcp:8080",
        "max-message-size": 16 << 20,
        "max-resource-size": 64 << 30,
        "fsync": FsyncPolicy.CLOSE,
        "ping-interval": 30,
        "ping-timeout": 30,
        "handshake-timeout": 10,
        "idle-timeout": 60,
        "max-followers": 20000,
        "max-followers-per-resource": 5000,
        "auth": None,
    }


def test_options_every_option_given(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token-0123456789 follow\n")
    options = Options()
    options.parseOptions(
        [
            "--root=/srv/logs",
            "--port=9000",  # a bare number means TCP
            "--max-message-size=1M",
            "--max-resource-size=2g",
            "--fsync=ALWAYS",
            "--ping-interval=0",
            "--ping-timeout=5",
            "--handshake-timeout=3",
            "--idle-timeout=0",
            "--max-followers=100",
            "--max-followers-per-resource=7",
            f"--auth={tokens}",
        ]
    )
    assert dict(options) == {
        "root": "/srv/logs",
        "port": "tcp:9000",
        "max-message-size": 1 << 20,
        "max-resource-size": 2 << 30,
        "fsync": FsyncPolicy.ALWAYS,
        "ping-interval": 0,
        "ping-timeout": 5,
        "handshake-timeout": 3,
        "idle-timeout": 0,
        "max-followers": 100,
        "max-followers-per-resource": 7,
        "auth": str(tokens),
    }


@pytest.mark.parametrize(
    "argv",
    [["--fsync", "sometimes"], ["--max-resource-size", "lots"], ["--ping-interval=-1"]],
)
def test_options_refuse_bad_values(argv):
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)
