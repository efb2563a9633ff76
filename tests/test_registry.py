"""
`StreamRegistry` over a fake store and a `task.Clock`: the appender slot,
cancellation while a resource opens, and shutdown, including the forced
close when a session never ends.
"""

from __future__ import annotations

import pytest
from support.fakes import FakeFile, FakeStore, Sink
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from httpfstream.core.registry import Refusal, StreamRegistry
from httpfstream.protocol import GOING_AWAY, ResourceState

NAME = ("a.log",)


def make_registry(**options) -> tuple[StreamRegistry, FakeStore, Clock]:
    clock = Clock()
    store = FakeStore()
    registry = StreamRegistry("unused", reactor=clock, store=store, **options)
    registry.startService()
    return registry, store, clock


def test_of_two_racing_appenders_exactly_one_wins():
    registry, store, _ = make_registry()
    first = registry.begin_append(NAME)
    second = registry.begin_append(NAME)
    # The second is refused without opening anything...
    assert len(store.opens) == 1
    store.finish_opens()
    session = first.result
    assert registry.active(NAME)
    # ...with what a 409 says: held, and the size.
    assert isinstance(second.result.value, Refusal)
    assert second.result.value.code == 409
    assert second.result.value.state == ResourceState(True, 0)
    second.addErrback(lambda f: None)
    session.end(1000)
    assert not registry.active(NAME)


def test_an_offset_mismatch_gives_the_slot_back():
    registry, store, _ = make_registry()
    store.files[NAME] = FakeFile(b"abc")
    d = registry.begin_append(NAME, expected_size=5)
    store.finish_opens()
    assert isinstance(d.result.value, Refusal)
    assert d.result.value.code == 412
    assert d.result.value.state == ResourceState(False, 3)
    d.addErrback(lambda f: None)
    assert not registry.active(NAME)
    assert registry.streams == 0


def test_cancelled_open_releases_the_stream_once_it_is_open():
    registry, store, _ = make_registry()
    store.files[NAME] = FakeFile(b"abc")
    d = registry.open(NAME)
    d.cancel()
    assert isinstance(d.result.value, CancelledError)
    d.addErrback(lambda f: None)
    idle = registry.when_idle()
    assert not idle.called  # still opening
    store.finish_opens()
    assert idle.called
    assert store.files[NAME].closed


def test_cancelled_begin_append_ends_the_session_once_it_is_open():
    registry, store, _ = make_registry()
    d = registry.begin_append(NAME)
    d.cancel()
    d.addErrback(lambda f: None)
    assert registry.active(NAME)  # the claim stands until the open is done
    store.finish_opens()
    assert not registry.active(NAME)
    assert registry.when_idle().called
    assert registry.counters.ended  # the session was recorded as ended


def test_shutdown_ends_followers_with_1001_and_closes_files():
    registry, store, _ = make_registry()
    store.files[NAME] = FakeFile(b"abc")
    d = registry.open(NAME)
    store.finish_opens()
    stream = d.result
    sink = Sink()
    stream.follow(sink, 0)
    stream.release()
    stopped = registry.stopService()
    assert sink.ended == (GOING_AWAY, "server shutting down")
    assert stopped.called
    assert store.files[NAME].closed
    assert not store.running


def test_shutdown_closes_files_anyway_when_a_session_never_ends():
    registry, store, clock = make_registry(shutdown_timeout=15)
    d = registry.begin_append(NAME)
    store.finish_opens()
    session = d.result
    # No protocol is attached to end the session when asked to.
    with capturedLogs() as events:
        stopped = registry.stopService()
        assert session.shut_down
        clock.advance(14.9)
        assert not stopped.called
        assert not store.files[NAME].closed
        clock.advance(0.2)
    assert stopped.called
    assert store.files[NAME].closed
    assert not store.running
    warnings = [e for e in events if e["log_level"] is LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0]["count"] == 1


def test_when_idle_fires_at_once_with_nothing_open():
    registry, _, _ = make_registry()
    assert registry.when_idle().called


@pytest.mark.parametrize("limit", ["max_followers", "max_followers_per_resource"])
def test_reader_limits_count_records(limit):
    from httpfstream.core.records import Kind

    registry, store, _ = make_registry(**{limit: 1})
    store.files[NAME] = FakeFile(b"abc")
    d = registry.open(NAME, reader="readers")
    store.finish_opens()
    stream = d.result  # room for one
    record = registry.record(Kind.SNAPSHOT, NAME, "peer")
    stream.snapshot(Sink(), 0, 3)
    again = registry.open(NAME, reader="readers")
    refused = again.result.value
    again.addErrback(lambda f: None)
    assert isinstance(refused, Refusal)
    assert (refused.code, refused.message) == (503, "too many readers; try again later")
    assert refused.state == stream.state
    stream.release()
    record.end(200)


def test_no_space_to_make_a_resource_is_507_said_once_and_counted():
    import errno

    registry, store, _ = make_registry()
    with capturedLogs() as events:
        d = registry.begin_append(NAME)
        (_, _, _, opening) = store.opens.pop()
        opening.errback(OSError(errno.ENOSPC, "No space left on device"))
    refused = d.result.value
    d.addErrback(lambda f: None)
    assert isinstance(refused, Refusal)
    assert (refused.code, refused.message) == (
        507,
        "no space left on the server: No space left on device",
    )
    assert registry.counters.no_space == 1
    assert not registry.active(NAME)
    levels = [e["log_level"] for e in events]
    assert levels.count(LogLevel.error) == 1 and LogLevel.critical not in levels


def test_a_sweep_stops_on_a_refusal_about_the_server_not_the_resource():
    from twisted.internet.defer import Deferred, succeed

    from httpfstream.core.retention import Retention
    from httpfstream.core.records import Counters

    class Store:
        def older_than(self, cutoff):
            return succeed([("a.log",), ("b.log",)])

    asked = []

    def refuse(name):
        asked.append(name)
        return Deferred.fromCoroutine(unavailable())

    async def unavailable():
        raise Refusal(503, "try again later: Redis cannot be reached")

    retention = Retention(Store(), refuse, Counters(), Clock(), 60, 3600)
    d = Deferred.fromCoroutine(retention.sweep())
    # Not taken for "gone meanwhile": the sweep stops there (said in one
    # line, no traceback), and the next one goes on.
    assert d.result == 0
    assert asked == [("a.log",)]
