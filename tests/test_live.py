"""
The stateless mode's live bytes in Redis (`httpfstream.shared.stateless.
live`), each script against a real redis-server: appends fenced by the
lease in the same step, chunks, reads across them and around moved ones,
the cap, and what finishing drops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from support.redis import Redis
from twisted.internet import reactor

from httpfstream.core.writes import Fenced
from httpfstream.shared.config import RedisConfig, Settings
from httpfstream.shared.link import RedisLink
from httpfstream.shared.stateless.live import LiveFull, LiveRedis, SizeChanged

CHUNK = 10
LEASE = "7 server-a"


@pytest_twisted.async_yield_fixture
async def live(redis: Redis) -> AsyncIterator[LiveRedis]:
    settings = Settings(RedisConfig("127.0.0.1", redis.port, lease=5.0))
    link = RedisLink(settings, reactor, lambda: True)
    link.open()
    try:
        yield LiveRedis(settings, link, CHUNK, cap=35)
    finally:
        await link.close()


def _hold(redis: Redis, path: str, value: str = LEASE) -> None:
    assert redis.command("SET", f"httpfstream:{{{path}}}:lease", value) == "+OK"


def _keys(redis: Redis, pattern: str) -> list[str]:
    reply = redis.reply("KEYS", pattern).split("\r\n")
    return sorted(line for line in reply[2::2] if line)


async def _read_all(live: LiveRedis, path: str, size: int) -> bytes:
    out = b""
    while len(out) < size:
        _, data = await live.read(path, len(out), 7)
        assert data, f"nothing at {len(out)}"
        out += data
    return out


@pytest_twisted.ensureDeferred
async def test_appends_land_in_chunks_and_read_back_across_them(
    live: LiveRedis,
    redis: Redis,
) -> None:
    _hold(redis, "a/b")
    size = 0
    sent = b""
    for piece in (b"", b"0123", b"456789abcdef", b"ghijklmnopqrstuvw"):
        size = await live.append("a/b", LEASE, "7", size, piece, "g1")
        sent += piece
        assert size == len(sent)
    assert _keys(redis, "httpfstream:{a/b}:c:*") == [
        "httpfstream:{a/b}:c:0",
        "httpfstream:{a/b}:c:1",
        "httpfstream:{a/b}:c:2",
        "httpfstream:{a/b}:c:3",
    ]
    assert await _read_all(live, "a/b", size) == sent
    state = await live.state("a/b")
    assert state is not None
    assert (state.size, state.start, state.base, state.gen) == (33, 0, 0, "g1")
    assert state.held and not state.complete
    # The feed has the growth, as shared mode's followers expect it.
    feed = redis.reply("XREVRANGE", "httpfstream:{a/b}:feed", "+", "-", "COUNT", "1")
    assert "33-0" in feed and "\r\ng\r\n" in feed
    assert [path for path, _ in await live.paths()] == ["a/b"]


@pytest_twisted.ensureDeferred
async def test_a_stale_lease_a_wrong_offset_and_the_cap_append_nothing(
    live: LiveRedis,
    redis: Redis,
) -> None:
    _hold(redis, "x")
    await live.append("x", LEASE, "7", 0, b"abc", "g")
    with pytest.raises(Fenced):
        await live.append("x", "6 server-b", "6", 3, b"stale", "g")
    with pytest.raises(SizeChanged):
        await live.append("x", LEASE, "7", 2, b"late", "g")
    with pytest.raises(LiveFull):
        await live.append("x", LEASE, "7", 3, b"y" * 33, "g")
    # The lease gone (expired): fenced too.
    redis.command("DEL", "httpfstream:{x}:lease")
    with pytest.raises(Fenced):
        await live.append("x", LEASE, "7", 3, b"z", "g")
    assert await _read_all(live, "x", 3) == b"abc"
    state = await live.state("x")
    assert state is not None and state.size == 3 and not state.held


@pytest_twisted.ensureDeferred
async def test_a_moved_chunk_is_read_elsewhere_and_makes_room(
    live: LiveRedis,
    redis: Redis,
) -> None:
    _hold(redis, "m")
    data = bytes(range(65, 65 + 30))
    await live.append("m", LEASE, "7", 0, data, "g")
    assert await live.moved("m", 0)
    assert not await live.moved("m", 0)  # base moved on: a second try does nothing
    state, got = await live.read("m", 3, 20)
    assert state is not None and state.base == CHUNK and got == b""
    state, got = await live.read("m", 12, 5)
    assert got == data[12:17]
    # The cap counts only what Redis holds: 20 + 15 fits now.
    await live.append("m", LEASE, "7", 30, b"+" * 15, "g")
    assert _keys(redis, "httpfstream:{m}:c:*") == [
        "httpfstream:{m}:c:1",
        "httpfstream:{m}:c:2",
        "httpfstream:{m}:c:3",
        "httpfstream:{m}:c:4",
    ]


@pytest_twisted.ensureDeferred
async def test_finish_drops_the_live_data_only_when_nobody_holds_it_and_it_did_not_grow(
    live: LiveRedis,
    redis: Redis,
) -> None:
    _hold(redis, "f")
    await live.append("f", LEASE, "7", 0, b"x" * 25, "g")
    await live.moved("f", 0)
    assert await live.finish("f", 25) is None  # held
    redis.command("DEL", "httpfstream:{f}:lease")
    assert await live.finish("f", 24) is None  # grew past what was archived
    assert await live.finish("f", 25) == (0, CHUNK)
    assert await live.state("f") is None
    assert _keys(redis, "httpfstream:{f}:*") == ["httpfstream:{f}:feed"]
    assert await live.paths() == []


@pytest_twisted.ensureDeferred
async def test_a_resumed_resource_starts_its_live_data_where_its_object_ends(
    live: LiveRedis,
    redis: Redis,
) -> None:
    _hold(redis, "r")
    await live.append("r", LEASE, "7", 1000, b"", "g0")
    await live.append("r", LEASE, "7", 1000, b"0123456789AB", "g0")
    state, got = await live.read("r", 1005, 100)
    assert state is not None and (state.start, state.base, state.size) == (
        1000,
        1000,
        1012,
    )
    assert got == b"56789AB"
    # Chunks count from the start: 1000-1009 is chunk 0.
    assert _keys(redis, "httpfstream:{r}:c:*") == [
        "httpfstream:{r}:c:0",
        "httpfstream:{r}:c:1",
    ]


@pytest_twisted.ensureDeferred
async def test_the_end_of_a_session_says_whether_it_is_complete(
    live: LiveRedis,
    redis: Redis,
) -> None:
    from httpfstream.shared.scripts import END

    _hold(redis, "e")
    await live.append("e", LEASE, "7", 0, b"done", "g")
    redis.command("SET", "httpfstream:{e}:fence", "7")
    args: Any = [LEASE, "7", "server-a", "4", "1000", "", "60000", "32"]
    keys = [f"httpfstream:{{e}}:{k}" for k in ("lease", "feed", "fence", "live")]
    assert await live.link.run(END, keys, args) == 1
    state = await live.state("e")
    assert state is not None and state.complete and not state.held
