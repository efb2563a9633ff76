"""
Property: whatever the chunks and whenever followers join, each follower's
bytes are the file's bytes from its offset (docs/PROTOCOL.md section 4).
"""

from __future__ import annotations

import itertools
import random

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clients import appender, close, finished
from support.followers import open_follower

_names = itertools.count()

chunk = st.tuples(
    st.just("chunk"),
    st.integers(1, 64 << 10),
    st.sampled_from(["binary", "text", "invalid-text"]),
    st.integers(0, 2**32),
)
join = st.tuples(
    st.just("join"),
    st.sampled_from(["ws", "ws-text", "http"]),
    st.floats(-1.5, 1.0),  # where, relative to the acknowledged size
    st.booleans(),  # wait for every byte sent so far to be acknowledged first
)


def _payload(size: int, kind: str, seed: int) -> bytes:
    rng = random.Random(seed)
    if kind == "binary":
        return rng.randbytes(size)
    if kind == "text":
        return bytes(rng.choice(b"abcdef \n") for _ in range(size))
    return b"\xff" + rng.randbytes(size - 1)


@pytest.fixture
def small_tail_server(make_server):
    """A tail and messages small enough that followers also read the file."""
    return make_server(tail_size=8 << 10, read_size=32 << 10)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    actions=st.lists(st.one_of(chunk, join), min_size=1, max_size=14),
    clean=st.booleans(),
)
@pytest_twisted.ensureDeferred
async def test_followers_get_the_files_bytes_from_their_offset(
    small_tail_server, actions, clean
):
    server = small_tail_server
    name = f"prop-{next(_names)}.bin"
    a = await appender(server, name, ack=1)
    sent = 0
    followers = []
    for action in actions:
        if action[0] == "chunk":
            _, size, kind, seed = action
            a.sendMessage(_payload(size, kind, seed), isBinary=kind == "binary")
            sent += size
            continue
        _, how, where, settle = action
        if settle and sent:
            await a.until_ack(sent)
        acked = a.acks[-1] if a.acks else 0
        offset = int(where * acked) if where <= 0 or acked else 0
        query = {"offset": offset}
        if how == "ws-text":
            query["frames"] = "text"
        f = await open_follower(server, name, how.removesuffix("-text"), **query)
        assert f.live, (f.status, bytes(f.received))
        followers.append(f)
    if clean:
        assert await close(a) == 1000
        assert a.acks[-1] == sent
    else:
        a.transport.abortConnection()
        await finished(a)
    for f in followers:
        end = await f.ended()
        assert end.clean, end
        if f.transport_name == "ws":  # HTTP has no close code to tell
            assert end.code == (1000 if clean else 4000)
    content = server.file(name).getContent()
    if clean:
        assert len(content) == sent
    for f in followers:
        assert f.received == content[f.offset :]
