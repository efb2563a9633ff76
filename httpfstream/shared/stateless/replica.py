"""
A server's copy of a resource (the stateless mode): a local file brought
up to the bytes the deployment holds, from where they are.

A resource's bytes are in three places, in order (`scripts`): before
``start``, its object in the bucket (``PREFIX/NAME``, archived before the
session that resumed it); from ``start`` to ``base``, chunk objects
moved to the bucket while sessions ran (``PREFIX/.httpfstream/live/NAME/
GEN-OFFSET``); from ``base`` to ``size``, chunks in Redis.  `copy` reads
each range from its place and appends it to the local file.  A chunk may
move from Redis to the bucket between two reads: the read finds it gone
and takes it from the bucket instead.

Which copy is whose: beside each copy, ``.httpfstream/gen/NAME`` holds
the generation of the resource it copies; a copy whose generation is not
the resource's (deleted and created again elsewhere) is dropped whole.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from ...core.coordination import Unavailable
from ...core.names import STATE_FOLDER, Name
from ...core.store import NotFound
from ..archive.bucket import Bucket, reading
from ..archive.writer import FileWriter
from .live import LiveRedis, LiveState

__all__ = [
    "Gone",
    "chunk_key",
    "chunk_prefix",
    "copy",
    "from_bucket",
    "read_gen",
    "write_all",
    "write_gen",
]

#: The most bytes read from Redis at once.
READ_AT_ONCE = 4 << 20


class Gone(Exception):
    """The resource's live data went (archived, or deleted) during a copy."""


def chunk_prefix(bucket: Bucket, name: Name) -> str:
    """What the keys of every chunk object of ``name`` begin with."""
    return bucket.archive.key((STATE_FOLDER, "live", *name[:-1], f"{name[-1]}."))


def chunk_key(bucket: Bucket, name: Name, gen: str, offset: int) -> str:
    """The key of the chunk object that holds the bytes from ``offset``."""
    return f"{chunk_prefix(bucket, name)}{gen}.{offset}"


def _gen_path(root: str, name: Name) -> str:
    return os.path.join(root, STATE_FOLDER, "gen", *name)


def read_gen(root: str, name: Name) -> str | None:
    """The generation the local copy of ``name`` belongs to (None: unknown)."""
    try:
        with open(_gen_path(root, name)) as f:
            return f.read().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_gen(root: str, name: Name, gen: str) -> None:
    """Say the local copy of ``name`` belongs to generation ``gen``."""
    path = _gen_path(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.new"
    with open(temporary, "w") as f:
        f.write(gen)
    os.replace(temporary, path)


def remove_gen(root: str, name: Name) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(_gen_path(root, name))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def from_bucket(
    bucket: Bucket, key: str, fd: int, offset: int, length: int, run: Any
) -> None:
    writer = FileWriter(os.dup(fd), run)
    try:
        got = await reading(bucket.client.get(key, writer, offset, length))
    except NotFound:
        # A chunk deleted once its resource was archived, or an object
        # deleted: what the truth said is out of date.
        raise Gone(key) from None
    finally:
        await writer.finish(False)
    if got != length:
        raise Unavailable(f"{key}: {got} bytes of {length} read")


async def copy(
    live: LiveRedis,
    bucket: Callable[[], Awaitable[Bucket]],
    name: Name,
    fd: int,
    have: int,
    want: int,
    state: LiveState | None,
    run: Callable[..., Deferred[Any]],
) -> int:
    """
    Append the bytes ``[have, want)`` of ``name`` to ``fd`` (a file open
    for appending, holding ``have`` bytes); ``state`` is what Redis said of
    it (None: it has no live data, so all of it is the object).  Returns
    ``want``.

    :raises Gone: its live data went meanwhile (start again).
    :raises core.coordination.Unavailable: Redis or the bucket cannot be
        read now.
    """
    progress = _Progress(have)
    try:
        return await _copy(live, bucket, name, fd, progress, want, state, run)
    except BaseException:
        # Bytes of a piece cut short must not stay: the next copy appends
        # from the last whole piece.
        await run(os.ftruncate, fd, progress.have)
        raise


@dataclass
class _Progress:
    """How far a copy got in whole pieces."""

    have: int


async def _copy(
    live: LiveRedis,
    bucket: Callable[[], Awaitable[Bucket]],
    name: Name,
    fd: int,
    progress: _Progress,
    want: int,
    state: LiveState | None,
    run: Callable[..., Deferred[Any]],
) -> int:
    have = progress.have
    path = "/".join(name)
    start = want if state is None else state.start
    while have < want:
        progress.have = have
        if have < start:
            b = await bucket()
            length = min(want, start) - have
            await from_bucket(b, b.key(name), fd, have, length, run)
            have += length
            continue
        assert state is not None
        if have < state.base:
            b = await bucket()
            index = (have - state.start) // live.chunk
            first = state.start + index * live.chunk
            length = min(want, state.base, first + live.chunk) - have
            key = chunk_key(b, name, state.gen, first)
            await from_bucket(b, key, fd, have - first, length, run)
            have += length
            continue
        found, data = await live.read(path, have, min(want - have, READ_AT_ONCE))
        if found is None or found.gen != state.gen or found.start != state.start:
            raise Gone(path)
        state = found
        if not data:
            if have < found.base:
                continue  # moved to the bucket meanwhile
            raise Gone(path)  # shorter than asked: Redis lost bytes
        await run(write_all, fd, data)
        have += len(data)
    return have
