"""
`Copies`: what a server's copies of resources are measured against, and
how they are brought up to it (the stateless mode).

The *truth* of a resource is its live state in Redis if it has one, else
its object's HEAD (`Truth`); `bring` makes the local copy a prefix of it
of its full size (a copy of another generation, or longer, dropped; the
missing bytes copied in by `replica.copy`), and `pull` extends an open
copy to a size the feed announced.  Both run in the store's lane of the
resource.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from ...core.names import Name
from ...core.store import FileStore
from ..archive.bucket import Archived, Bucket, reading
from ..archive.local import remove_files
from .live import LiveRedis, LiveState, new_generation
from .replica import (
    READ_AT_ONCE,
    Gone,
    copy,
    from_bucket,
    read_gen,
    write_all,
    write_gen,
)

__all__ = ["Copies", "Truth"]

#: Tries of a copy that found the live data gone (archived meanwhile).
TRIES = 3


def _open_append(path: str) -> tuple[int, int]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    return fd, os.fstat(fd).st_size


@dataclass(frozen=True)
class Truth:
    """What the deployment holds of one resource."""

    state: LiveState | None
    archived: Archived | None

    @property
    def exists(self) -> bool:
        return self.state is not None or self.archived is not None

    @property
    def size(self) -> int:
        found = self.state or self.archived
        return found.size if found is not None else 0

    @property
    def complete(self) -> bool:
        found = self.state or self.archived
        return found.complete if found is not None else True

    @property
    def gen(self) -> str:
        found = self.state or self.archived
        return found.gen if found is not None else ""


class Copies:
    """
    :param local: the plain store of the root (names checked, files made).
    :param bucket: the bucket, once its client is made.
    :param run: calls a blocking function in the store's threads.
    """

    def __init__(
        self,
        live: LiveRedis,
        local: FileStore,
        bucket: Callable[[], Awaitable[Bucket]],
        run: Callable[..., Deferred[Any]],
    ) -> None:
        self._live = live
        self._local = local
        self._root = local.root.path
        self._bucket = bucket
        self._run = run

    def path(self, name: Name) -> str:
        return os.path.join(self._root, *name)

    async def gen(self, name: Name) -> str | None:
        """The generation of the local copy of ``name``, if known."""
        return await self._run(read_gen, self._root, name)  # type: ignore[no-any-return]

    async def size(self, name: Name) -> int:
        """The size of the local copy of ``name`` (0: none)."""
        try:
            return int((await self._run(os.stat, self.path(name))).st_size)
        except (FileNotFoundError, NotADirectoryError):
            return 0

    async def truth(self, name: Name) -> Truth:
        """The resource's truth (Redis, else a HEAD of its object)."""
        state = await self._live.state("/".join(name))
        if state is not None:
            return Truth(state, None)
        bucket = await self._bucket()
        return Truth(None, await reading(bucket.head(name)))

    async def bring(self, name: Name, truth: Truth) -> None:
        """
        The local copy of ``name`` as ``truth`` says: its bytes, its
        generation and its completion marker (made, with a new generation,
        if the resource does not exist).

        :raises replica.Gone: the live data went meanwhile.
        """
        gen = truth.gen
        if not gen or await self._run(read_gen, self._root, name) != gen:
            await self._run(remove_files, self._root, name)
        # Created (and its name checked) by the plain store.
        created = await self._local.open(name, True, None)
        await created.close()
        await self._run(write_gen, self._root, name, gen or new_generation())
        path = self.path(name)
        fd, have = await self._run(_open_append, path)
        try:
            if have > truth.size:
                await self._run(os.ftruncate, fd, 0)
                have = 0
            if have < truth.size:
                await copy(
                    self._live,
                    self._bucket,
                    name,
                    fd,
                    have,
                    truth.size,
                    truth.state,
                    self._run,
                )
        finally:
            await self._run(os.close, fd)
        if have == 0 and truth.state is None and truth.archived is not None:
            modified = truth.archived.modified
            await self._run(os.utime, path, (modified, modified))
        await self._run(self._local._mark, name, truth.complete, False)

    async def append_objects(self, name: Name, objects: list[tuple[str, int]]) -> int:
        """
        Append the objects (key, size) to the local copy of ``name``, in
        order; its size then.
        """
        bucket = await self._bucket()
        fd, have = await self._run(_open_append, self.path(name))
        try:
            for key, size in objects:
                await from_bucket(bucket, key, fd, 0, size, self._run)
                have += size
        finally:
            await self._run(os.close, fd)
        return int(have)

    async def pull(self, name: Name, size: int) -> int:
        """Extend the local copy of ``name`` to ``size`` bytes; bytes added."""
        for attempt in range(TRIES):
            fd, have = await self._run(_open_append, self.path(name))
            try:
                if have >= size:
                    return 0
                # Most often the bytes are all still in Redis: one call.
                want = min(size - have, READ_AT_ONCE)
                state, data = await self._live.read("/".join(name), have, want)
                if state is not None and len(data) == size - have:
                    await self._run(write_all, fd, data)
                    return len(data)
                if state is None or state.size < size:
                    state = None  # archived meanwhile: the object has them
                try:
                    await copy(
                        self._live, self._bucket, name, fd, have, size, state, self._run
                    )
                except Gone:
                    if attempt == TRIES - 1:
                        raise
                    continue
                return size - int(have)
            finally:
                await self._run(os.close, fd)
        return 0
