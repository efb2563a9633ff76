"""
The following side of shared mode: telling the streams open here of growth
written by appenders on other servers.

**Entries carry sizes, not bytes.**  The file is shared, so a follower's
server reads the bytes from it, as for any cursor that fell behind its tail:
Redis memory per live resource stays the same whatever the traffic (about
2.7 KiB, docs/SCALING.md), and only the newest entry matters to a reader
(sizes only grow), so the feed is trimmed to its last `MAXLEN` entries at
every add, and expires `RETENTION` seconds after its session ends.

**One blocking read per server.**  Every watched feed is read by one
``XREAD BLOCK`` over all of them (not one per follower, nor per resource); a
stream opened meanwhile joins the next round, at most `BLOCK` seconds later,
having first read the lease and the newest entry.  For each stream whose
appender is elsewhere, a check every `Settings.check_interval` reads the
lease (`FeedReader.check_all`): a lease gone without an end entry (its
server died) ends the followers with 4000 at the size the file holds; so
does Redis unreachable for longer than a lease (that appender has stopped by
then).

**The file is the truth; the feed only says when to look.**  Entries can be
missed: Redis may lose them (a restart without persistence, a failover to a
replica behind), a feed expires `RETENTION` seconds after its session, and a
holder whose lease Redis lost goes on writing, unannounced, until its next
renewal tells it (at most three quarters of a lease after its last good
one).  So a stream is told the size and completion the shared root holds
(`_settle`, through `IGrowthListener.ended`, which takes a size at once)
whenever nobody can be appending behind the feed's back any more: when this
server has just won the lease, before the offset of the APPEND that won it
is checked (`catch_up`); and, for every stream that no session feeds, one
lease after Redis answers again following an outage (by then any holder it
lost has stopped).  A file never holds less than a stream open on it was
told (sizes only grow), so the file's size is only ever taken when larger;
it holds less only if the name no longer names the file this server has
open (cut or removed behind the servers' backs, or deleted through another
server: docs/SCALING.md says what that costs).  A feed that began again
meanwhile (its newest entry below the last one read) is read from its
start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..core.coordination import Unavailable
from ..core.names import Name
from ..core.store import Stored
from ..core.stream import IGrowthListener
from ..protocol import APPENDER_LOST, COMPLETE
from .config import BLOCK, Settings
from .link import RedisLink
from .scripts import CHECK, WATCH, entry_id, fields

__all__ = ["FeedReader"]

_log = Logger()


@dataclass(eq=False)
class _Watch:
    """One stream told of its resource's feed."""

    name: Name
    path: str
    listener: IGrowthListener
    #: The ID of the newest entry applied.
    last: str
    #: When Redis last answered for this feed (reactor seconds).
    contact: float
    #: The token of the session elsewhere the stream follows now.
    token: str | None = None
    #: Entries are applied one batch at a time, in order.
    lock: DeferredLock = field(default_factory=DeferredLock)
    stopped: bool = False
    #: The largest size this stream was told of.
    size: int = 0
    #: A check is queued (at most one at a time: checks of a feed that
    #: cannot be read would pile up in the lock while Redis is away).
    checking: bool = False
    #: Entries read and not yet applied, the newest one's ID, and whether
    #: they are being applied: rounds read while entries are applied (a
    #: copy being extended, in the stateless mode) join one batch, instead
    #: of each waiting in the lock.
    waiting: list[Any] = field(default_factory=list)
    seen: str = ""
    applying: bool = False

    @property
    def read_from(self) -> str:
        """The ID the next read starts after."""
        if self.seen and entry_id(self.seen) > entry_id(self.last):
            return self.seen
        return self.last


class FeedReader:
    """
    Every stream open here, told of its feed: `watch` adds one, `start`
    begins the blocking reads, `check_all` checks the sessions elsewhere.

    :param stat: the resource's size and completion on the shared root,
        read when a session elsewhere ends or is lost, and when the feed may
        have missed growth (`_settle`).
    :param running: whether the coordinator runs; the reads stop when it
        does not.
    :param here: whether this server holds the lease of a path (its own
        session tells its stream, the file must not).
    :param pull: brings this server's copy of a resource up to a size
        before its stream is told of it (the stateless mode, where no
        file is shared); None: the file is shared, nothing to bring.
    """

    def __init__(
        self,
        settings: Settings,
        link: RedisLink,
        reactor: Any,
        stat: Callable[[Name], Deferred[Stored | None]],
        running: Callable[[], bool],
        here: Callable[[str], bool],
        pull: Callable[[Name, int], Deferred[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._pull = pull
        self.link = link
        self.reactor = reactor
        self._stat = stat
        self._running = running
        self._here = here
        self._watches: dict[str, list[_Watch]] = {}
        self._wake: Deferred[None] | None = None
        self._reading: Deferred[None] | None = None
        # Set when a read failed (Redis away); the settling it arms.
        self._missed = False
        self._settling: IDelayedCall | None = None

    def start(self) -> None:
        """Begin the blocking reads."""
        self._reading = Deferred.fromCoroutine(self._read_loop())

    async def stop(self) -> None:
        """Wait for the reads to stop (once the coordinator does not run)."""
        if self._settling is not None and self._settling.active():
            self._settling.cancel()
        if self._wake is not None:
            self._wake.callback(None)
        if self._reading is not None:
            with contextlib.suppress(Exception):
                await self._reading

    def following(self, path: str) -> bool:
        """Whether a stream here follows a session of ``path`` elsewhere."""
        watches = self._watches.get(self.settings.key(path, "feed"), ())
        return any(w.token is not None for w in watches)

    # -- watching ----------------------------------------------------------------

    async def watch(self, name: Name, listener: IGrowthListener) -> Callable[[], None]:
        """`IGrowthFeed.watch`: the lease and the newest entry first."""
        s = self.settings
        path = "/".join(name)
        feed = s.key(path, "feed")
        value, last, pairs = await self.link.run(
            WATCH, [s.key(path, "lease"), feed], []
        )
        w = _Watch(name, path, listener, str(last), self.reactor.seconds())
        w.size = getattr(listener, "size", 0)  # a `Stream`: what it holds now
        newest = fields(pairs)
        holder = str(value)
        # The file was opened before this: entries up to `last` may say it
        # holds more than it did then.
        if holder and not holder.endswith(" " + s.server_id):
            w.token = holder.split(" ", 1)[0]
            listener.began()
            if newest.get("k") == "g" and newest.get("t") == w.token:
                await self._bring(w, int(newest["s"]))
                listener.grown(int(newest["s"]))
        elif newest and newest.get("o") != s.server_id:
            # A session elsewhere ended (or was lost) lately: its last bytes
            # and its completion, from the file (nobody follows it yet).
            stored = await self._stat(name)
            if stored is not None:
                await self._bring(w, stored.size)
                listener.ended(stored.size, COMPLETE, "", stored.complete)
        self._watches.setdefault(feed, []).append(w)
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.callback(None)

        def unwatch() -> None:
            w.stopped = True
            ws = self._watches.get(feed, [])
            if w in ws:
                ws.remove(w)
                if not ws:
                    del self._watches[feed]

        return unwatch

    async def catch_up(self, path: str) -> None:
        """
        Before this server appends to ``path`` (its lease just won): every
        stream open here has applied every entry before our claim, a
        session still live elsewhere is lost, and the stream holds what the
        file holds, whatever the feed missed: the APPEND's offset is checked
        against that.
        """
        for w in list(self._watches.get(self.settings.key(path, "feed"), [])):
            await w.lock.run(lambda w: Deferred.fromCoroutine(self._catch_up(w)), w)

    async def _catch_up(self, w: _Watch) -> None:
        try:
            _, entries = await self.link.run(
                CHECK,
                [self.settings.key(w.path, "lease"), self.settings.key(w.path, "feed")],
                [w.last],
            )
            await self._apply(w, entries)
        finally:
            if w.token is not None:
                await self._lose(w, "appender lost: its lease expired")
        # Nobody else can append now: whoever held the lease before has
        # stopped (an expired lease's holder stopped before it expired; one
        # that Redis lost, before the quarantine that follows let us claim).
        await self._settle(w)

    async def _settle(self, w: _Watch) -> None:
        """
        Tell the stream the completion the file holds, and its size if
        larger than the stream's.  Only while nobody appends to it (a
        session elsewhere is told by its feed, one here writes itself).
        """
        stored = await self._stat(w.name)
        if stored is not None and not w.stopped:
            await self._bring(w, stored.size)
            # `ended` takes the size at once (`grown` may first read the new
            # bytes into the tail), before an offset is checked against it;
            # no cursor follows live while nobody appends, so none is ended.
            w.listener.ended(
                stored.size, APPENDER_LOST, "the file holds more", stored.complete
            )

    def _settle_unfed(self) -> None:
        """Settle every stream that no session feeds (after Redis was away)."""
        self._settling = None
        for ws in list(self._watches.values()):
            for w in ws:
                self._serially(w, self._settle_if_unfed, w)

    async def _settle_if_unfed(self, w: _Watch) -> None:
        if w.stopped or w.token is not None or self._here(w.path):
            return
        with contextlib.suppress(Unavailable):  # away again: settled later
            _, last, _ = await self.link.run(
                WATCH,
                [self.settings.key(w.path, "lease"), self.settings.key(w.path, "feed")],
                [],
            )
            if entry_id(str(last)) < entry_id(w.last):
                # The feed began again (Redis lost it, or it expired): read
                # it from its start, or the next session's begin, whose ID
                # is below what was read before, would be passed over.
                w.last, w.seen = "0-0", ""
        await self._settle(w)

    # -- reading -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        """One blocking XREAD over every watched feed, round after round."""
        while self._running():
            if not self._watches:
                self._wake = Deferred()
                await self._wake
                continue
            keys = list(self._watches)
            ids = [
                min((w.read_from for w in self._watches[k]), key=entry_id) for k in keys
            ]
            try:
                reply = await self.link.xread(keys, ids)
            except Exception:
                if not self._running():
                    return
                self._missed = True
                # Redis away, or refusing: the next round waits for its next
                # connection; this keeps an error from spinning.
                await deferLater(self.reactor, BLOCK, lambda: None)
                continue
            if self._missed and self._settling is None:
                # Entries may have been lost meanwhile (Redis restarted
                # empty, or a feed expired): once any holder Redis lost has
                # stopped, the file says what they said.
                self._missed = False
                self._settling = self.reactor.callLater(
                    self.settings.lease, self._settle_unfed
                )
            now = self.reactor.seconds()
            for key, entries in reply or []:
                for w in list(self._watches.get(key, [])):
                    w.contact = now
                    self._deliver(w, entries)

    def _deliver(self, w: _Watch, entries: list[Any]) -> None:
        if entries:
            w.seen = max((w.seen or "0-0", str(entries[-1][0])), key=entry_id)
        w.waiting.extend(entries)
        if not w.applying:
            w.applying = True
            self._serially(w, self._apply_waiting, w)

    async def _apply_waiting(self, w: _Watch) -> None:
        try:
            while w.waiting and not w.stopped:
                entries, w.waiting = w.waiting, []
                await self._apply(w, entries)
        finally:
            w.applying = False

    def _serially(self, w: _Watch, f: Callable[..., Any], *args: Any) -> None:
        def run() -> Deferred[None]:
            return Deferred.fromCoroutine(f(*args))

        d = w.lock.run(run)
        d.addErrback(lambda fl: _log.failure("following {path}", fl, path=w.path))

    async def _apply(self, w: _Watch, entries: list[Any]) -> None:
        """
        Tell the stream what the feed's new entries say, in order; of
        growth entries in a row from one session, only the last (sizes
        only grow: one read of the file, or one copy, for them all).
        """
        read = [(eid, fields(pairs)) for eid, pairs in entries]
        for i, (eid, entry) in enumerate(read):
            if w.stopped:
                return
            if entry_id(eid) <= entry_id(w.last):
                continue
            w.last = eid
            if entry.get("o") == self.settings.server_id:
                continue  # our own session: the stream knows
            kind, token, size = entry.get("k"), entry.get("t"), int(entry["s"])
            if kind in ("b", "g"):
                if w.token != token:
                    if w.token is not None:
                        await self._lose(w, "appender lost")
                    w.token = token
                    w.listener.began()
                later = read[i + 1][1] if i + 1 < len(read) else {}
                if kind == "g" and later.get("k") == "g" and later.get("t") == token:
                    continue
                if kind == "g":
                    await self._bring(w, size)
                    w.listener.grown(size)
            elif kind == "e":
                if w.token is not None and w.token != token:
                    await self._lose(w, "appender lost")
                stored = await self._stat(w.name)
                if size < 0:
                    size = stored.size if stored is not None else 0
                await self._bring(w, size)
                w.token = None
                w.listener.ended(
                    size,
                    int(entry.get("c", APPENDER_LOST)),
                    str(entry.get("r", "")),
                    stored.complete if stored is not None else None,
                )

    async def _bring(self, w: _Watch, size: int) -> None:
        """This server's copy up to ``size`` bytes, if it keeps one."""
        w.size = max(w.size, size)
        if self._pull is not None:
            await self._pull(w.name, size)

    async def _lose(self, w: _Watch, why: str) -> None:
        """The session elsewhere is gone without an end: end at the file's size."""
        w.token = None
        try:
            stored = await self._stat(w.name)
        except Unavailable:
            # What the sizes are kept in cannot be read (the stateless
            # mode, Redis away): end where the stream was last told.
            stored = Stored(w.size, False)
        size = stored.size if stored is not None else 0
        await self._bring(w, size)
        w.listener.ended(size, APPENDER_LOST, why, False)

    # -- checking ----------------------------------------------------------------

    def check_all(self) -> None:
        """Check every session elsewhere that a stream here follows."""
        for ws in list(self._watches.values()):
            for w in ws:
                if w.token is not None and not w.checking:
                    w.checking = True
                    self._serially(w, self._check, w)

    async def _check(self, w: _Watch) -> None:
        """Is the session elsewhere still there?"""
        w.checking = False
        if w.token is None or w.stopped:
            return
        try:
            value, entries = await self.link.run(
                CHECK,
                [self.settings.key(w.path, "lease"), self.settings.key(w.path, "feed")],
                [w.last],
            )
        except Unavailable:
            silent = self.reactor.seconds() - w.contact
            if silent > self.settings.lease + self.settings.check_interval:
                # Its appender has stopped by now: it could not renew either.
                await self._lose(w, "Redis unreachable; the appender is stopped")
            return
        w.contact = self.reactor.seconds()
        await self._apply(w, entries)
        holder = str(value)
        if w.token is not None and holder.split(" ", 1)[0] != w.token:
            await self._lose(w, "appender lost: its lease expired")
