"""
Shared mode (``--redis URL``): the two seams of `coordination` kept in Redis,
so that several servers on one storage root agree on who appends and tell
each other's followers of growth.  docs/SCALING.md says what each party sees
when something fails; docs/ARCHITECTURE.md why txredisapi.

Keys, per resource (``P`` is its path; the braces keep one resource's keys
in one Redis Cluster slot)::

    httpfstream:{P}:lease  "TOKEN SERVER", PX lease: who appends now
    httpfstream:{P}:fence  INCR counter: TOKEN, one per claim
    httpfstream:{P}:feed   a Redis Stream: one entry per persisted batch
                           (its ID the batch's end offset), one when a
                           session begins and one when it ends

and two for the whole deployment: ``httpfstream:boot`` (absent after Redis
lost its data) and ``httpfstream:quarantine`` (no claim while it lives).

**The slot is a lease.**  `RedisCoordinator.claim` runs one Lua script:
set-if-absent with expiry, a new fencing token, and a "begin" entry, so of
racing claims on any number of servers exactly one wins.  The holder renews
it every quarter lease (compare-and-pexpire) and may write only while its
last renewal is less than three quarters of a lease old (`ISlot.valid`,
asked before every write): a holder that cannot renew stops writing, and its
session is ended with 1013, a quarter lease before anybody else could take
the lease.  Redis refuses every feed entry from a server that no longer
holds the lease (the scripts compare the lease's value, which carries the
token), so a stale holder can neither write nor announce growth.  After
Redis lost its data (a restart without persistence), every claim is refused
with 503 for one lease, by which time every old holder has stopped.

**Entries carry sizes, not bytes.**  The file is shared, so a follower's
server reads the bytes from it, as for any cursor that fell behind its tail:
Redis memory stays a few hundred bytes per live resource whatever the
traffic, and only the newest entry matters to a reader (sizes only grow), so
the feed is trimmed to its last `MAXLEN` entries at every add, and expires a
minute after its session ends.

**One blocking read per server.**  Every watched feed is read by one
``XREAD BLOCK`` over all of them (not one per follower, nor per resource); a
stream opened meanwhile joins the next round, at most `BLOCK` seconds later,
having first read the lease and the newest entry.  For each stream whose
appender is elsewhere, a check every `check_interval` reads the lease: a
lease gone without an end entry (its server died) ends the followers with
4000 at the size the file holds; so does Redis unreachable for longer than a
lease (that appender has stopped by then).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._borrowed import connections, set_reconnect_delays
from ..core.coordination import (
    IAppenderSlots,
    IGrowthFeed,
    ISlot,
    SlotTaken,
    Unavailable,
)
from ..core.names import Name
from ..core.store import Stored
from ..core.stream import IGrowthListener
from ..protocol import APPENDER_LOST, COMPLETE

__all__ = ["RedisConfig", "RedisCoordinator", "parse_redis_url"]

_log = Logger()

#: Entries kept per feed (only the newest matters; a reader that lags more
#: than this still gets the newest size).
MAXLEN = 32
#: Seconds one blocking read waits; a stream opened meanwhile joins after.
BLOCK = 0.25
#: Seconds a feed lives after its session ended (readers need its end).
RETENTION = 60.0
#: Seconds a fencing counter lives after its last claim.
FENCE_TTL = 86400.0
#: Seconds stopping waits for this server's sessions to end (the registry's
#: default ``shutdown_timeout``).
SHUTDOWN_WAIT = 15.0


@dataclass(frozen=True)
class RedisConfig:
    """Where Redis is, and the lease length."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: Seconds a lease lives without renewal: the longest a dead server's
    #: resource stays taken, and about how long its followers wait.
    lease: float = 10.0


def parse_redis_url(
    url: str, password: str | None = None, lease: float = 10.0
) -> RedisConfig:
    """
    ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS,
    checked against the system's certificate authorities); ``password``, if
    given, overrides the URL's.

    :raises ValueError: not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r} is not a redis:// or rediss:// URL")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the path must be a database number")
    if lease <= 0:
        raise ValueError("the lease must be longer than 0 seconds")
    return RedisConfig(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=password
        if password is not None
        else (unquote(parts.password) if parts.password else None),
        tls=parts.scheme == "rediss",
        lease=lease,
    )


# -- scripts ---------------------------------------------------------------------

# Adds an entry whose ID is the size (the end offset of the batch), or just
# after the newest entry when that is not greater (a begin or end entry at
# the same size, or a resource deleted and appended to again).
_ADD = """
local function add(key, size, maxlen, ...)
  local ms, seq = math.max(size, 0), 0
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if last then
    local lms, lseq = string.match(last[1], '^(%d+)-(%d+)$')
    lms = tonumber(lms)
    if ms <= lms then ms = lms; seq = tonumber(lseq) + 1 end
  elseif ms == 0 then
    seq = 1
  end
  redis.call('XADD', key, 'MAXLEN', maxlen, string.format('%d-%d', ms, seq),
             's', string.format('%d', size), ...)
end
"""

# KEYS lease fence feed boot quarantine; ARGV server lease_ms feed_ttl_ms
# fence_ttl_ms maxlen.  {1, token} | {0, pttl of the holder's lease} |
# {-1, pttl of the quarantine}.
_CLAIM = (
    _ADD
    + """
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[4], ARGV[1])
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[2])
end
local q = redis.call('PTTL', KEYS[5])
if q > 0 then return {-1, q} end
local held = redis.call('PTTL', KEYS[1])
if held ~= -2 then return {0, held} end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
add(KEYS[3], -1, ARGV[5], 'k', 'b', 't', token, 'o', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {1, token}
"""
)

# KEYS lease feed boot quarantine; ARGV value lease_ms feed_ttl_ms.  1 | 0.
_RENEW = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], 'renew')
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
  return 0
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS lease feed; ARGV value token server size feed_ttl_ms maxlen.  1 | 0.
_GROWN = (
    _ADD
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
add(KEYS[2], tonumber(ARGV[4]), ARGV[6], 'k', 'g', 't', ARGV[2], 'o', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""
)

# Releases the lease and adds the end entry in one step, so no reader sees
# the lease gone before the end.  KEYS lease feed fence; ARGV value token
# server size code reason retention_ms maxlen.  1 | 0.
_END = (
    _ADD
    + """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
elseif cur or redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return 0
end
add(KEYS[2], tonumber(ARGV[4]), ARGV[8], 'k', 'e', 't', ARGV[2], 'o', ARGV[3],
    'c', ARGV[5], 'r', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
"""
)

# KEYS lease feed.  {lease value or '', newest entry ID or '0-0', its
# fields}.
_WATCH = """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
return {redis.call('GET', KEYS[1]) or '', last and last[1] or '0-0',
        last and last[2] or {}}
"""

# KEYS lease feed; ARGV last.  {lease value or '', entries after last}.
_CHECK = """
return {redis.call('GET', KEYS[1]) or '',
        redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', 512)}
"""


def _entry_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class _Watch:
    """One stream told of its resource's feed."""

    name: Name
    path: str
    listener: IGrowthListener
    last: str
    contact: float
    #: The token of the session elsewhere the stream follows now.
    token: str | None = None
    lock: DeferredLock = field(default_factory=DeferredLock)
    stopped: bool = False


@implementer(ISlot)
class _Lease:
    """One held lease: renewed every quarter lease until released or lost."""

    def __init__(
        self, coordinator: RedisCoordinator, path: str, token: str, sent: float
    ) -> None:
        self._c = coordinator
        self.path = path
        self.token = token
        self.value = f"{token} {coordinator.server_id}"
        self.released = False
        self.lost = False
        self._on_lost: Callable[[str], None] | None = None
        lease = coordinator.config.lease
        self._valid_until = sent + 0.75 * lease
        self._deadline: IDelayedCall | None = None
        self._schedule()
        self._renewer = LoopingCall(lambda: Deferred.fromCoroutine(self._renew()))
        self._renewer.clock = coordinator.reactor
        self._renewer.start(lease / 4, now=False)

    def _schedule(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        left = max(0.0, self._valid_until - self._c.reactor.seconds())
        self._deadline = self._c.reactor.callLater(
            left,
            self._lose,
            "Redis unreachable: the appender's lease could not be renewed",
        )

    def valid(self) -> bool:
        return (
            not self.released
            and not self.lost
            and self._c.reactor.seconds() < self._valid_until
        )

    def when_lost(self, lost: Callable[[str], None]) -> None:
        self._on_lost = lost

    async def _renew(self) -> None:
        c = self._c
        sent = c.reactor.seconds()
        try:
            ok = await c.run(
                _RENEW,
                [c.key(self.path, "lease"), c.key(self.path, "feed"), *c.global_keys],
                [self.value, c.lease_ms, c.feed_ttl_ms],
            )
        except Unavailable:
            return  # tried again next time; the deadline stops us in time
        except Exception:
            _log.failure("renewing the lease of {path}", path=self.path)
            return  # likewise
        if self.released or self.lost:
            return
        if int(ok) == 1:
            self._valid_until = sent + 0.75 * c.config.lease
            self._schedule()
        else:
            self._lose("the appender's lease was lost (expired, or Redis lost it)")

    def _stop(self) -> None:
        if self._renewer.running:
            self._renewer.stop()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()

    def _lose(self, why: str) -> None:
        if self.lost or self.released:
            return
        self.lost = True
        self._stop()
        _log.warn("{path}: {why}; ending its session", path=self.path, why=why)
        if self._on_lost is not None:
            self._on_lost(why)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self._stop()
        self._c.releasing(self)


@implementer(IAppenderSlots, IGrowthFeed)
class RedisCoordinator(Service):
    """
    The appender slots and the growth feed of every server on one root,
    in Redis (see the module docstring).  Start it before the registry
    (``setServiceParent`` first), so it stops after the registry has ended
    every session.

    :param config: where Redis is, and the lease length.
    :param stat: the resource's size and completion on the shared root
        (the store's `store.IStore.stat`), read when a session elsewhere
        ends or is lost.
    :param reactor: the reactor.
    :param prefix: the first part of every key.
    """

    name = "httpfstream-redis"

    def __init__(
        self,
        config: RedisConfig,
        stat: Callable[[Name], Deferred[Stored | None]],
        reactor: Any = None,
        prefix: str = "httpfstream",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.reactor: Any = reactor
        self.prefix = prefix
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.global_keys = [f"{prefix}:boot", f"{prefix}:quarantine"]
        self.lease_ms = str(math.ceil(config.lease * 1000))
        self.feed_ttl_ms = str(math.ceil((config.lease + RETENTION) * 1000))
        self.check_interval = max(0.1, min(1.0, config.lease / 4))
        self.timeout = max(0.5, min(2.0, config.lease / 4))
        self._stat = stat
        self._commands: Any = None
        self._blocking: Any = None
        self._holding: dict[str, _Lease] = {}
        self._releasing: dict[str, tuple[_Lease, IDelayedCall]] = {}
        self._watches: dict[str, list[_Watch]] = {}
        self._remote_held: dict[str, float] = {}
        self._pending: set[Deferred[Any]] = set()
        self._wake: Deferred[None] | None = None
        self._reading: Deferred[None] | None = None
        self._checker: LoopingCall | None = None
        self._ticks = 0

    # -- service -----------------------------------------------------------------

    def _connect(self, reply_timeout: float | None) -> Any:
        c = self.config
        tls: Any = optionsForClientTLS(c.host) if c.tls else False
        handler = txredisapi.lazyConnection(
            c.host,
            c.port,
            dbid=c.db or None,
            reconnect=True,
            password=c.password,
            username=c.username,
            ssl_context_factory=tls,
            connectTimeout=self.timeout,
            replyTimeout=reply_timeout,
            convertNumbers=False,
        )
        # Back again within a second of Redis coming back (the default backs
        # off to ten seconds).
        set_reconnect_delays(handler, 0.2, 1.0)
        return handler

    def startService(self) -> None:
        super().startService()
        self._commands = self._connect(self.timeout)
        self._blocking = self._connect(None)
        self._checker = LoopingCall(self._check_all)
        self._checker.clock = self.reactor
        self._checker.start(self.check_interval, now=False)
        self._reading = Deferred.fromCoroutine(self._read_loop())

    async def _stop(self) -> None:
        # twistd stops every service at once: give the registry's sessions
        # (stopped with 1001) the time it gives them to end, so their ends
        # reach Redis, and followers elsewhere learn at once.
        deadline = self.reactor.seconds() + SHUTDOWN_WAIT
        while (self._holding or self._releasing) and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        if self._checker is not None and self._checker.running:
            self._checker.stop()
        for lease, call in list(self._releasing.values()):
            call.cancel()
            self._end(lease, -1, APPENDER_LOST, "server stopping")
        if self._pending:
            waiting = defer.DeferredList(list(self._pending), consumeErrors=True)
            waiting.addTimeout(self.timeout, self.reactor)
            with contextlib.suppress(Exception):
                await waiting
        if self._wake is not None:
            self._wake.callback(None)
        if self._reading is not None:
            with contextlib.suppress(Exception):
                await self._reading
        for handler in (self._commands, self._blocking):
            with contextlib.suppress(Exception):
                await handler.disconnect()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    # -- Redis -------------------------------------------------------------------

    def key(self, path: str, what: str) -> str:
        """The key of ``what`` (lease, fence, feed) for the resource ``path``."""
        return f"{self.prefix}:{{{path}}}:{what}"

    @staticmethod
    def _connection(handler: Any) -> Any:
        for conn in connections(handler):
            if conn.connected:
                return conn
        raise Unavailable("Redis cannot be reached", retry_after=1)

    async def _connected(self, handler: Any) -> Any:
        """
        A connected protocol of ``handler``, waiting up to `timeout` for one
        (at start-up, or while it reconnects); else `Unavailable`.
        """
        deadline = self.reactor.seconds() + self.timeout
        while True:
            try:
                return self._connection(handler)
            except Unavailable:
                if self.reactor.seconds() >= deadline or not self.running:
                    raise
            await deferLater(self.reactor, 0.05, lambda: None)

    async def run(self, script: str, keys: list[str], args: list[str]) -> Any:
        """
        Run ``script`` on the command connection; `Unavailable` when Redis
        cannot be reached or does not answer within `timeout`.
        """
        conn = await self._connected(self._commands)
        d = conn.eval(script, keys, args)
        try:
            return await d.addTimeout(self.timeout, self.reactor)
        except (txredisapi.ConnectionError, defer.TimeoutError, ConnectionError) as e:
            raise Unavailable(f"Redis did not answer: {e}", retry_after=1) from None

    def _track(self, d: Deferred[Any], what: str) -> None:
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure):
                _log.warn("{what}: {why}", what=what, why=result.getErrorMessage())

        d.addBoth(done)

    # -- IAppenderSlots ----------------------------------------------------------

    def claim(self, name: Name) -> Deferred[ISlot]:
        return Deferred.fromCoroutine(self._claim("/".join(name)))

    async def _claim(self, path: str) -> ISlot:
        sent = self.reactor.seconds()
        status, value = await self.run(
            _CLAIM,
            [
                self.key(path, "lease"),
                self.key(path, "fence"),
                self.key(path, "feed"),
                *self.global_keys,
            ],
            [
                self.server_id,
                self.lease_ms,
                self.feed_ttl_ms,
                str(int(FENCE_TTL * 1000)),
                str(MAXLEN),
            ],
        )
        status = int(status)
        if status < 0:
            raise Unavailable(
                "Redis lost its data; appender leases are held back until every"
                " old holder has stopped",
                retry_after=max(1, math.ceil(int(value) / 1000)),
            )
        if status == 0:
            ttl = int(value)
            self._remote_held[path] = self.reactor.seconds() + (
                ttl / 1000 if ttl > 0 else self.config.lease
            )
            raise SlotTaken()
        lease = _Lease(self, path, str(value), sent)
        self._holding[path] = lease
        # A stream open here may not have read the end of the session
        # before ours yet: bring it up to date before it is appended to.
        try:
            for w in list(self._watches.get(self.key(path, "feed"), [])):
                await w.lock.run(self._catch_up, w)
        except BaseException:
            lease.release()
            raise
        return lease

    def _catch_up(self, w: _Watch) -> Deferred[None]:
        """Apply every entry before our claim; a session still live is lost."""
        return Deferred.fromCoroutine(self._catching_up(w))

    async def _catching_up(self, w: _Watch) -> None:
        try:
            _, entries = await self.run(
                _CHECK,
                [self.key(w.path, "lease"), self.key(w.path, "feed")],
                [w.last],
            )
            await self._apply(w, entries)
        finally:
            if w.token is not None:
                await self._lose(w, "appender lost: its lease expired")

    def held(self, name: Name) -> bool:
        path = "/".join(name)
        if path in self._holding:
            return True
        watches = self._watches.get(self.key(path, "feed"), ())
        if any(w.token is not None for w in watches):
            return True
        now: float = self.reactor.seconds()
        return self._remote_held.get(path, 0.0) > now

    def releasing(self, lease: _Lease) -> None:
        """
        ``lease`` was released.  Its session's end comes in the same turn
        (`ended`), and goes to Redis with the release, in one script; a
        release with no session (a claim given back) goes alone.
        """
        if self._holding.get(lease.path) is lease:
            del self._holding[lease.path]
        call = self.reactor.callLater(
            0, self._released_alone, lease, APPENDER_LOST, "the claim was given back"
        )
        self._releasing[lease.path] = (lease, call)

    def _released_alone(self, lease: _Lease, code: int, reason: str) -> None:
        if self._releasing.get(lease.path, (None,))[0] is lease:
            del self._releasing[lease.path]
            self._end(lease, -1, code, reason)

    def _end(self, lease: _Lease, size: int, code: int, reason: str) -> None:
        d = Deferred.fromCoroutine(
            self.run(
                _END,
                [
                    self.key(lease.path, "lease"),
                    self.key(lease.path, "feed"),
                    self.key(lease.path, "fence"),
                ],
                [
                    lease.value,
                    lease.token,
                    self.server_id,
                    str(size),
                    str(code),
                    reason[:200],
                    str(int(RETENTION * 1000)),
                    str(MAXLEN),
                ],
            )
        )
        self._track(d, f"ending the session of {lease.path} in Redis")

    # -- IGrowthFeed: the appending side -------------------------------------------

    def grown(self, name: Name, size: int) -> None:
        path = "/".join(name)
        lease = self._holding.get(path)
        if lease is None or lease.lost:
            return
        d = Deferred.fromCoroutine(
            self.run(
                _GROWN,
                [self.key(path, "lease"), self.key(path, "feed")],
                [
                    lease.value,
                    lease.token,
                    self.server_id,
                    str(size),
                    self.feed_ttl_ms,
                    str(MAXLEN),
                ],
            )
        )

        def told(ok: Any) -> None:
            if int(ok) != 1:
                lease._lose("the appender's lease was lost (Redis refused growth)")

        d.addCallback(told)
        self._track(d, f"telling Redis {path} grew")

    def ended(self, name: Name, size: int, code: int, reason: str) -> None:
        path = "/".join(name)
        pending = self._releasing.pop(path, None)
        if pending is None:
            return
        lease, call = pending
        call.cancel()
        self._end(lease, size, code, reason)

    # -- IGrowthFeed: the following side -------------------------------------------

    def watch(
        self, name: Name, listener: IGrowthListener
    ) -> Deferred[Callable[[], None]]:
        return Deferred.fromCoroutine(self._watch(name, listener))

    async def _watch(self, name: Name, listener: IGrowthListener) -> Callable[[], None]:
        path = "/".join(name)
        value, last, pairs = await self.run(
            _WATCH, [self.key(path, "lease"), self.key(path, "feed")], []
        )
        w = _Watch(name, path, listener, str(last), self.reactor.seconds())
        fields = dict(zip(pairs[::2], pairs[1::2], strict=False))
        holder = str(value)
        # The file was opened before this: entries up to `last` may say it
        # holds more than it did then.
        if holder and not holder.endswith(" " + self.server_id):
            w.token = holder.split(" ", 1)[0]
            listener.began()
            if fields.get("k") == "g" and fields.get("t") == w.token:
                listener.grown(int(fields["s"]))
        elif fields and fields.get("o") != self.server_id:
            # A session elsewhere ended (or was lost) lately: its last bytes
            # and its completion, from the file (nobody follows it yet).
            stored = await self._stat(name)
            if stored is not None:
                listener.ended(stored.size, COMPLETE, "", stored.complete)
        self._watches.setdefault(self.key(path, "feed"), []).append(w)
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.callback(None)

        def unwatch() -> None:
            w.stopped = True
            ws = self._watches.get(self.key(path, "feed"), [])
            if w in ws:
                ws.remove(w)
                if not ws:
                    del self._watches[self.key(path, "feed")]

        return unwatch

    async def _read_loop(self) -> None:
        """One blocking XREAD over every watched feed, round after round."""
        while self.running:
            if not self._watches:
                self._wake = Deferred()
                await self._wake
                continue
            keys = list(self._watches)
            ids = [min((w.last for w in self._watches[k]), key=_entry_id) for k in keys]
            try:
                conn = self._connection(self._blocking)
                d = conn.execute_command(
                    "XREAD",
                    "COUNT",
                    "512",
                    "BLOCK",
                    str(int(BLOCK * 1000)),
                    "STREAMS",
                    *keys,
                    *ids,
                )
                reply = await d.addTimeout(BLOCK + self.timeout, self.reactor)
            except Exception as e:
                if not self.running:
                    return
                if isinstance(e, defer.TimeoutError):
                    with contextlib.suppress(Exception):
                        self._connection(self._blocking).transport.abortConnection()
                await deferLater(self.reactor, BLOCK, lambda: None)
                continue
            now = self.reactor.seconds()
            for key, entries in reply or []:
                for w in list(self._watches.get(key, [])):
                    w.contact = now
                    self._serially(w, self._apply, w, entries)

    def _serially(self, w: _Watch, f: Callable[..., Any], *args: Any) -> None:
        def run() -> Deferred[None]:
            return Deferred.fromCoroutine(f(*args))

        d = w.lock.run(run)
        d.addErrback(lambda fl: _log.failure("following {path}", fl, path=w.path))

    async def _apply(self, w: _Watch, entries: list[Any]) -> None:
        """Tell the stream what the feed's new entries say, in order."""
        for entry_id, pairs in entries:
            if w.stopped:
                return
            if _entry_id(entry_id) <= _entry_id(w.last):
                continue
            w.last = entry_id
            fields = dict(zip(pairs[::2], pairs[1::2], strict=False))
            if fields.get("o") == self.server_id:
                continue  # our own session: the stream knows
            kind, token, size = fields.get("k"), fields.get("t"), int(fields["s"])
            if kind in ("b", "g"):
                if w.token != token:
                    if w.token is not None:
                        await self._lose(w, "appender lost")
                    w.token = token
                    w.listener.began()
                if kind == "g":
                    w.listener.grown(size)
            elif kind == "e":
                if w.token is not None and w.token != token:
                    await self._lose(w, "appender lost")
                stored = await self._stat(w.name)
                if size < 0:
                    size = stored.size if stored is not None else 0
                w.token = None
                w.listener.ended(
                    size,
                    int(fields.get("c", APPENDER_LOST)),
                    str(fields.get("r", "")),
                    stored.complete if stored is not None else None,
                )

    async def _lose(self, w: _Watch, why: str) -> None:
        """The session elsewhere is gone without an end: end at the file's size."""
        w.token = None
        stored = await self._stat(w.name)
        size = stored.size if stored is not None else 0
        w.listener.ended(size, APPENDER_LOST, why, False)

    def _check_all(self) -> None:
        self._ticks += 1
        for ws in list(self._watches.values()):
            for w in ws:
                if w.token is not None:
                    self._serially(w, self._check, w)
        if self._ticks % 4 == 0:
            d = Deferred.fromCoroutine(self._scan())
            d.addErrback(lambda _: None)

    async def _check(self, w: _Watch) -> None:
        """Is the session elsewhere still there?"""
        if w.token is None or w.stopped:
            return
        try:
            value, entries = await self.run(
                _CHECK,
                [self.key(w.path, "lease"), self.key(w.path, "feed")],
                [w.last],
            )
        except Unavailable:
            silent = self.reactor.seconds() - w.contact
            if silent > self.config.lease + self.check_interval:
                # Its appender has stopped by now: it could not renew either.
                await self._lose(w, "Redis unreachable; the appender is stopped")
            return
        w.contact = self.reactor.seconds()
        await self._apply(w, entries)
        holder = str(value)
        if w.token is not None and holder.split(" ", 1)[0] != w.token:
            await self._lose(w, "appender lost: its lease expired")

    async def _scan(self) -> None:
        """Learn every lease held now, for `held` of resources not open here."""
        conn = self._connection(self._commands)
        pattern = f"{self.prefix}:{{*}}:lease"
        held: dict[str, float] = {}
        until = self.reactor.seconds() + self.config.lease
        cursor = "0"
        for _ in range(100):
            cursor, keys = await conn.execute_command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", "1000"
            ).addTimeout(self.timeout, self.reactor)
            for key in keys:
                inner = str(key)[len(self.prefix) + 2 : -len("}:lease")]
                held[inner] = until
            if str(cursor) == "0":
                break
        self._remote_held = held
