"""
Shared mode (``--redis URL``): the two seams of `core.coordination` kept in
Redis, so that several servers on one storage root agree on who appends and
tell each other's followers of growth.  docs/SCALING.md says what each party
sees when something fails; docs/ARCHITECTURE.md why txredisapi.

`RedisCoordinator` is both seams, put together from:

- `config`: where Redis is (`RedisConfig`, `parse_redis_url`), the
  constants, and the key names and timings one coordinator shares;
- `scripts`: the Lua scripts, each one atomic step in Redis, and the keys;
- `link`: the two connections, and every call on them (none waits long
  for Redis);
- `lease`: one appender's lease, a state machine renewed every quarter
  lease and valid for three quarters of one after its last renewal;
- `slots`: claims, this server's leases, growth and ends told to Redis;
- `feed`: the following side, one blocking read over every feed watched
  here, the checks of sessions elsewhere, and the file's size and
  completion taken whenever the feed may have missed growth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from ..core.coordination import IAppenderSlots, IGrowthFeed, ISlot
from ..core.names import Name
from ..core.store import Stored
from ..core.stream import IGrowthListener
from .config import SHUTDOWN_WAIT, RedisConfig, Settings, parse_redis_url
from .feed import FeedReader
from .lease import Lease
from .link import RedisLink
from .slots import LeaseSlots
from .stateless.live import LiveRedis

__all__ = ["RedisConfig", "RedisCoordinator", "parse_redis_url"]


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
        ends or is lost, and whenever the feed may have missed growth.
    :param reactor: the reactor.
    :param prefix: the first part of every key.
    :param pull: brings this server's copy of a resource up to a size
        (the stateless mode: `FeedReader`).
    """

    name = "httpfstream-redis"

    def __init__(
        self,
        config: RedisConfig,
        stat: Callable[[Name], Deferred[Stored | None]],
        reactor: Any = None,
        prefix: str = "httpfstream",
        pull: Callable[[Name, int], Deferred[None]] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.reactor: Any = reactor
        self.settings = Settings(config, prefix)
        self.server_id = self.settings.server_id
        self._link = RedisLink(self.settings, reactor, self._is_running)
        self._slots = LeaseSlots(self.settings, self._link, reactor)
        self._feed = FeedReader(
            self.settings,
            self._link,
            reactor,
            stat,
            self._is_running,
            self._slots.holds,
            pull,
        )
        self._checker: LoopingCall | None = None
        self._ticks = 0

    def live_bytes(self, chunk: int, cap: int) -> LiveRedis:
        """
        The stateless mode's live bytes, on this coordinator's connection;
        from now on appends announce their own growth.
        """
        self._slots.announces = False
        return LiveRedis(self.settings, self._link, chunk, cap)

    def lease_of(self, path: str) -> Lease | None:
        """This server's lease of ``path``, if it holds one."""
        return self._slots.lease_of(path)

    def released(self, path: str) -> Deferred[None]:
        """Fires once this server's lease of ``path`` has gone from Redis."""
        return self._slots.released(path)

    def _is_running(self) -> bool:
        return bool(self.running)

    # -- service -----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._link.open()
        self._checker = LoopingCall(self._tick)
        self._checker.clock = self.reactor
        self._checker.start(self.settings.check_interval, now=False)
        self._feed.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._link.stop_waiting()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # twistd stops every service at once: give the registry's sessions
        # (stopped with 1001) the time it gives them to end, so their ends
        # reach Redis, and followers elsewhere learn at once.
        idle = self._slots.idle()
        idle.addTimeout(SHUTDOWN_WAIT, self.reactor)
        with contextlib.suppress(defer.TimeoutError):
            await idle
        if self._checker is not None and self._checker.running:
            self._checker.stop()
        self._slots.end_releasing("server stopping")
        await self._link.settle()
        await self._feed.stop()
        await self._link.close()

    def _tick(self) -> None:
        self._ticks += 1
        self._feed.check_all()
        if self._ticks % 4 == 0:
            d = Deferred.fromCoroutine(self._slots.scan())
            d.addErrback(lambda _: None)

    # -- IAppenderSlots ----------------------------------------------------------

    def claim(self, name: Name) -> Deferred[ISlot]:
        return Deferred.fromCoroutine(self._claim("/".join(name)))

    async def _claim(self, path: str) -> ISlot:
        lease = await self._slots.claim(path)
        # A stream open here may not have read the end of the session
        # before ours yet, or may never read what Redis lost: bring it up
        # to date, from the file, before the APPEND's offset is checked.
        try:
            await self._feed.catch_up(path)
        except BaseException:
            lease.release()
            raise
        return lease

    def held(self, name: Name) -> bool:
        path = "/".join(name)
        return (
            self._slots.holds(path)
            or self._feed.following(path)
            or self._slots.held_elsewhere(path)
        )

    # -- IGrowthFeed -------------------------------------------------------------

    def grown(self, name: Name, size: int) -> None:
        self._slots.grown("/".join(name), size)

    def ended(self, name: Name, size: int, code: int, reason: str) -> None:
        self._slots.ended("/".join(name), size, code, reason)

    def watch(
        self, name: Name, listener: IGrowthListener
    ) -> Deferred[Callable[[], None]]:
        return Deferred.fromCoroutine(self._feed.watch(name, listener))
