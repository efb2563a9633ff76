"""
Reads that never wait for the disk, for the reactor: the bytes at an
offset at once if the kernel holds them in memory (`read_cached`), from
files opened without access-time updates (`open_noatime`).
`store._OpenFile.read` tries here before a worker thread.
"""

from __future__ import annotations

import errno
import os

__all__ = ["NOWAIT", "Unsupported", "open_noatime", "read_cached"]

#: preadv's flag for "only what is in memory" (Linux 4.14 and later); 0
#: where there is none.
NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
_NOATIME: int = getattr(os, "O_NOATIME", 0)


class Unsupported(Exception):
    """This file system or kernel cannot read only what is in memory."""


def open_noatime(path: str, flags: int) -> int:
    """
    Open without access-time updates where the kernel lets us (files we
    own): a read of the page cache in the reactor (`read_cached`) must
    not wait for the journal to record an access time, which every read
    after an append would otherwise update (relatime).
    """
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME, 0o644)
        except OSError as e:
            if e.errno != errno.EPERM:  # not ours: open it as it is
                raise
    return os.open(path, flags, 0o644)


def read_cached(fd: int, offset: int, length: int) -> bytes | None:
    """
    The bytes at ``offset`` at once, if the kernel has them in memory
    (the page cache: nearly always so for what was just appended),
    else ``None``; only where `NOWAIT` is not 0.

    A reader that fell behind the stream's tail reads from here; in a
    worker thread every read waits for a thread switch and the GIL,
    which on a busy core is far longer than the read, and it never
    catches up.  ``RWF_NOWAIT`` makes the read fail rather than wait
    for the disk, so the reactor never blocks on one.

    :raises Unsupported: not on this file system or kernel: ask no more.
    """
    buffer = bytearray(length)
    try:
        n = os.preadv(fd, [buffer], offset, NOWAIT)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise Unsupported(os.strerror(e.errno)) from None
        # Not in memory (EAGAIN), or failed: the read in a thread
        # waits for the disk, or fails the reader as any read does.
        return None
    return bytes(memoryview(buffer)[:n])
