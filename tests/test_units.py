"""
Unit tests with fakes, for what real timing would make slow or flaky:
`names`, the `stream` write queue and cursors over a fake file, the twistd
options.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fakes import FakeFile, Sink
from twisted.internet.defer import Deferred, succeed
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure

from httpfstream._borrowed import frame_bytes
from httpfstream.core.names import InvalidName, parse_name
from httpfstream.core.stream import (
    APPENDER_LOST,
    COMPLETE,
    Appending,
    Fenced,
    FsyncPolicy,
    ResourceFull,
    Stream,
    Tail,
    WriteFailed,
)
from httpfstream.tap import Options, parse_size
from httpfstream.web.followers import _framed

# -- names ---------------------------------------------------------------------


# No deadline: a loaded CI machine can take long over one example.
@settings(deadline=None)
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
    assert file.finish_write() == b"a"
    assert [w[0] for w in file.writes] == [b"bc"]
    file.finish_write()
    assert observer.sizes == [1, 3]
    assert stream.size == 3


def test_queue_full_tells_the_appender_to_pause():
    stream, file, _ = make_stream(queue_size=10)
    stream.append(b"x" * 5)  # in flight, not queued
    stream.append(b"y" * 9)
    assert not stream.queue_full
    stream.append(b"z")
    assert stream.queue_full
    file.finish_write()
    assert not stream.queue_full


def test_resource_full_appends_nothing_of_the_crossing_message():
    stream, file, _ = make_stream(max_size=10)
    stream.append(b"x" * 6)
    with pytest.raises(ResourceFull):
        stream.append(b"y" * 5)  # counts the bytes still in flight
    file.finish_write()
    assert file.writes == []
    assert stream.size == 6


def test_write_failure_fails_flush_and_later_appends():
    stream, file, observer = make_stream()
    stream.append(b"kept")
    file.finish_write()
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
    file.finish_write()
    sink = Sink()
    cursor = stream.follow(sink, 2)
    cursor.wake()
    assert bytes(sink.data) == b"23456789"  # from the file, then the tail
    cursor.pauseProducing()
    stream.append(b"ab")
    file.finish_write()
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
    file.finish_write()
    assert ended.result == 3
    assert file.syncs == 1
    assert not stream.active
    assert sink.ended == (COMPLETE, "")
    assert bytes(sink.data) == b"abc"


def test_fsync_never_does_not_sync():
    stream, file, _ = make_stream(fsync=FsyncPolicy.NEVER)
    stream.append(b"x")
    file.finish_write()
    stream.end_session(COMPLETE)
    assert file.syncs == 0


class SlowReadFile(FakeFile):
    """Reads wait until the test fires them; records when it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[int, int, Deferred[bytes]]] = []
        self.closed_with_reads_pending: bool | None = None

    def read(self, offset: int, length: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.reads.append((offset, length, d))
        return d

    def finish_read(self) -> None:
        offset, length, d = self.reads.pop(0)
        d.callback(bytes(self.content[offset : offset + length]))

    def close(self) -> Deferred[None]:
        self.closed_with_reads_pending = bool(self.reads)
        return succeed(None)


def test_file_is_closed_only_after_the_reads_in_flight():
    # A reader that goes away while its cursor reads the file (a cut-off
    # download) used to let the stream close the file under the read:
    # EBADF, or worse, a read of whatever file got the descriptor next.
    file = SlowReadFile()
    idle: list[Stream] = []
    stream = Stream(("s",), file, tail_size=0, on_idle=idle.append)
    stream.begin_session(Observer())
    # Two writes: the tail keeps the last one whatever its size, so the
    # first is read from the file.
    stream.append(b"01234")
    file.finish_write()
    stream.append(b"56789")
    file.finish_write()
    stream.end_session(COMPLETE)
    sink = Sink()
    cursor = stream.follow(sink, 0)
    cursor.wake()
    assert len(file.reads) == 1
    cursor.stop()
    assert stream.idle and idle[-1] is stream
    closed = stream.close()
    assert not closed.called
    assert file.closed_with_reads_pending is None
    file.finish_read()
    assert closed.called
    assert file.closed_with_reads_pending is False
    assert sink.data == b""  # nothing sent after stop


def test_growth_from_elsewhere_reaches_cursors_through_the_file():
    # The seam for several processes: the stream is told the file grew
    # (somebody else wrote it); its cursors read the new bytes from the file.
    file = FakeFile()
    file.content += b"abc"
    file.size = 3
    stream = Stream(("s",), file, tail_size=1 << 10)
    stream.began()  # an appender elsewhere holds the resource
    sink = Sink()
    cursor = stream.follow(sink, 0)
    cursor.wake()
    assert sink.data == b"abc"
    file.content += b"defg"
    stream.grown(7)
    assert sink.data == b"abcdefg"
    stream.grown(5)  # old news changes nothing
    assert stream.size == 7
    file.content += b"hi"
    stream.ended(9, APPENDER_LOST, "appender lost")
    assert sink.data == b"abcdefghi"
    assert sink.ended == (APPENDER_LOST, "appender lost")


def test_news_from_elsewhere_never_moves_a_session_here():
    # A server whose lease ran out while it was frozen still appends (its
    # session here) when the next holder's growth and end reach its feed:
    # its stream must not take them, or its appender's final ack would
    # count the other holder's bytes as its own.
    file = FakeFile()
    stream = Stream(("s",), file)
    observer = Observer()
    stream.begin_session(observer)
    stream.append(b"mine")
    file.finish_write()
    file.content += b"theirs"
    stream.grown(10)
    stream.ended(10, APPENDER_LOST, "appender lost")
    assert stream.size == 4
    assert stream.appending is Appending.HERE


def test_a_write_the_fence_stopped_part_way_counts_what_it_let_through():
    """
    The store's thread refused a write after part of it reached the file
    (`writes.write_fenced`): that part is persisted (the appender's final
    ack and the followers have it), what was queued behind it is never
    written, and no write failure is logged.
    """

    def fence() -> bool:
        return True  # the reactor's check; the thread's is the fake's

    file = FakeFile()
    stream = Stream(("s",), file)
    observer = Observer()
    stream.begin_session(observer, fence=fence)
    sink = Sink()
    stream.follow(sink, 0).wake()
    stream.append(b"first")
    assert file.fences == [fence]  # handed to the store with the write
    stream.append(b"queued")
    with capturedLogs() as logged:
        file.refuse(written=3)
    assert not file.writes
    assert bytes(file.content) == b"fir"
    assert stream.size == 3 and sink.data == b"fir"
    assert observer.sizes == [3]
    assert [f.check(Fenced) for f in observer.failures] == [Fenced]
    assert stream.appending is Appending.FAILED
    assert not [e for e in logged if e.get("log_failure")]


def test_who_appends_is_one_state_and_a_session_here_outranks_news_from_elsewhere():
    file = FakeFile()
    stream = Stream(("s",), file)
    assert stream.appending is Appending.NOBODY and not stream.active
    stream.began()
    assert stream.appending is Appending.ELSEWHERE and stream.active
    stream.ended(0, APPENDER_LOST, "appender lost")
    assert stream.appending is Appending.NOBODY and not stream.active
    stream.began()
    observer = Observer()
    stream.begin_session(observer, fence=lambda: True)
    assert stream.appending is Appending.HERE and stream.fence is not None
    stream.ended(0, APPENDER_LOST, "old news from elsewhere")
    assert stream.appending is Appending.HERE
    stream.append(b"x")
    stream.flush().addErrback(lambda f: None)
    file.fail()
    assert stream.appending is Appending.FAILED and stream.active
    with pytest.raises(WriteFailed):
        stream.check_append(1)
    stream.began()
    assert stream.appending is Appending.FAILED
    ended = stream.end_session(APPENDER_LOST, "write failed")
    assert ended.result == 0
    assert stream.appending is Appending.NOBODY and not stream.active
    assert stream.fence is None
    stream.begin_session(observer)
    assert stream.appending is Appending.HERE
    stream.check_append(1)  # a new session starts clean


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
        "port": ["tcp:8080"],
        "max-message-size": 16 << 20,
        "max-resource-size": 64 << 30,
        "text-frame-size": 10236,
        "fsync": FsyncPolicy.CLOSE,
        "ping-interval": 30,
        "ping-timeout": 30,
        "handshake-timeout": 10,
        "idle-timeout": 60,
        "header-timeout": 30,
        "max-followers": 20000,
        "max-followers-per-resource": 5000,
        "max-age": 0,
        "admin": None,
        "auth": None,
        "fin-ends-appender": 0,
        "text-frames": 0,
        "redis": None,
        "redis-password-file": None,
        "redis-lease": 10,
        "archive": None,
        "cache-size": 10 << 30,
        "archive-idle": 60,
        "live-chunk": 8 << 20,
        "live-max": 64 << 20,
    }


def test_options_every_option_given(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token-0123456789 follow\n")
    options = Options()
    options.parseOptions(
        [
            "--root=/srv/logs",
            "--port=9000",  # a bare number means TCP
            "-p",
            "ssl:8443:privateKey=key.pem:certKey=cert.pem",
            "--port",
            "unix:/run/httpfstream.sock",
            "--max-message-size=1M",
            "--max-resource-size=2g",
            "--text-frame-size=16K",
            "--fsync=ALWAYS",
            "--ping-interval=0",
            "--ping-timeout=5",
            "--handshake-timeout=3",
            "--idle-timeout=0",
            "--header-timeout=4",
            "--max-followers=100",
            "--max-followers-per-resource=7",
            "--max-age=30d",
            "--admin=9100",
            f"--auth={tokens}",
            "--fin-ends-appender",
            "--text-frames",
            "--redis=rediss://redis.example:6380/2",
            f"--redis-password-file={tokens}",
            "--redis-lease=5",
            "--archive=s3://logs/p",
            "--cache-size=512M",
            "--archive-idle=5m",
            "--live-chunk=1M",
            "--live-max=40M",
        ]
    )
    assert dict(options) == {
        "root": "/srv/logs",
        "port": [
            "tcp:9000",
            "ssl:8443:privateKey=key.pem:certKey=cert.pem",
            "unix:/run/httpfstream.sock",
        ],
        "max-message-size": 1 << 20,
        "max-resource-size": 2 << 30,
        "text-frame-size": 16 << 10,
        "fsync": FsyncPolicy.ALWAYS,
        "ping-interval": 0,
        "ping-timeout": 5,
        "handshake-timeout": 3,
        "idle-timeout": 0,
        "header-timeout": 4,
        "max-followers": 100,
        "max-followers-per-resource": 7,
        "max-age": 30 * 86400,
        "admin": "tcp:9100",
        "auth": str(tokens),
        "fin-ends-appender": 1,
        "text-frames": 1,
        "redis": "rediss://redis.example:6380/2",
        "redis-password-file": str(tokens),
        "redis-lease": 5,
        "archive": "s3://logs/p",
        "cache-size": 512 << 20,
        "archive-idle": 300,
        "live-chunk": 1 << 20,
        "live-max": 40 << 20,
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--fsync", "sometimes"],
        ["--max-resource-size", "lots"],
        ["--text-frame-size", "small"],
        ["--ping-interval=-1"],
        ["--max-age=3 years"],
        ["--redis-lease=0"],
        ["--redis-password-file=/x"],
        ["--cache-size=huge"],
        ["--archive-idle=a while"],
        ["--live-chunk=16K"],
        ["--live-max=16M", "--live-chunk=8M"],
    ],
)
def test_options_refuse_bad_values(argv):
    # In one line naming the option, as a SystemExit: twistd would print its
    # whole usage before a usage.UsageError (tests/test_startup.py).
    with pytest.raises(SystemExit) as refused:
        Options().parseOptions(argv)
    assert str(refused.value.code).startswith(f"httpfstream: {argv[0].split('=')[0]}")


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 1000),
    size=st.integers(0, 64),
    batches=st.lists(st.binary(min_size=1, max_size=40), max_size=30),
    reads=st.lists(st.tuples(st.integers(-10, 1300), st.integers(1, 80)), max_size=20),
)
def test_tail_reads_what_was_written(start, size, batches, reads):
    # The tail against a plain buffer of everything written: whatever it
    # still holds reads back exactly, it holds at least ``size`` bytes and
    # the whole last batch, and a read from the start of the last batch
    # gives that very object (what lets followers share one frame).
    tail = Tail(start, size)
    written = bytearray()
    for batch in batches:
        tail.add(batch)
        written += batch
        assert tail.end == start + len(written)
        assert tail.end - tail.start >= min(size, len(written))
        assert tail.start <= tail.end - len(batch)
        # What it dropped is freed at once: it holds only its window.
        assert sum(map(len, tail._chunks)) == tail.end - tail.start
        assert tail.read(tail.end - len(batch), len(batch)) is batch
        for offset, length in reads:
            got = tail.read(offset, length)
            if tail.start <= offset < tail.end:
                at = offset - start
                assert got == bytes(written[at : at + length])
            else:
                assert got is None
    tail.reset(start + len(written) + 5)
    assert tail.read(tail.start, 10) is None


def test_a_caught_up_cursor_never_reads_the_file_for_a_batch_bigger_than_the_tail():
    # One write bigger than the tail (the appender's queue filled while
    # the previous write was in flight) still reaches a caught-up cursor
    # from memory, and two caught-up cursors send the same bytes object.
    file = SlowReadFile()
    stream = Stream(("s",), file, tail_size=4, read_size=1 << 10)
    stream.begin_session(Observer())
    sinks = [Sink(), Sink()]
    cursors = [stream.follow(sink, 0) for sink in sinks]
    stream.append(b"a" * 100)
    file.finish_write()
    assert not file.reads
    assert [sink.data for sink in sinks] == [b"a" * 100] * 2
    assert sinks[0].sent[-1] is sinks[1].sent[-1]
    for cursor in cursors:
        cursor.stop()


def test_a_tail_of_many_tiny_writes_stays_a_few_pieces():
    # A million one-byte writes must not become a million objects, nor a
    # read across them a piece each (the hostile-input test timed out on
    # that): small batches that are no longer the last are joined.
    tail = Tail(0, 64 << 10)
    written = bytearray()
    for i in range(100_000):
        batch = bytes([i % 251])
        tail.add(batch)
        written += batch
    assert len(tail._chunks) - tail._first <= 8
    assert tail.read(tail.start, 40_000) == bytes(
        written[tail.start : tail.start + 40_000]
    )
    last = bytes([7])
    tail.add(last)
    assert tail.read(tail.end - 1, 10) is last


def test_one_frame_per_bytes_object_and_frame_type():
    from httpfstream.web.followers import _LastFrame

    frames = _LastFrame()
    data = b"shared by every caught-up follower"
    binary = frames.frame(data, text=False)
    text = frames.frame(data, text=True)
    assert binary[0] == 0x82 and text[0] == 0x81
    assert binary[2:] == text[2:] == data
    # Followers of both kinds, in any order: each kind framed once.
    assert frames.frame(data, text=False) is binary
    assert frames.frame(data, text=True) is text
    # Equal bytes in another object are framed anew (never a stale frame).
    other = bytes(bytearray(data))
    assert frames.frame(other, text=False) is not binary


@pytest.mark.parametrize("n", [0, 1, 125, 126, 10_235, 10_236, 10_237, 30_708, 65_536])
@pytest.mark.parametrize("size", [0, 1, 10_236, 65_536])
@pytest.mark.parametrize("text", [True, False])
def test_followers_cut_messages_as_autobahn_frames_them(n, size, text):
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    pieces = [data[i : i + size] for i in range(0, n, size)] if 0 < size < n else [data]
    assert _framed(data, text, size) == b"".join(frame_bytes(p, text) for p in pieces)
