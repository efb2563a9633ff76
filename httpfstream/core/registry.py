"""
`StreamRegistry`: the service that owns every stream in use, the appender
slots (through `coordination.IAppenderSlots`), the reader limits, the
session counters, and shutdown.  It is the core's one facade: the web layer
calls it and catches only `Refusal`, which every method here raises for
whatever the store, the streams and the coordination seams turned down,
carrying the state it was decided on.

What it hands out can be given back early: cancelling the Deferred of
`StreamRegistry.open` or `StreamRegistry.begin_append` (as the resource does
when its client goes away) never leaves a hold or a slot behind; whatever
was being opened is released once it is open.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from ..protocol import ResourceState
from .coordination import (
    IAppenderSlots,
    IGrowthFeed,
    ISlot,
    LocalFeed,
    LocalSlots,
    SlotTaken,
)
from .names import Name
from .records import Counters, Kind, SessionRecord
from .refusal import RETRY_SOON, Refusal, refusing
from .retention import Retention
from .session import AppendSession
from .store import (
    FileStore,
    IArchivingStore,
    IStore,
    IStoreFile,
    Listing,
    NotAResource,
    NotFound,
    SizeMismatch,
)
from .stream import FsyncPolicy, Lines, PastTheEnd, ResourceFull, Span, Stream
from .streams import OpenStreams, cancellable
from .writes import out_of_space

__all__ = ["Refusal", "ResourceState", "StreamRegistry"]

_log = Logger()
_T = TypeVar("_T")

#: The state of a resource that does not exist.
_ABSENT = ResourceState(False, None)


def _no_such_resource() -> Refusal:
    return Refusal(404, "no such resource", state=_ABSENT)


@dataclass(frozen=True)
class _Appending:
    """Who begins an append session, for `StreamRegistry._get`."""

    slot: ISlot
    kind: Kind
    peer: str


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
    :param max_followers: the most readers (followers, snapshots in
        progress) at once over all resources; more get ``503`` (0: no
        limit).
    :param max_followers_per_resource: the same, per resource.
    :param shutdown_timeout: seconds `stopService` waits for sessions to
        end before it closes the files anyway.
    :param max_age: remove resources with no appender whose bytes have not
        changed for this many seconds, in a sweep every ``sweep_interval``
        seconds (0: keep everything).
    :param reactor: the reactor (default: the global one).
    :param store: where files live (default: a `FileStore` on ``root``).
    :param slots: who holds appender slots (default: this process alone).
    :param feed: growth written by other processes (default: none).
    :ivar counters: the sessions' running totals (`records.Counters`).
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
        max_followers: int = 20_000,
        max_followers_per_resource: int = 5_000,
        shutdown_timeout: float = 15,
        max_age: float = 0,
        sweep_interval: float = 3600,
        reactor: Any = None,
        store: IStore | None = None,
        slots: IAppenderSlots | None = None,
        feed: IGrowthFeed | None = None,
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
        self.max_followers = max_followers
        self.max_followers_per_resource = max_followers_per_resource
        self.shutdown_timeout = shutdown_timeout
        self.max_age = max_age
        self.sweep_interval = sweep_interval
        self.counters = Counters()
        self._store: IStore = store or FileStore(self.root, reactor)
        # A store that archives (--archive) hears of sessions' ends.
        self._archiving: IArchivingStore | None = IArchivingStore(self._store, None)
        self._slots: IAppenderSlots = slots or LocalSlots()
        self._feed: IGrowthFeed = feed or LocalFeed()
        self._streams = OpenStreams(self._store, self._feed, self._make_stream)
        self._retention = Retention(
            self._store, self.delete, self.counters, reactor, max_age, sweep_interval
        )
        self._held_slots: dict[Name, ISlot] = {}

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        self._store.start()
        super().startService()
        if self.max_age:
            self._retention.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._retention.stop()
        for stream in self._streams.named():
            stream.shutdown()
        d = self.when_idle()
        d.addTimeout(self.shutdown_timeout, self.reactor, onTimeoutCancel=self._forced)
        d.addBoth(lambda _: self._store.stop())
        return d

    def _forced(self, result: object, timeout: float) -> None:
        _log.warn(
            "{count} streams still in use after {timeout}s; closing them",
            count=len(self._streams),
            timeout=timeout,
        )
        for stream in self._streams.named():
            self._streams.idle(stream)

    def when_idle(self) -> Deferred[None]:
        """
        Fire once no stream is open or opening and every file is closed
        (at once if that is so now).
        """
        return self._streams.when_idle()

    # -- what the resource and protocols use --------------------------------

    @property
    def streams(self) -> int:
        """How many streams are open now."""
        return len(self._streams)

    def open_streams(self) -> list[Stream]:
        """The streams open now (for metrics)."""
        return self._streams.all()

    def _check_room(self, stream: Stream, what: str) -> None:
        """Refuse one more reader of ``stream`` past the limits (503)."""
        per = self.max_followers_per_resource
        total = self.max_followers
        if (per and stream.followers >= per) or (
            total and self.counters.readers >= total
        ):
            raise Refusal(
                503, f"too many {what}; try again later", RETRY_SOON, stream.state
            )

    def record(
        self, kind: Kind, name: Name, peer: str, offset: int = 0
    ) -> SessionRecord:
        """A new session's record, counted in `counters`."""
        return SessionRecord(self.counters, self.reactor, kind, name, peer, offset)

    def active(self, name: Name) -> bool:
        """Whether an appender holds (or is being given) the resource."""
        return self._slots.held(name)

    def followers(self, name: Name) -> int:
        """How many follow the resource live on this server now."""
        stream = self._streams.find(name)
        return 0 if stream is None else stream.state.followers

    def _call(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> Deferred[_T]:
        """Run ``work`` unless stopping, with its refusals made `Refusal`."""
        if not self.running:
            return Deferred.fromCoroutine(refusing(self._stopping(), self.counters))
        return Deferred.fromCoroutine(refusing(work(), self.counters))

    @staticmethod
    async def _stopping() -> Any:
        raise Refusal(503, "server shutting down", RETRY_SOON, reveal=False)

    def begin_append(
        self,
        name: Name,
        expected_size: int | None = None,
        *,
        kind: Kind = Kind.APPEND,
        peer: str = "",
        reserve: int = 0,
    ) -> Deferred[AppendSession]:
        """
        Take the resource's appender slot, creating its file if needed, and
        begin a session on it.  The slot is claimed before anything waits,
        so of racing callers exactly one wins; `AppendSession.end` gives it
        back.

        :param kind: `Kind.APPEND` or `Kind.POST`, for the record.
        :param peer: who appends, for the log.
        :param reserve: bytes the session will append (a POST's body): if
            they would take the resource past its maximum size, refuse
            (413) before anything is recorded.
        :raises Refusal: 409, another appender holds it; 412,
            ``expected_size`` is not its size; 400, the name cannot hold a
            resource; 413, it is full; 503, the server cannot now.
        """
        if not self.running:
            return self._call(self._stopping)
        claim = self._slots.claim(name)
        begun = self._call(
            lambda: self._begin(name, claim, expected_size, kind, peer, reserve)
        )
        return cancellable(begun, lambda s: s.end(None, "the requester went away"))

    async def _begin(
        self,
        name: Name,
        claim: Deferred[ISlot],
        expected_size: int | None,
        kind: Kind,
        peer: str,
        reserve: int,
    ) -> AppendSession:
        try:
            slot = await claim
        except SlotTaken:
            raise Refusal(
                409,
                "another appender holds this resource",
                state=await self.describe(name),
            ) from None
        try:
            stream, session = await self._get(
                name, True, expected_size, _Appending(slot, kind, peer)
            )
        except SizeMismatch as e:
            slot.release()
            raise Refusal(
                412,
                f"offset {expected_size} does not match the resource's size"
                f" ({e.size or 0} bytes)",
                state=ResourceState(False, e.size, e.complete, self.followers(name)),
            ) from None
        except NotAResource as e:
            slot.release()
            raise Refusal(400, f"cannot append here: {e}") from None
        except BaseException:
            slot.release()
            raise
        stream.release()  # the session keeps it open
        assert session is not None
        try:
            stream.check_append(reserve)
        except ResourceFull as e:
            # Nothing was recorded: the resource stays as it was.
            await session.end(None, str(e), outcome=413)
            raise Refusal(413, str(e), state=stream.state) from None
        try:
            # Incomplete, durably, before the appender hears yes.
            await stream.mark(False)
        except BaseException as e:
            if not out_of_space(e):  # else said in one line by refusing
                _log.failure("recording {name} incomplete", name="/".join(name))
            session.end(None, "could not record the session")
            raise
        return session

    def open(self, name: Name, reader: str | None = None) -> Deferred[Stream]:
        """
        The stream of an existing resource, held: the caller must call
        `Stream.release` once (after starting its cursor, if any).

        :param reader: what the caller will be (``"readers"``,
            ``"followers"``) if it counts against the reader limits; ``None``
            for a look at the state only.
        :raises Refusal: 404, the resource was never written (or the name
            cannot hold one); 503, too many readers, or the server cannot
            now.
        """
        opened = self._call(lambda: self._open(name, reader))
        return cancellable(opened, Stream.release)

    async def _open(self, name: Name, reader: str | None) -> Stream:
        try:
            stream, _ = await self._get(name, False, None, None)
        except (NotFound, NotAResource):
            raise _no_such_resource() from None
        if reader is not None:
            try:
                self._check_room(stream, reader)
            except Refusal:
                stream.release()
                raise
        return stream

    def locate(self, stream: Stream, lines: Lines) -> Deferred[Span]:
        """
        Where ``lines`` are in ``stream`` (held by the caller) now
        (section 13).

        :raises Refusal: 416, the first line asked for is past the end.
        """

        async def located() -> Span:
            try:
                return await stream.locate(lines)
            except PastTheEnd as e:
                raise Refusal(416, str(e), state=stream.state) from None

        return Deferred.fromCoroutine(refusing(located(), self.counters))

    def listing(self, folder: Name) -> Deferred[Listing]:
        """
        What ``folder`` holds (`store.Listing`).

        :raises Refusal: 404, no such folder.
        """

        async def listed() -> Listing:
            listing = await self._store.listing(folder)
            if listing is None:
                raise Refusal(404, "no such folder")
            return listing

        return self._call(listed)

    def delete(self, name: Name) -> Deferred[None]:
        """
        Remove the resource and its state.  The slot is held meanwhile, so
        no appender can start on it; readers already streaming it finish
        with the bytes they were given.

        :raises Refusal: 409, an appender holds it; 404, it has no file.
        """
        if not self.running:
            return self._call(self._stopping)
        claim = self._slots.claim(name)
        return self._call(lambda: self._delete(name, claim))

    async def _delete(self, name: Name, claim: Deferred[ISlot]) -> None:
        try:
            slot = await claim
        except SlotTaken:
            raise Refusal(
                409, "an appender holds this resource", state=await self.describe(name)
            ) from None
        try:
            await self._streams.current(name)
            try:
                removed = await self._store.remove(name)
            except NotAResource:
                removed = False
            if not removed:
                raise _no_such_resource()
            self._streams.detach(name)
        finally:
            slot.release()

    async def sweep(self) -> int:
        """
        Remove every resource with no appender whose bytes have not changed
        for `max_age` seconds now; how many went.
        """
        return await self._retention.sweep()

    def describe(self, name: Name) -> Deferred[ResourceState]:
        """The resource's state now, for the response headers."""

        async def look() -> ResourceState:
            stream = await self._streams.current(name)
            if stream is not None:
                return stream.state
            stored = await self._store.stat(name)
            if stored is None:
                return ResourceState(self.active(name), None)
            return ResourceState(self.active(name), stored.size, stored.complete)

        return Deferred.fromCoroutine(look())

    # -- internals ----------------------------------------------------------

    async def _get(
        self,
        name: Name,
        create: bool,
        expected_size: int | None,
        appending: _Appending | None,
    ) -> tuple[Stream, AppendSession | None]:
        """
        The stream for ``name``, opened if need be, held for the caller;
        with ``appending``, also the session begun on it before anybody
        else sees the stream (so no reader finds it without its appender).
        """

        def take(stream: Stream) -> tuple[Stream, AppendSession | None]:
            session = None
            if appending is not None:
                self._held_slots[name] = appending.slot
                record = self.record(appending.kind, name, appending.peer, stream.size)
                session = AppendSession(stream, record, self._feed, appending.slot)
                if self._archiving is not None:
                    self._archiving.began(name)
            stream.hold()
            return stream, session

        return await self._streams.get(name, create, expected_size, take)

    def _make_stream(
        self, name: Name, file: IStoreFile, on_idle: Callable[[Stream], None]
    ) -> Stream:
        return Stream(
            name,
            file,
            fsync=self.fsync,
            max_size=self.max_resource_size,
            tail_size=self.tail_size,
            queue_size=self.queue_size,
            read_size=self.read_size,
            on_session_end=self._session_ended,
            on_idle=on_idle,
            clock=self.reactor.seconds,
            observe=self.counters.observe,
        )

    def _session_ended(self, stream: Stream) -> None:
        slot = self._held_slots.pop(stream.name, None)
        if slot is not None:
            slot.release()
        if self._archiving is not None:
            self._archiving.ended(stream.name, stream.size, stream.complete)
