"""
The appending side of shared mode: claiming leases, renewing and giving
them back, telling Redis of growth and of the end of this server's
sessions, and what this server knows of leases held elsewhere.

A claim is one Lua script (`scripts.CLAIM`): set-if-absent with expiry, a
new fencing token, and a "begin" entry, so of racing claims on any number
of servers exactly one wins.  The won lease is a `lease.Lease`; Redis
refuses every feed entry from a server whose lease value does not match
(the scripts compare it, and it carries the token), so a stale holder can
neither write nor announce growth.  After Redis lost its data (a restart
without persistence), every claim is refused with `Unavailable` for one
lease, by which time every old holder has stopped.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import Deferred, succeed

from ..core.coordination import SlotTaken, Unavailable
from ..protocol import APPENDER_LOST
from .config import FENCE_TTL, MAXLEN, RETENTION, Settings
from .lease import Lease, LeaseState
from .link import RedisLink
from .scripts import CLAIM, END, GROWN, RENEW

__all__ = ["LeaseSlots"]


class LeaseSlots:
    """
    This server's leases: those it holds (or has lost and not yet given
    back), those being released, and until when leases elsewhere are known
    to be held (from refused claims, and `scan`).
    """

    def __init__(self, settings: Settings, link: RedisLink, reactor: Any) -> None:
        self.settings = settings
        self.link = link
        self.reactor = reactor
        self._holding: dict[str, Lease] = {}
        self._releasing: dict[str, Lease] = {}
        self._remote_held: dict[str, float] = {}
        self._idle: list[Deferred[None]] = []
        self._gone: dict[str, list[Deferred[None]]] = {}
        self._ending: dict[str, Deferred[Any]] = {}
        #: Whether growth is announced here (`grown`); not in the stateless
        #: mode, whose appends add their feed entries themselves.
        self.announces = True

    async def claim(self, path: str) -> Lease:
        """
        Take the lease of ``path``; `SlotTaken` if another holds it,
        `Unavailable` if Redis cannot say (or has just lost its data).
        """
        s = self.settings
        sent = self.reactor.seconds()
        status, value = await self.link.run(
            CLAIM,
            [
                s.key(path, "lease"),
                s.key(path, "fence"),
                s.key(path, "feed"),
                *s.global_keys,
            ],
            [
                s.server_id,
                s.lease_ms,
                s.feed_ttl_ms,
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
                ttl / 1000 if ttl > 0 else s.lease
            )
            raise SlotTaken()
        token = str(value)
        lease = Lease(
            path,
            token,
            f"{token} {s.server_id}",
            s.lease,
            sent,
            self.reactor,
            renew=self._renew,
            released=self._released,
            ended=self._ended,
        )
        self._holding[path] = lease
        return lease

    def lease_of(self, path: str) -> Lease | None:
        """This server's lease of ``path``, if it holds one."""
        return self._holding.get(path)

    def released(self, path: str) -> Deferred[None]:
        """
        Fires once this server's lease of ``path`` (held or being
        released) has gone from Redis with its session's end, or failed to;
        at once if there is none.
        """
        if not (
            path in self._holding or path in self._releasing or path in self._ending
        ):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._gone.setdefault(path, []).append(d)
        return d

    def holds(self, path: str) -> bool:
        """Whether this server holds the lease of ``path`` (or lost it, and
        its session has not ended yet)."""
        return path in self._holding

    def held_elsewhere(self, path: str) -> bool:
        """Whether a lease of ``path`` elsewhere was seen lately."""
        now: float = self.reactor.seconds()
        return self._remote_held.get(path, 0.0) > now

    def grown(self, path: str, size: int) -> None:
        """Announce that ``path`` holds ``size`` bytes, if our lease stands."""
        lease = self._holding.get(path)
        if not self.announces or lease is None or lease.state is not LeaseState.HELD:
            return
        s = self.settings
        d = Deferred.fromCoroutine(
            self.link.run(
                GROWN,
                [s.key(path, "lease"), s.key(path, "feed")],
                [
                    lease.value,
                    lease.token,
                    s.server_id,
                    str(size),
                    s.feed_ttl_ms,
                    str(MAXLEN),
                ],
            )
        )

        def told(ok: Any) -> None:
            if int(ok) != 1:
                lease.lose("the appender's lease was lost (Redis refused growth)")

        d.addCallback(told)
        self.link.track(d, f"telling Redis {path} grew")

    def ended(self, path: str, size: int, code: int, reason: str) -> None:
        """The session of ``path`` here ended: its end goes with the release."""
        lease = self._releasing.get(path)
        if lease is not None:
            lease.end(size, code, reason)

    def idle(self) -> Deferred[None]:
        """Fires once no lease is held or being released here."""
        if not self._holding and not self._releasing:
            return succeed(None)
        d: Deferred[None] = Deferred(self._idle.remove)
        self._idle.append(d)
        return d

    def end_releasing(self, reason: str) -> None:
        """Send the release of every lease still waiting for its session's end."""
        for lease in list(self._releasing.values()):
            lease.end(-1, APPENDER_LOST, reason)

    async def scan(self) -> None:
        """Learn every lease held now, for `held_elsewhere`."""
        prefix = self.settings.prefix
        until = self.reactor.seconds() + self.settings.lease
        keys = await self.link.scan(f"{prefix}:{{*}}:lease")
        self._remote_held = {
            key[len(prefix) + 2 : -len("}:lease")]: until for key in keys
        }

    # -- told by the leases ------------------------------------------------------

    def _renew(self, lease: Lease) -> Deferred[bool]:
        async def renew() -> bool:
            s = self.settings
            ok = await self.link.run(
                RENEW,
                [s.key(lease.path, "lease"), s.key(lease.path, "feed"), *s.global_keys],
                [lease.value, s.lease_ms, s.feed_ttl_ms],
            )
            return int(ok) == 1

        return Deferred.fromCoroutine(renew())

    def _released(self, lease: Lease) -> None:
        if self._holding.get(lease.path) is lease:
            del self._holding[lease.path]
        self._releasing[lease.path] = lease

    def _ended(self, lease: Lease, size: int, code: int, reason: str) -> None:
        if self._releasing.get(lease.path) is lease:
            del self._releasing[lease.path]
        s = self.settings
        d = Deferred.fromCoroutine(
            self.link.run(
                END,
                [
                    s.key(lease.path, "lease"),
                    s.key(lease.path, "feed"),
                    s.key(lease.path, "fence"),
                    s.key(lease.path, "live"),
                ],
                [
                    lease.value,
                    lease.token,
                    s.server_id,
                    str(size),
                    str(code),
                    reason[:200],
                    str(int(RETENTION * 1000)),
                    str(MAXLEN),
                ],
            )
        )
        self.link.track(d, f"ending the session of {lease.path} in Redis")
        path = lease.path
        self._ending[path] = d

        def gone(_: object) -> None:
            if self._ending.get(path) is d:
                del self._ending[path]
            for waiting in self._gone.pop(path, []):
                waiting.callback(None)

        d.addBoth(gone)
        if not self._holding and not self._releasing:
            idle, self._idle = self._idle, []
            for waiting in idle:
                waiting.callback(None)
