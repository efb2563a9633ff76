"""
The derived data of a resource on disk (`httpfstream.core.derived`,
PROTOCOL.md section 13): the writer's counts and times reach their files
beside the completion markers; after a crash, a lost file or a damaged one
the answers are still those of a plain reading of the resource; nothing
about them can fail an append; removing a resource removes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.python.filepath import FilePath

from httpfstream.core.derived import (
    FLUSH_EVERY,
    Derived,
    Lines,
    PastTheEnd,
    Span,
    derived_paths,
)
from httpfstream.core.lines import CHECKPOINT
from httpfstream.core.store import FileStore

NAME = ("ci", "build.log")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def starts(data: bytes) -> list[int]:
    """Where each line starts, by reading it all: a plain model."""
    found = [0] if data else []
    found += [i + 1 for i, b in enumerate(data) if b == 10 and i + 1 < len(data)]
    return found


class Resource:
    """A real resource file, appended batch by batch as the writer does."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.path = os.path.join(root, *NAME)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.clock = Clock()
        self.derived = self.reopen()

    def reopen(self) -> Derived:
        """A new `Derived`, as a restarted server makes."""
        return Derived(self.root, NAME, self.fd, self.clock)

    def append(self, batch: bytes, derived: Derived | None = None) -> None:
        start = os.fstat(self.fd).st_size
        os.write(self.fd, batch)
        (derived or self.derived).written(start, batch)

    @property
    def data(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def resource(tmp_path) -> Iterator[Resource]:
    r = Resource(str(tmp_path))
    yield r
    r.close()


def agrees(derived: Derived, data: bytes, persist: bool = True) -> None:
    """Every ``lines=`` answer is what a plain reading of ``data`` gives."""
    expected = starts(data)
    size = len(data)
    # Every line of a short file; of a long one, a spread of them.
    step = max(1, len(expected) // 40)
    for number in sorted({*range(1, len(expected) + 1, step), len(expected)} - {0}):
        assert derived.locate(Lines(number), size, persist) == Span(
            number, expected[number - 1], None, size
        )
    assert derived.locate(Lines(len(expected) + 1), size, persist).start == size
    for n in (1, 3, len(expected) + 2):
        first = max(1, len(expected) - n + 1)
        span = derived.locate(Lines(n, tail=True), size, persist)
        assert (span.line, span.start) == (first, expected[first - 1] if data else 0)


log_like = st.lists(
    st.one_of(
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"),
        # A checkpoint's worth, with and without newlines (built, not
        # drawn byte by byte: hypothesis keeps its inputs small).
        st.tuples(
            st.integers(min_value=CHECKPOINT - 3, max_value=CHECKPOINT + 3),
            st.sampled_from([b"y", b"abcdef\n", b"\n"]),
        ).map(lambda nb: (nb[1] * nb[0])[: nb[0]]),
    ),
    max_size=6,
)


@settings(max_examples=25, deadline=None)
@given(batches=log_like, crash_after=st.integers(min_value=0, max_value=6))
def test_answers_agree_with_the_file_after_a_crash_at_any_point(
    tmp_path_factory, batches, crash_after
):
    r = Resource(str(tmp_path_factory.mktemp("root")))
    try:
        for i, batch in enumerate(batches):
            r.append(batch)
            if i == crash_after:
                r.derived.close()  # what was kept reaches the files...
                r.derived = r.reopen()
        # ...and what follows never does: the process dies here.
        again = r.reopen()
        agrees(again, r.data)
    finally:
        r.close()


def test_the_writer_keeps_its_records_in_memory_and_writes_them_once_a_second(
    resource,
):
    lines_path, times_path = derived_paths(resource.root, NAME)

    def size(path: str) -> int:
        return os.path.getsize(path) if os.path.exists(path) else 0

    line = b"x" * 99 + b"\n"
    resource.append(line * 300)  # the first write: always written out
    assert (size(lines_path), size(times_path)) == (0, 16)
    resource.clock.now += 0.001
    resource.append(line * 1400)  # past two checkpoints, within the second
    assert (size(lines_path), size(times_path)) == (0, 16)
    resource.clock.now += FLUSH_EVERY
    resource.append(line)
    assert (size(lines_path), size(times_path)) == (8 * 2, 3 * 16)
    # Their size: 8 bytes per 64 KiB, 16 per millisecond that wrote.
    resource.derived.close()
    agrees(resource.reopen(), resource.data)


def test_times_are_when_each_line_began(resource):
    start = resource.clock.now
    resource.append(b"one\ntw")
    resource.clock.now += 0.250
    resource.append(b"o\nthree\n")
    derived = resource.derived
    assert derived.time_of(0) == int(start * 1000)
    assert derived.time_of(4) == int(start * 1000)  # "two" began in batch 1
    assert derived.time_of(8) == int(start * 1000) + 250  # "three"
    # Restarted: the same times, from their file.
    derived.close()
    again = resource.reopen()
    again.load()
    assert [again.time_of(o) for o in (0, 4, 8)] == [
        derived.time_of(o) for o in (0, 4, 8)
    ]


def test_lost_files_are_rebuilt_and_unknown_times_are_the_files_mtime(resource):
    resource.append(b"a\n" * 50_000)
    resource.derived.close()
    for path in derived_paths(resource.root, NAME):
        os.unlink(path)
    os.utime(resource.path, ns=(0, 1_234_567 * 1_000_000))
    again = resource.reopen()
    agrees(again, resource.data)
    assert again.time_of(0) == 1_234_567
    # The counts it rebuilt were written: a third reader need not count.
    lines_path, _ = derived_paths(resource.root, NAME)
    assert os.path.getsize(lines_path) == 8 * (100_000 // CHECKPOINT)


def test_damaged_or_foreign_counts_are_rebuilt(resource):
    lines_path, _ = derived_paths(resource.root, NAME)
    resource.append(b"line\n" * 40_000)
    resource.derived.close()
    with open(lines_path, "wb") as f:  # counts that go down
        f.write((9).to_bytes(8, "little") + (3).to_bytes(8, "little"))
    agrees(resource.reopen(), resource.data)
    with open(lines_path, "wb") as f:  # counts of a longer, older file
        f.write(b"".join((i * 10).to_bytes(8, "little") for i in range(1, 50)))
    agrees(resource.reopen(), resource.data)


def test_a_reader_of_a_resource_appended_elsewhere_writes_nothing(resource):
    lines_path, _ = derived_paths(resource.root, NAME)
    resource.append(b"x\n" * 40_000)
    resource.derived.close()
    os.unlink(lines_path)
    reader = resource.reopen()
    agrees(reader, resource.data, persist=False)
    assert not os.path.exists(lines_path)


def test_ranges_and_what_is_past_the_end(resource):
    resource.append(b"1\n2\n3\n4")  # four lines, the last unended
    derived, size = resource.derived, 7
    assert derived.locate(Lines(2, 3), size, True) == Span(2, 2, 6, size)
    assert derived.locate(Lines(3, 99), size, True) == Span(3, 4, 7, size)
    assert derived.locate(Lines(5), size, True) == Span(5, 7, None, size)
    assert derived.locate(Lines(2, tail=True), size, True) == Span(3, 4, None, size)
    assert derived.locate(Lines(99, tail=True), size, True) == Span(1, 0, None, size)
    with pytest.raises(PastTheEnd):
        derived.locate(Lines(6), size, True)
    with pytest.raises(PastTheEnd):
        derived.locate(Lines(5, 9), size, True)
    # Asked about the size a response announced, behind the writer.
    assert derived.locate(Lines(1, tail=True), 4, True) == Span(2, 2, None, 4)
    assert derived.line_at(4, True) == 3


@pytest.mark.parametrize(
    "text",
    ["-10", "-0", "1", "7", "3-9", "5-5"],
)
def test_lines_are_parsed(text):
    lines = Lines.parse(text)
    head, _, tail = text.lstrip("-").partition("-")
    assert lines.first == int(head)
    assert lines.tail == text.startswith("-")
    assert (lines.last is None) == (tail == "")


@pytest.mark.parametrize("text", ["", "0", "-", "a", "1-", "-1-2", "5-3", "1e3", "+3"])
def test_bad_lines_are_refused(text):
    with pytest.raises(ValueError):
        Lines.parse(text)


def test_failing_to_write_them_fails_nothing(resource):
    # The folder of counts cannot be made: a file is in its way.
    state = os.path.join(resource.root, ".httpfstream")
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "lines"), "w") as f:
        f.write("in the way")
    resource.append(b"a\nb\n" * 40_000)
    resource.clock.now += FLUSH_EVERY
    resource.append(b"c\n")
    resource.derived.close()
    # Still answered from memory, and from the file by the next reader.
    agrees(resource.derived, resource.data)
    agrees(resource.reopen(), resource.data)


@pytest_twisted.ensureDeferred
async def test_removing_a_resource_removes_what_was_derived_from_it(tmp_path):
    files = FileStore(FilePath(str(tmp_path)), reactor)
    files.start()
    try:
        file = await files.open(NAME, True, None)
        await file.write(b"x\n" * 100_000, False)
        span = await file.locate(Lines(1, tail=True), 200_000, True)
        assert span == Span(100_000, 199_998, None, 200_000)
        await file.close()
        paths = derived_paths(str(tmp_path), NAME)
        assert all(os.path.exists(p) for p in paths)
        assert await files.remove(NAME)
        assert not any(os.path.exists(p) for p in paths)
        # Their emptied folders went too.
        assert not os.path.exists(os.path.dirname(paths[0]))
    finally:
        files.stop()


def test_a_new_session_counts_on_from_where_the_last_one_stopped(resource):
    # Each session opens the file anew (a POST, an appender after another):
    # the stored counts end at the last whole checkpoint, and the writer
    # completes them from the file before it counts on, so the counts keep
    # up without any request for lines.
    lines_path, _ = derived_paths(resource.root, NAME)
    line = b"y" * 99 + b"\n"
    for _ in range(5):
        resource.append(line * 1000)  # 100,000 bytes: not a whole checkpoint
        resource.derived.close()
        resource.derived = resource.reopen()
    assert os.path.getsize(lines_path) == 8 * (500_000 // CHECKPOINT)
    # And the index in memory is the whole file's: nothing left to count.
    resource.derived.load()
    resource.append(line)
    agrees(resource.derived, resource.data)
