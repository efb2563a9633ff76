"""
Hostile input: malformed HTTP and WebSocket bytes from raw sockets, fuzzed
with hypothesis.  After each case the server must still answer, a
concurrent stream must stay byte-exact, and nothing may appear outside the
storage root.
"""

from __future__ import annotations

import itertools
import os
import struct
import time

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clients import appender, close, finished, get, raw, upgrade_request, ws
from twisted.logger import LogLevel, capturedLogs, formatEvent

METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T", b"", b"GET GET"]

#: Cases per run of the fuzzing test: a few for ``make test``; CI sets
#: HTTPFSTREAM_FUZZ_EXAMPLES=10000 (.ci/run).
FUZZ_EXAMPLES = int(os.environ.get("HTTPFSTREAM_FUZZ_EXAMPLES", "60"))


@st.composite
def request_heads(draw):
    method = draw(st.sampled_from(METHODS))
    path = draw(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [
                    b"/logs/../../etc/passwd",
                    b"/logs/%2e%2e/%2e%2e/x",
                    b"/logs/..%5c..%5cx",
                    b"/logs/a\\..\\..\\x",
                    b"/logs/%c0%ae%c0%ae/x",  # overlong UTF-8 '.'
                    b"/logs/%00",
                    b"/logs/" + b"a/" * 200 + b"x",
                    b"/logs/" + b"%ff" * 10,
                ]
            ),
        )
    )
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b""]))
    headers = draw(
        st.lists(
            st.one_of(
                st.binary(max_size=30),
                st.sampled_from(
                    [
                        b"Content-Length: -1",
                        b"Content-Length: 99999999999999999999",
                        b"Transfer-Encoding: chunked",
                        b"Upgrade: websocket",
                        b"Connection: Upgrade",
                        b"Sec-WebSocket-Version: 13",
                        b"Sec-WebSocket-Key: bad",
                        b"X-Verb: APPEND",
                        b"Range: bytes=9-1",
                        b"Range: bytes=-",
                    ]
                ),
            ),
            max_size=6,
        )
    )
    body = draw(st.binary(max_size=64))
    return b"%s %s %s\r\n%s\r\n\r\n%s" % (
        method,
        path,
        version,
        b"\r\n".join(headers),
        body,
    )


@st.composite
def frames(draw):
    opcode = draw(st.integers(0, 15))
    fin = draw(st.booleans())
    rsv = draw(st.integers(0, 7))
    masked = draw(st.booleans())
    payload = draw(st.binary(max_size=200))
    length = draw(
        st.one_of(st.just(len(payload)), st.integers(0, 2**16), st.just(2**63))
    )
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    if length < 126:
        head += bytes([(0x80 if masked else 0) | length])
    elif length < 2**16:
        head += bytes([(0x80 if masked else 0) | 126]) + struct.pack("!H", length)
    else:
        head += bytes([(0x80 if masked else 0) | 127]) + struct.pack("!Q", length)
    return head + (b"\0\0\0\0" if masked else b"") + payload


@pytest.fixture
def stream(make_server):
    """
    A server with a live stream kept flowing across the examples; says how
    many cases ran and how fast (shown with ``pytest -s``).
    """
    server = make_server(handshake_timeout=2, max_message_size=1 << 16)
    state = {"server": server, "n": itertools.count()}
    with capturedLogs() as events:
        yield state
    # Hostile input is refused, never a crash or a failure in the log.
    critical = [e for e in events if e.get("log_level") is LogLevel.critical]
    assert critical == [], [formatEvent(e) for e in critical[:3]]
    if state.get("cases"):
        seconds = time.monotonic() - state["started"]
        print(
            f"\nhostile input: {state['cases']} cases in {seconds:.1f}s,"
            f" {state['cases'] / seconds:.0f} cases/s"
        )


async def _check_alive(state, a, f) -> None:
    server = state["server"]
    i = next(state["n"])
    marker = b"<%d>" % i
    a.sendMessage(marker)
    await f.until(lambda: bytes(f.received).endswith(marker))
    status, _, _ = await get(server.url("canary.log"))
    assert status == 200
    # The follower has exactly the file's bytes so far.
    assert server.file("canary.log").getContent().startswith(bytes(f.received))


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["http", "append-frames", "follow-frames"]),
    head=request_heads(),
    junk=st.lists(frames(), min_size=1, max_size=4),
)
@pytest_twisted.ensureDeferred
async def test_malformed_input_never_hurts_others(stream, kind, head, junk):
    server = stream["server"]
    if "a" not in stream:
        stream["a"] = await appender(server, "canary.log")
        stream["f"] = await ws(server.ws_url("canary.log"))
        stream["started"] = time.monotonic()
    stream["cases"] = stream.get("cases", 0) + 1
    a, f = stream["a"], stream["f"]
    client = await raw(server)
    if kind == "http":
        client.send(head)
    else:
        verb = "APPEND" if kind == "append-frames" else "FOLLOW"
        name = f"fuzz-{next(stream['n'])}.log"
        if verb == "FOLLOW":
            await get(server.url(name), method="POST", data=b"seed")
        client.send(upgrade_request(f"/logs/{name}", X_Verb=verb))
        await client.until(lambda b: b"\r\n\r\n" in b)
        client.send(b"".join(junk))
    client.transport.loseConnection()
    await client.closed
    await _check_alive(stream, a, f)
    outside = [p.basename() for p in server.root.parent().children()]
    assert outside == ["root"], outside


async def test_garbage_between_appends_leaves_the_stream_exact(stream):
    server = stream["server"]
    a = await appender(server, "canary.log")
    f = await ws(server.ws_url("canary.log"))
    for i in range(10):
        a.sendMessage(b"<%d>" % i)
        client = await raw(server)
        client.send(b"GARBAGE\r\n\r\n" + bytes(range(256)))
        await client.closed
    assert await close(a) == 1000
    assert await finished(f) == 1000
    assert bytes(f.received) == server.file("canary.log").getContent()


async def test_slow_clients_are_timed_out_without_starving_others(make_server):
    from twisted.internet import reactor
    from twisted.internet.defer import DeferredList

    server = make_server(site_timeout=2, handshake_timeout=2)
    await get(server.url("slow.log"), method="POST", data=b"seed")
    stalled = []
    for i in range(60):
        client = await raw(server)
        if i % 3 == 0:  # a request head that never ends
            client.send(b"GET /logs/slow.log HTTP/1.1\r\nHost: x\r\n")
        elif i % 3 == 1:  # a WebSocket handshake cut short
            client.send(b"GET /logs/slow.log HTTP/1.1\r\nUpgrade: websocket\r\n")
        else:  # a POST body that stalls
            client.send(
                b"POST /logs/slow.log HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 1000\r\n\r\npartial"
            )
        stalled.append(client)
    # Everyone else is served meanwhile.
    a = await appender(server, "busy.log")
    f = await ws(server.ws_url("busy.log"))
    a.sendMessage(b"not starved")
    await f.until_bytes(11)
    assert (await get(server.url("slow.log")))[2] == b"seed"
    await close(a)
    # And every stalled connection is closed by the server.
    await DeferredList(
        [c.closed.addTimeout(10, reactor) for c in stalled], fireOnOneErrback=True
    )
    assert server.file("slow.log").getContent() == b"seed"
