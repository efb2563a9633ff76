"""
The line index on its own (`httpfstream.core.lines`, PROTOCOL.md section
13): for any bytes cut into any batches, where each line starts agrees
with a plain reading of the whole, also after the index is stored, loaded
and caught up from the file as after a crash; and finding a line reads at
most about one checkpoint of the file, whatever its size.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from httpfstream.core.lines import CHECKPOINT, LineIndex, Position


def starts(data: bytes) -> list[int]:
    """Where each line starts, by reading it all: a plain model."""
    found = [0] if data else []
    found += [i + 1 for i, b in enumerate(data) if b == 10 and i + 1 < len(data)]
    return found


def reader(data: bytes, log: list[int] | None = None):
    def read(offset: int, length: int) -> bytes:
        if log is not None:
            log.append(length)
        return data[offset : offset + length]

    return read


def built(data: bytes, cuts: list[int]) -> tuple[LineIndex, bytes]:
    index, stored = LineIndex(), bytearray()
    at = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        stored += index.add(data[at:cut])
        at = cut
    return index, bytes(stored)


# Small checkpoints would need another module constant; instead the data
# spans a few real ones where it matters (long runs without a newline).
lines_of_text = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.binary(min_size=CHECKPOINT - 5, max_size=CHECKPOINT + 5),
        st.just(b"\n" * 3),
    ),
    max_size=8,
).map(lambda parts: b"\n".join(parts))


@settings(max_examples=60, deadline=None)
@given(data=lines_of_text, cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_every_line_is_found_where_a_plain_reading_finds_it(data, cuts):
    index, stored = built(data, cuts)
    expected = starts(data)
    assert index.size == len(data)
    read = reader(data)
    size = len(data)
    assert index.total_lines(size, read) == len(expected)
    for number, offset in enumerate(expected, 1):
        assert index.start_of(number, size, read) == Position(number, offset)
    # The line after the last: where following would start.
    assert index.start_of(len(expected) + 1, size, read).offset == len(data)
    for n in (1, 2, len(expected), len(expected) + 5):
        wanted = max(1, len(expected) - n + 1)
        assert index.start_of_last(n, size, read).line == wanted
    with pytest.raises(ValueError):
        index.start_of(len(expected) + 2, size, read)
    # Asked about fewer bytes than it counted (a size announced before the
    # writer's last batch was reported): the answers of those bytes alone.
    for shorter in {0, min(1, size), size // 3, size // 2, max(0, size - 1)}:
        head = starts(data[:shorter])
        assert index.total_lines(shorter, read) == len(head)
        for number, offset in enumerate(head, 1):
            assert index.start_of(number, shorter, read).offset == offset
        assert index.start_of(len(head) + 1, shorter, read).offset == shorter
    # Stored, loaded and completed from the file (what a restart does):
    # the same answers, and the counts it adds are those that were missing.
    again = LineIndex.load(stored[: len(stored) // 2 // 8 * 8 + 3])  # torn too
    missing = again.catch_up(len(data), read)
    assert again.counts == index.counts
    assert stored.endswith(missing)
    assert again.total_lines(size, read) == len(expected)
    for number, offset in enumerate(expected, 1):
        assert again.start_of(number, size, read).offset == offset


def test_finding_a_line_reads_one_checkpoint_whatever_the_size():
    # 64 MiB of 100-byte lines.
    line = b"x" * 99 + b"\n"
    data = line * ((64 << 20) // len(line))
    index = LineIndex()
    index.add(data)
    size = len(data)
    for number in (1, 2, 500_000, index.total_lines(size, reader(data))):
        log: list[int] = []
        position = index.start_of(number, size, reader(data, log))
        assert position.offset == (number - 1) * len(line)
        assert sum(log) <= 2 * CHECKPOINT, (number, log)
    log = []
    start = index.start_of_last(100, size, reader(data, log))
    assert start.offset == size - 100 * len(line)
    assert sum(log) <= 2 * CHECKPOINT


def test_damaged_counts_are_refused_so_they_can_be_rebuilt():
    index = LineIndex()
    stored = index.add(b"\n" * (3 * CHECKPOINT))
    damaged = stored[:8] + (0).to_bytes(8, "little") + stored[16:]
    with pytest.raises(ValueError):
        LineIndex.load(damaged)
    # A file of counts that claims more than the resource holds cannot be
    # caught up either.
    loaded = LineIndex.load(stored)
    with pytest.raises(ValueError):
        loaded.catch_up(4 * CHECKPOINT, reader(b"\n" * CHECKPOINT))
