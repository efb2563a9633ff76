"""
`StreamRegistry`: the service that owns every stream in use, the appender
slots, the limits, and shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from .names import Name
from .store import FileStore, IStore, SizeMismatch
from .stream import AppenderObserver, FsyncPolicy, Stream

__all__ = ["AppenderConflict", "ShuttingDown", "StreamRegistry"]

_log = Logger()


class AppenderConflict(Exception):
    """Another appender holds the resource."""


class ShuttingDown(Exception):
    """The registry is stopping and takes no new work."""


class StreamRegistry(Service):
    """
    Every resource in use under one storage root, by name.

    Start it (``setServiceParent`` or ``startService``) before serving.  On
    stop it closes every follower with 1001, persists and syncs what every
    appender sent, closes them with 1001 and closes the files.

    :param root: the storage root directory; created if missing.
    :param max_message_size: the largest WebSocket message or POST body an
        appender may send, in bytes (0: no limit).
    :param max_resource_size: the most bytes a resource may hold (0: no
        limit).
    :param fsync: when appended bytes are synced: ``"never"``, ``"close"``
        (when the appender's session ends) or ``"always"``.
    :param tail_size: recent bytes per stream kept in memory for followers.
    :param queue_size: bytes queued for writing past which an appender's
        connection stops being read.
    :param read_size: the most bytes sent to a follower in one message.
    :param ping_interval: seconds between keep-alive pings on idle
        WebSocket connections (0: none).  Whole seconds: Autobahn's timers
        round down.
    :param ping_timeout: seconds a peer has to answer a ping.
    :param handshake_timeout: seconds a WebSocket opening handshake may take.
    :param max_followers: the most readers (followers, snapshots in
        progress) at once over all resources; more get ``503`` (0: no
        limit).
    :param max_followers_per_resource: the same, per resource.
    :param reactor: the reactor (default: the global one).
    :param store: where files live (default: a `FileStore` on ``root``).
    """

    name = "httpfstream-registry"

    def __init__(
        self,
        root: str | FilePath[str],
        *,
        max_message_size: int = 16 << 20,
        max_resource_size: int = 64 << 30,
        fsync: str | FsyncPolicy = FsyncPolicy.CLOSE,
        tail_size: int = 1 << 20,
        queue_size: int = 4 << 20,
        read_size: int = 256 << 10,
        ping_interval: int = 30,
        ping_timeout: int = 30,
        handshake_timeout: int = 10,
        max_followers: int = 20_000,
        max_followers_per_resource: int = 5_000,
        reactor: Any = None,
        store: IStore | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.root = root if isinstance(root, FilePath) else FilePath(root)
        self.reactor: IReactorTime = reactor
        self.max_message_size = max_message_size
        self.max_resource_size = max_resource_size
        self.fsync = FsyncPolicy(fsync)
        self.tail_size = tail_size
        self.queue_size = queue_size
        self.read_size = read_size
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.handshake_timeout = handshake_timeout
        self.max_followers = max_followers
        self.max_followers_per_resource = max_followers_per_resource
        self._store: IStore = store or FileStore(self.root, reactor)
        self._streams: dict[Name, Stream] = {}
        self._opening: dict[Name, Deferred[None]] = {}
        self._claimed: set[Name] = set()
        self._closing: list[Deferred[None]] = []
        self._all_idle: Deferred[None] | None = None

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        self._store.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for stream in list(self._streams.values()):
            stream.shutdown()
        d: Deferred[None]
        if self._streams or self._opening:
            self._all_idle = d = Deferred()
            d.addTimeout(15, self.reactor, onTimeoutCancel=self._force_close)
        else:
            d = succeed(None)

        def close_files(_: object) -> Deferred[Any]:
            return DeferredList(self._closing, consumeErrors=True)

        d.addCallback(close_files)
        d.addBoth(lambda _: self._store.stop())
        return d

    def _force_close(self, result: object, timeout: float) -> None:
        _log.warn(
            "{count} streams still in use after {timeout}s; closing them",
            count=len(self._streams),
            timeout=timeout,
        )
        for stream in list(self._streams.values()):
            self._idle(stream)

    # -- what the resource and protocols use --------------------------------

    def room_for_follower(self, stream: Stream) -> bool:
        """Whether one more reader of ``stream`` stays within the limits."""
        per = self.max_followers_per_resource
        if per and stream.followers >= per:
            return False
        total = self.max_followers
        return not total or sum(s.followers for s in self._streams.values()) < total

    def active(self, name: Name) -> bool:
        """Whether an appender holds (or is being given) the resource."""
        return name in self._claimed

    def acquire(
        self,
        name: Name,
        appender: AppenderObserver,
        expected_size: int | None = None,
    ) -> Deferred[Stream]:
        """
        Give ``appender`` the resource's appender slot, creating the file if
        needed.  The slot is taken at once, so of racing callers exactly one
        wins; it is released by `Stream.end_session`.

        :raises AppenderConflict: another appender holds it.
        :raises store.SizeMismatch: ``expected_size`` is not its size.
        :raises store.NotAResource: the name cannot hold a resource.
        """
        if not self.running:
            return fail(ShuttingDown())
        if name in self._claimed:
            return fail(AppenderConflict())
        self._claimed.add(name)

        async def claim() -> Stream:
            try:
                stream = await self._get(
                    name, True, expected_size, lambda s: s.begin_session(appender)
                )
            except BaseException:
                self._claimed.discard(name)
                raise
            stream.release()
            return stream

        return Deferred.fromCoroutine(claim())

    def open(self, name: Name) -> Deferred[Stream]:
        """
        The stream of an existing resource, held: the caller must call
        `Stream.release` once (after starting its cursor, if any).

        :raises store.NotFound: the resource was never written.
        :raises store.NotAResource: the name cannot hold a resource.
        """
        if not self.running:
            return fail(ShuttingDown())
        return Deferred.fromCoroutine(self._get(name, False, None, None))

    def describe(self, name: Name) -> Deferred[tuple[bool, int | None]]:
        """
        ``(active, size)`` for the response headers: whether an appender
        holds the resource, and its persisted size (``None``: no file).
        """

        async def look() -> tuple[bool, int | None]:
            while name in self._opening:
                await self._opening[name]
            stream = self._streams.get(name)
            if stream is not None:
                return stream.active, stream.size
            size = await self._store.stat(name)
            return name in self._claimed, size

        return Deferred.fromCoroutine(look())

    # -- internals ----------------------------------------------------------

    async def _get(
        self,
        name: Name,
        create: bool,
        expected_size: int | None,
        then: Callable[[Stream], None] | None,
    ) -> Stream:
        """
        The stream for ``name``, opened if need be, held for the caller.
        ``then`` runs on it before anybody else sees it.
        """
        while True:
            stream = self._streams.get(name)
            if stream is not None:
                if expected_size is not None and stream.size != expected_size:
                    raise SizeMismatch(stream.size)
                if then is not None:
                    then(stream)
                stream.hold()
                return stream
            opening = self._opening.get(name)
            if opening is None:
                break
            await opening
        done: Deferred[None] = Deferred()
        self._opening[name] = done
        try:
            file = await self._store.open(name, create, expected_size)
        except BaseException:
            del self._opening[name]
            done.callback(None)
            raise
        stream = Stream(
            name,
            file,
            fsync=self.fsync,
            max_size=self.max_resource_size,
            tail_size=self.tail_size,
            queue_size=self.queue_size,
            read_size=self.read_size,
            on_session_end=self._session_ended,
            on_idle=self._idle,
        )
        self._streams[name] = stream
        if then is not None:
            then(stream)
        stream.hold()
        del self._opening[name]
        done.callback(None)
        return stream

    def _session_ended(self, stream: Stream) -> None:
        self._claimed.discard(stream.name)

    def _idle(self, stream: Stream) -> None:
        if self._streams.get(stream.name) is not stream:
            return
        del self._streams[stream.name]
        d = stream.close()
        d.addErrback(
            lambda f: _log.failure("closing {name}", f, name="/".join(stream.name))
        )
        if not self.running:
            self._closing.append(d)
            if not self._streams and self._all_idle is not None:
                all_idle, self._all_idle = self._all_idle, None
                all_idle.callback(None)
