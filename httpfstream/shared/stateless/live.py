"""
`LiveRedis`: a live resource's bytes in Redis (the stateless mode), one
script per step (`scripts`), on shared mode's connection (`link.RedisLink`).

Every call fails with `core.coordination.Unavailable` when Redis cannot
be reached or does not answer in time, as shared mode's own calls do.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from ...core.writes import Fenced, WriteFailed
from ..config import MAXLEN, Settings
from ..link import RedisLink
from .scripts import ANNOUNCE, APPEND, FINISH, MOVED, READ, STATE

__all__ = [
    "LOCK",
    "LiveFull",
    "LiveRedis",
    "LiveState",
    "SizeChanged",
    "new_generation",
]


def new_generation() -> str:
    """A new resource's generation (`scripts`: ``gen``)."""
    return secrets.token_hex(8)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    # txredisapi hands back what decodes as UTF-8 as str: the same bytes.
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass(frozen=True)
class LiveState:
    """What Redis holds of one live resource (`scripts`)."""

    size: int
    start: int
    base: int
    gen: str
    complete: bool
    #: Whether a session holds it (its lease exists), where that was asked.
    held: bool = False

    @classmethod
    def of(cls, reply: list[Any], held: bool = False) -> LiveState:
        """From a script's reply: size, start, base, gen, complete."""
        return cls(
            int(reply[0]),
            int(reply[1]),
            int(reply[2]),
            _text(reply[3]),
            _text(reply[4]) == "1",
            held,
        )


class SizeChanged(WriteFailed):
    """
    The resource in Redis does not hold the bytes this writer thinks: a
    write of another holder landed (it cannot, while fencing holds), or
    Redis lost the resource's live data.
    """


#: Seconds the right to archive a resource lives (`LiveRedis.lock`): a
#: server that dies or stops while archiving holds it no longer than this.
#: An upload that outlasts it may be started again by another server: the
#: same bytes, wasted work, never a wrong object (`FINISH` checks the size).
LOCK = 20.0


class LiveFull(WriteFailed):
    """
    Redis holds ``--live-max`` bytes of the resource already: the bucket
    has not taken its chunks (yet).
    """


class LiveRedis:
    """
    The live bytes of every resource, for one server.

    :param chunk: bytes per chunk (what moves to the bucket at once).
    :param cap: the most bytes of one resource held in Redis; an append
        past it is refused until the bucket has taken chunks.
    """

    def __init__(
        self, settings: Settings, link: RedisLink, chunk: int, cap: int
    ) -> None:
        self.settings = settings
        self.link = link
        self.chunk = chunk
        self.cap = cap
        self.live_set = f"{settings.prefix}:live"

    def _keys(self, path: str) -> tuple[str, str]:
        s = self.settings
        return s.key(path, "live"), s.key(path, "c:")

    async def append(
        self, path: str, lease: str, token: str, offset: int, data: bytes, gen: str
    ) -> int:
        """
        Append ``data`` at ``offset`` under the lease value ``lease``, in
        the step that checks it is still ours: the resource's new size.
        Fails with `Fenced` (the lease is not ours), `SizeChanged`,
        `LiveFull` (Redis holds ``cap`` bytes of it), `Unavailable`.
        """
        s = self.settings
        live, chunks = self._keys(path)
        status, value = await self.link.run(
            APPEND,
            [s.key(path, "lease"), live, s.key(path, "feed"), self.live_set],
            [
                lease,
                str(offset),
                data,  # type: ignore[list-item]  # bytes go as they are
                str(self.chunk),
                chunks,
                token,
                s.server_id,
                str(MAXLEN),
                s.feed_ttl_ms,
                str(int(time.time() * 1000)),
                path,
                str(self.cap),
                gen,
            ],
        )
        status = int(status)
        if status == 1:
            return int(value)
        if status == -1:
            raise Fenced("the appender's lease was lost")
        if status == -2:
            raise SizeChanged(
                f"the resource holds {value} bytes in Redis, not {offset}"
            )
        raise LiveFull(
            f"Redis holds {self.cap} bytes of this resource that the bucket has"
            " not taken yet; try again later"
        )

    async def state(self, path: str) -> LiveState | None:
        """The resource's live state, or None if it has none."""
        live, _ = self._keys(path)
        reply = await self.link.run(STATE, [live, self.settings.key(path, "lease")], [])
        return LiveState.of(reply, int(reply[5]) == 1) if reply else None

    async def read(
        self, path: str, offset: int, length: int
    ) -> tuple[LiveState | None, bytes]:
        """
        Up to ``length`` bytes at ``offset`` if they are chunks still in
        Redis (else none: they are in the bucket), with the live state.
        """
        live, chunks = self._keys(path)
        reply = await self.link.run(
            READ, [live], [str(offset), str(length), str(self.chunk), chunks]
        )
        if not reply:
            return None, b""
        return LiveState.of(reply), _bytes(reply[5])

    async def moved(self, path: str, base: int) -> bool:
        """The chunk at ``base`` is in the bucket: drop it from Redis."""
        live, chunks = self._keys(path)
        done = await self.link.run(MOVED, [live], [str(base), str(self.chunk), chunks])
        return int(done) == 1

    async def finish(self, path: str, size: int) -> tuple[int, int] | None:
        """
        The object holds ``size`` bytes: drop the live data, unless a
        session holds the resource or it grew.  The span ``(start, base)``
        of chunks moved to the bucket (to be deleted there), or None.
        """
        s = self.settings
        live, chunks = self._keys(path)
        reply = await self.link.run(
            FINISH,
            [s.key(path, "lease"), live, self.live_set],
            [str(size), str(self.chunk), chunks, path],
        )
        if not reply:
            return None
        return int(reply[0]), int(reply[1])

    async def announce(self, path: str, size: int, why: str) -> None:
        """Tell the servers that follow ``path`` it holds ``size`` bytes now."""
        s = self.settings
        await self.link.run(
            ANNOUNCE,
            [s.key(path, "feed")],
            [str(size), str(MAXLEN), s.server_id, why, s.feed_ttl_ms],
        )

    async def lock(self, path: str, seconds: float) -> bool:
        """
        Take the right to archive ``path`` for ``seconds`` (one server
        archives a resource at a time); whether it was free.
        """
        got = await self.link.command(
            "SET",
            self.settings.key(path, "archiving"),
            self.settings.server_id,
            "NX",
            "PX",
            str(int(seconds * 1000)),
        )
        return got is not None and _text(got) == "OK"

    async def unlock(self, path: str) -> None:
        """Give the right to archive ``path`` back."""
        await self.link.command("DEL", self.settings.key(path, "archiving"))

    async def idle(self, before_ms: int) -> list[str]:
        """The live resources last appended to before ``before_ms``."""
        found = await self.link.command(
            "ZRANGEBYSCORE", self.live_set, "-inf", str(before_ms), "LIMIT", "0", "100"
        )
        return [_text(path) for path in found]

    async def paths(self) -> list[tuple[str, float]]:
        """Every live resource's path, and when it was last appended to (s)."""
        found = await self.link.command(
            "ZRANGE", self.live_set, "0", "-1", "WITHSCORES"
        )
        return [
            (_text(path), float(_text(ms)) / 1000)
            for path, ms in zip(found[::2], found[1::2], strict=True)
        ]
