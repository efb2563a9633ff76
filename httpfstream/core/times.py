"""
When each byte of a resource was persisted (docs/PROTOCOL.md section 13,
``timestamps=1``): a line's time is the time its first byte reached the
file.

`BatchTimes` keeps one record per millisecond in which bytes were
persisted: the offset of the first byte persisted in it, and the time, in
milliseconds since the epoch.  The bytes from one record's offset up to the
next record's were all persisted in that record's millisecond.  So a log
appended in 64 KiB batches costs about 256 KiB of records per GiB, and one
appended in tiny writes at full speed at most 16 bytes per millisecond of
appending, however many writes that millisecond held.

Derived data, as `lines.LineIndex`: written after the bytes, so a crash may
lose the records of the last batches (their bytes then take the time of the
record before them: a little early, never late); bytes before the first
record (a file kept before its times were), and every byte of a resource
whose file of records was lost, take the file's modification time
(`mtime`).  No I/O of its own.
"""

from __future__ import annotations

import bisect
import struct
from array import array

__all__ = ["BatchTimes"]

#: One record as stored: first offset, milliseconds since the epoch.
_RECORD = struct.Struct("<QQ")


class BatchTimes:
    """
    The records of one resource.

    :param mtime: the file's modification time, in milliseconds: the time
        of bytes no record covers.
    """

    def __init__(self, mtime: int = 0) -> None:
        self.starts = array("Q")
        self.millis = array("Q")
        self.mtime = mtime

    @classmethod
    def load(cls, stored: bytes, mtime: int) -> BatchTimes:
        """
        The records stored as ``stored`` (what `add` returned, concatenated);
        a torn last record is dropped, and records out of order (damage)
        end the list there.
        """
        times = cls(mtime)
        for start, ms in _RECORD.iter_unpack(
            stored[: len(stored) - len(stored) % _RECORD.size]
        ):
            if times.starts and (start <= times.starts[-1] or ms < times.millis[-1]):
                break
            times.starts.append(start)
            times.millis.append(ms)
        return times

    def add(self, start: int, ms: int) -> bytes:
        """
        Bytes from ``start`` on were persisted at ``ms``: the record to
        append to the file of records, or nothing if this millisecond (or
        an earlier one: the clock went back) already has one.
        """
        if self.millis and ms <= self.millis[-1]:
            return b""
        if self.starts and start <= self.starts[-1]:
            return b""
        self.starts.append(start)
        self.millis.append(ms)
        return _RECORD.pack(start, ms)

    def at(self, offset: int) -> int:
        """
        When the byte at ``offset`` was persisted, in milliseconds.  Safe to
        call from another thread than `add`'s: a record whose time is not
        appended yet counts as the one before it.
        """
        i = min(bisect.bisect_right(self.starts, offset), len(self.millis)) - 1
        if i < 0:
            return self.mtime
        return int(self.millis[i])
