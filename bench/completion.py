"""
What durable completion costs per append session: recording a resource as
incomplete when a session begins and complete when it ends well (two marker
changes, each with an fsync of the marker's folder unless ``--fsync never``),
against the rest of a small session's disk work (a 1 KiB write and the
fsync at its end).  Run: ``.venv/bin/python bench/completion.py``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from twisted.python.filepath import FilePath

from httpfstream.core.store import FileStore


def per_session(store: FileStore, sync: bool, sessions: int) -> float:
    """Microseconds for one session's two marker changes."""
    samples = []
    for i in range(sessions):
        name = ("bench", f"r{i % 50}.log")
        started = time.perf_counter()
        store._mark(name, False, sync)
        store._mark(name, True, sync)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def small_session(root: str, sessions: int) -> float:
    """Microseconds for a 1 KiB O_APPEND write and an fsync."""
    path = os.path.join(root, "plain.log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    try:
        for _ in range(sessions):
            started = time.perf_counter()
            os.write(fd, b"x" * 1024)
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    return statistics.median(samples) * 1e6


def main() -> None:
    sessions = 500
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as root:
        store = FileStore(FilePath(root), reactor=None)  # type: ignore[arg-type]
        synced = per_session(store, True, sessions)
        unsynced = per_session(store, False, sessions)
        baseline = small_session(root, sessions)
    print(f"markers, synced (--fsync close/always): {synced:8.1f} µs per session")
    print(f"markers, not synced (--fsync never):    {unsynced:8.1f} µs per session")
    print(f"1 KiB write + fsync (the session's own): {baseline:8.1f} µs")
    print(f"ratio synced markers / own work: {synced / baseline:.2f}")


if __name__ == "__main__":
    main()
