"""
The load generator: one process, one reactor, Autobahn clients.

    python bench/loadgen.py '{"scenario": "stream", "url": ..., ...}'

prints one JSON object with what it measured.  Every appended message is
``SIZE`` bytes: an 8-byte sequence number, an 8-byte send time
(``time.monotonic_ns``, comparable across processes on one machine) and
filler.  Followers cut their byte stream back into ``SIZE``-byte records
(the server may join or split messages), so each checks that it got every
message exactly once, in order, intact, and measures each one's latency.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

HEADER = struct.Struct("!QQ")


def record(seq: int, size: int, filler: bytes) -> bytes:
    return HEADER.pack(seq, time.monotonic_ns()) + filler[: size - HEADER.size]


class Checker:
    """Cuts a follower's bytes into records and checks them."""

    def __init__(self, size: int, first: int = 0, sample: int = 1) -> None:
        self.size = size
        self.expected = first
        self.buffer = bytearray()
        self.errors: list[str] = []
        self.latencies: list[int] = []
        self.sample = sample
        self.filler = b"x" * (size - HEADER.size)
        self.bytes = 0

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        buffer = self.buffer
        buffer += data
        size = self.size
        n = len(buffer) // size
        if not n:
            return
        now = time.monotonic_ns()
        view = memoryview(buffer)
        for i in range(n):
            start = i * size
            seq, sent = HEADER.unpack_from(view, start)
            if seq != self.expected:
                if len(self.errors) < 5:
                    self.errors.append(f"expected {self.expected}, got {seq}")
                self.expected = seq
            self.expected += 1
            if seq % self.sample == 0:
                self.latencies.append(now - sent)
        if view[(n - 1) * size + HEADER.size : n * size] != self.filler:
            self.errors.append(f"corrupt record {self.expected - 1}")
        view.release()
        del buffer[: n * size]


class Follower(WebSocketClientProtocol):
    checker: Checker

    def onConnect(self, response: Any) -> None:
        self.status = 101

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.factory.stalled:
            self.checker.feed(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(RuntimeError(reason))
        self.factory.closed.callback(code)


@implementer(IPushProducer)
class Appender(WebSocketClientProtocol):
    """Sends ``count`` records, at full speed or at ``rate`` per second."""

    paused = False

    def onOpen(self) -> None:
        self.transport.registerProducer(self, True)
        self.factory.opened.callback(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(RuntimeError(reason))
        self.factory.closed.callback(code)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.running:
            self._pump()

    def stopProducing(self) -> None:
        self.paused = True

    running = False

    def start(self, count: int, size: int, rate: float) -> Deferred[float]:
        self.count, self.size, self.seq = count, size, 0
        self.filler = b"x" * size
        self.done: Deferred[float] = Deferred()
        self.started = time.monotonic()
        self.running = True
        if rate:
            per_tick = max(1, int(rate / 100))
            self.loop = LoopingCall(self._tick, per_tick)
            self.loop.start(per_tick / rate)
        else:
            self.loop = None
            self._pump()
        return self.done

    def _tick(self, n: int) -> None:
        for _ in range(n):
            if self.seq >= self.count:
                break
            self.sendMessage(record(self.seq, self.size, self.filler), isBinary=True)
            self.seq += 1
        self._check_done()

    def _pump(self) -> None:
        while not self.paused and self.seq < self.count:
            self.sendMessage(record(self.seq, self.size, self.filler), isBinary=True)
            self.seq += 1
        self._check_done()

    def _check_done(self) -> None:
        if self.seq >= self.count and self.running:
            self.running = False
            if self.loop is not None:
                self.loop.stop()
            self.done.callback(time.monotonic() - self.started)


async def connect(url: str, protocol: type, verb: str, stalled: bool = False) -> Any:
    factory = WebSocketClientFactory("ws" + url[4:], headers={"X-Verb": verb})
    factory.protocol = protocol
    factory.setProtocolOptions(
        utf8validateIncoming=False,
        closeHandshakeTimeout=30,
        openHandshakeTimeout=30,
    )
    factory.opened = Deferred()
    factory.closed = Deferred()
    factory.stalled = stalled
    proto = await TCP4ClientEndpoint(
        reactor, factory.host, factory.port, timeout=30
    ).connect(factory)
    await factory.opened
    if stalled:
        proto.transport.pauseProducing()
    return proto


def percentile(values: list[int], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] / 1e6


async def connect_followers(urls: list[str]) -> list[Any]:
    """One follower per URL, connected 200 at a time."""
    followers: list[Any] = []
    for i in range(0, len(urls), 200):
        batch = await DeferredList(
            [
                Deferred.fromCoroutine(connect(url, Follower, "FOLLOW"))
                for url in urls[i : i + 200]
            ],
            fireOnOneErrback=True,
        )
        followers += [f for _, f in batch]
    return followers


def verdict(
    followers: list[Any], codes: list[Any], count: int
) -> tuple[list[str], list[int]]:
    """Every follower's errors (closed badly, missing or bad records) and latencies."""
    errors: list[str] = []
    latencies: list[int] = []
    for f, (_, code) in zip(followers, codes, strict=True):
        if code != 1000:
            errors.append(f"follower closed {code}")
        if f.checker.expected != count or f.checker.buffer:
            errors.append(f"follower got {f.checker.expected} of {count} messages")
        errors += f.checker.errors
        latencies += f.checker.latencies
    return errors, latencies


def summary(
    latencies: list[int], errors: list[str], cpu0: Any, cpu1: Any, elapsed: float
) -> dict[str, Any]:
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0),
        "byte_exact": not errors,
        "errors": errors[:10],
        "loadgen_cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
    }


async def stream(args: dict[str, Any]) -> dict[str, Any]:
    """One appender, N followers, live."""
    url, size, count = args["url"], args["size"], args["count"]
    rate, n = args.get("rate", 0), args["followers"]
    stalled = args.get("stalled", 0)
    appender = await connect(url, Appender, "APPEND")
    # Shared mode: followers spread over these servers' URLs in turn.
    spread = args.get("follow_urls") or [url]
    followers = await connect_followers([spread[i % len(spread)] for i in range(n)])
    sample = max(1, count * n // 200_000)
    for f in followers:
        f.checker = Checker(size, sample=sample)
    stalls = [
        await connect(url, Follower, "FOLLOW", stalled=True) for _ in range(stalled)
    ]
    started = time.monotonic()
    cpu0 = os.times()
    send_seconds = await appender.start(count, size, rate)
    appender.sendClose(1000)
    await appender.factory.closed
    append_seconds = time.monotonic() - started
    codes = await DeferredList([f.factory.closed for f in followers])
    elapsed = time.monotonic() - started
    cpu1 = os.times()
    for s in stalls:
        s.transport.abortConnection()
    errors, latencies = verdict(followers, codes, count)
    total = size * count
    return {
        "messages": count,
        "bytes_appended": total,
        "send_seconds": send_seconds,
        "append_seconds": append_seconds,
        "seconds": elapsed,
        "append_MBps": total / append_seconds / 1e6,
        "delivered_MBps": total * n / elapsed / 1e6,
        "messages_per_s": count / elapsed,
        **summary(latencies, errors, cpu0, cpu1, elapsed),
    }


async def catchup(args: dict[str, Any]) -> dict[str, Any]:
    """A follower reading a resource that is already ``count`` records long."""
    url, size, count = args["url"], args["size"], args["count"]
    appender = await connect(url, Appender, "APPEND")
    await appender.start(count, size, 0)
    if not args["live"]:
        appender.sendClose(1000)
        await appender.factory.closed
        checker = Checker(size, sample=max(1, count // 10_000))
        started = time.monotonic()
        response = await treq.get(url + "?follow=1", unbuffered=True)
        await treq.collect(response, checker.feed)
    else:
        # The appender stays open: the follower joins a live resource at
        # offset 0 and reads its history from the tail and the disk.
        checker = Checker(size, sample=max(1, count // 10_000))
        started = time.monotonic()
        follower = await connect(url, Follower, "FOLLOW")
        follower.checker = checker
        appender.sendClose(1000)
        await follower.factory.closed
    elapsed = time.monotonic() - started
    errors = checker.errors[:]
    if checker.expected != count:
        errors.append(f"got {checker.expected} of {count} messages")
    return {
        "bytes": size * count,
        "seconds": elapsed,
        "catchup_MBps": size * count / elapsed / 1e6,
        "byte_exact": not errors,
        "errors": errors,
    }


async def post(args: dict[str, Any]) -> dict[str, Any]:
    """``clients`` clients POSTing ``size``-byte bodies for ``seconds``."""
    base, size, clients = args["url"], args["size"], args["clients"]
    deadline = time.monotonic() + args["seconds"]
    latencies: list[int] = []
    errors: list[str] = []
    body = b"p" * size

    async def client(i: int) -> int:
        url = f"{base}-{i}"
        n = 0
        while time.monotonic() < deadline:
            t = time.monotonic_ns()
            response = await treq.post(url, data=body, timeout=30)
            await treq.content(response)
            latencies.append(time.monotonic_ns() - t)
            if response.code != 200:
                errors.append(f"POST {response.code}")
            n += 1
        sizes = await treq.head(url)
        expected = n * size
        got = int(sizes.headers.getRawHeaders(b"httpfstream-size")[0])
        if got != expected:
            errors.append(f"{url}: {got} bytes, expected {expected}")
        return n

    started = time.monotonic()
    counts = await DeferredList(
        [Deferred.fromCoroutine(client(i)) for i in range(clients)]
    )
    elapsed = time.monotonic() - started
    total = sum(n for _, n in counts)
    return {
        "requests": total,
        "requests_per_s": total / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "byte_exact": not errors,
        "errors": errors[:10],
    }


async def tcp(args: dict[str, Any]) -> dict[str, Any]:
    """Raw loopback TCP: send ``total`` bytes to a sink that counts them."""
    from twisted.internet.protocol import Protocol

    total, chunk = args["total"], b"t" * (64 << 10)

    @implementer(IPushProducer)
    class Sender(Protocol):
        def connectionMade(self) -> None:
            self.sent = 0
            self.paused = False
            self.done: Deferred[None] = Deferred()
            self.transport.registerProducer(self, True)
            self.resumeProducing()

        def pauseProducing(self) -> None:
            self.paused = True

        def stopProducing(self) -> None:
            self.paused = True

        def resumeProducing(self) -> None:
            self.paused = False
            while not self.paused and self.sent < total:
                self.transport.write(chunk)
                self.sent += len(chunk)
            if self.sent >= total and not self.done.called:
                self.transport.unregisterProducer()
                self.transport.loseConnection()

        def dataReceived(self, data: bytes) -> None:
            pass

        def connectionLost(self, reason: object = None) -> None:
            if not self.done.called:
                self.done.callback(None)

    from twisted.internet.endpoints import connectProtocol

    started = time.monotonic()
    sender = Sender()
    await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", args["port"]), sender
    )
    await sender.done
    # The sink answers with the count once it has read everything.
    elapsed = time.monotonic() - started
    return {"bytes": total, "seconds": elapsed, "MBps": total / elapsed / 1e6}


async def many(args: dict[str, Any]) -> dict[str, Any]:
    """``resources`` resources, each with one appender and ``followers``."""
    base, size, count = args["url"], args["size"], args["count"]
    rate, n, r = args["rate"], args["followers"], args["resources"]
    urls = [f"{base}-{i}" for i in range(r)]
    appenders = [await connect(url, Appender, "APPEND") for url in urls]
    followers = await connect_followers([url for url in urls for _ in range(n)])
    for f in followers:
        f.checker = Checker(size, sample=max(1, count // 20))
    started = time.monotonic()
    cpu0 = os.times()
    await DeferredList([a.start(count, size, rate) for a in appenders])
    for a in appenders:
        a.sendClose(1000)
    codes = await DeferredList([f.factory.closed for f in followers])
    elapsed = time.monotonic() - started
    cpu1 = os.times()
    errors, latencies = verdict(followers, codes, count)
    return {
        "followers_total": len(followers),
        "seconds": elapsed,
        "delivered_MBps": size * count * len(followers) / elapsed / 1e6,
        **summary(latencies, errors, cpu0, cpu1, elapsed),
    }


SCENARIOS = {
    "many": many,
    "stream": stream,
    "catchup": catchup,
    "post": post,
    "tcp": tcp,
}


def main() -> None:
    args = json.loads(sys.argv[1])
    result: dict[str, Any] = {}

    async def run() -> None:
        try:
            result.update(await SCENARIOS[args["scenario"]](args))
        except Exception as e:
            result.update({"byte_exact": False, "errors": [f"{type(e).__name__}: {e}"]})
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run()))
    # Bound every run, whatever happens.
    reactor.callLater(args.get("timeout", 300), reactor.stop)
    reactor.run()
    if not result:
        result = {"byte_exact": False, "errors": ["timed out"]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
