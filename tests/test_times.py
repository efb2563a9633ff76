"""
The persisted times of a resource's bytes on their own
(`httpfstream.core.times`, PROTOCOL.md section 13's ``timestamps=1``).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from httpfstream.core.times import BatchTimes


def test_one_record_per_millisecond_however_many_batches():
    times = BatchTimes(mtime=999_999)
    written = b""
    # Three batches in one millisecond, two in the next, one later.
    for start, ms in [(0, 1000), (10, 1000), (25, 1000), (30, 1001), (31, 1001), (50, 1007)]:
        written += times.add(start, ms)
    assert len(written) == 3 * 16
    assert [times.at(o) for o in (0, 29, 30, 49, 50, 10**9)] == [
        1000, 1000, 1001, 1001, 1007, 1007
    ]
    # Stored and loaded: the same answers; a torn last record is dropped.
    loaded = BatchTimes.load(written + b"\x01\x02", mtime=999_999)
    assert list(loaded.starts) == [0, 30, 50]
    assert loaded.at(40) == 1001


def test_unknown_bytes_take_the_files_modification_time():
    assert BatchTimes(mtime=42).at(0) == 42
    times = BatchTimes.load(BatchTimes().add(100, 5000), mtime=7000)
    assert (times.at(99), times.at(100)) == (7000, 5000)


def test_a_clock_that_goes_back_never_makes_times_go_back():
    times = BatchTimes()
    assert times.add(0, 2000)
    assert times.add(10, 1500) == b""  # earlier than the last: covered by it
    assert times.at(10) == 2000


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 5)), min_size=1, max_size=50
    )
)
def test_times_never_go_back_and_damage_ends_the_records(steps):
    times, written, start, ms = BatchTimes(), b"", 0, 1_000
    for size, wait in steps:
        written += times.add(start, ms)
        start += size + 1
        ms += wait
    at = [times.at(o) for o in range(0, start, max(1, start // 200))]
    assert at == sorted(at)
    # Records out of order (a damaged file) end the list where they start.
    damaged = BatchTimes.load(written + written, mtime=0)
    assert list(damaged.starts) == list(times.starts)


def test_a_record_half_added_by_another_thread_reads_as_the_one_before():
    # The writer's thread appends a record's start, then its time; the
    # reactor may read between the two.
    times = BatchTimes(mtime=5)
    times.add(0, 1_000)
    times.starts.append(100)  # the start alone, as seen mid-add
    assert times.at(150) == 1_000
    times.millis.append(2_000)
    assert times.at(150) == 2_000
