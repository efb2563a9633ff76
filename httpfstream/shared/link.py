"""
One coordinator's two connections to Redis, and every call on them.

A txredisapi lazy connection queues commands while it is disconnected; a
caller here must learn at once that Redis is away instead.  So every call
takes a connected protocol from the handler's pool itself: at once when
there is one, else it waits for txredisapi's notice of the next connection
(`_borrowed.next_connection`) for at most `Settings.timeout`, then gives up
with `Unavailable`; and it waits as long again for the answer.  Blocking
reads get their own connection (a blocked connection answers nothing else).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._borrowed import connections, next_connection, set_reconnect_delays
from ..core.coordination import Unavailable
from .config import BLOCK, Settings

__all__ = ["RedisLink"]

_log = Logger()

#: What a call that Redis did not answer fails with, from txredisapi or
#: from the timeout.
_NO_ANSWER = (txredisapi.ConnectionError, defer.TimeoutError, ConnectionError)


class _Arrival:
    """
    Everybody waiting for one handler's next connection, on one notice
    from txredisapi (so a long outage leaves nothing behind in its pool).
    """

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._waiting: list[Deferred[Any]] = []
        self._asked = False

    def wait(self) -> Deferred[Any]:
        """Fires with the next connected protocol; cancel to stop waiting."""
        d: Deferred[Any] = Deferred(self._waiting.remove)
        self._waiting.append(d)
        if not self._asked:
            self._asked = True
            next_connection(self._handler).addBoth(self._arrived)
        return d

    def _arrived(self, result: Any) -> None:
        self._asked = False
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def cancel(self) -> None:
        """Every wait ends now, with `defer.CancelledError`."""
        for d in list(self._waiting):
            d.cancel()


class RedisLink:
    """
    The command connection (every script, with `Settings.timeout` for each
    answer) and the blocking one (`xread`).

    :param running: whether the coordinator runs; once it does not, a call
        without a connection fails at once instead of waiting for one.
    """

    def __init__(
        self, settings: Settings, reactor: Any, running: Callable[[], bool]
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self._running = running
        self._commands: Any = None
        self._blocking: Any = None
        self._arrivals: dict[int, _Arrival] = {}
        self._pending: set[Deferred[Any]] = set()

    def _connect(self, reply_timeout: float | None) -> Any:
        c = self.settings.config
        tls: Any = optionsForClientTLS(c.host) if c.tls else False
        handler = txredisapi.lazyConnection(
            c.host,
            c.port,
            dbid=c.db or None,
            reconnect=True,
            password=c.password,
            username=c.username,
            ssl_context_factory=tls,
            connectTimeout=self.settings.timeout,
            replyTimeout=reply_timeout,
            convertNumbers=False,
        )
        # Back again within a second of Redis coming back (the default backs
        # off to ten seconds).
        set_reconnect_delays(handler, 0.2, 1.0)
        self._arrivals[id(handler)] = _Arrival(handler)
        return handler

    def open(self) -> None:
        """Start connecting (and reconnecting, until `close`)."""
        self._commands = self._connect(self.settings.timeout)
        self._blocking = self._connect(None)

    def stop_waiting(self) -> None:
        """Calls waiting for a connection give up now, with `Unavailable`."""
        for arrival in self._arrivals.values():
            arrival.cancel()

    async def settle(self) -> None:
        """Wait (up to `Settings.timeout`) for the tracked calls to finish."""
        if self._pending:
            waiting = defer.DeferredList(list(self._pending), consumeErrors=True)
            waiting.addTimeout(self.settings.timeout, self.reactor)
            with contextlib.suppress(Exception):
                await waiting

    async def close(self) -> None:
        """Close both connections; nothing reconnects after."""
        self.stop_waiting()
        for handler in (self._commands, self._blocking):
            if handler is not None:
                with contextlib.suppress(Exception):
                    await handler.disconnect()

    # -- connections -------------------------------------------------------------

    @staticmethod
    def _now(handler: Any) -> Any:
        for conn in connections(handler):
            if conn.connected:
                return conn
        raise Unavailable("Redis cannot be reached", retry_after=1)

    async def _connected(self, handler: Any) -> Any:
        """
        A connected protocol of ``handler``: at once if there is one, else
        the next one made within `Settings.timeout` (at start-up, or while
        it reconnects); else `Unavailable`.
        """
        try:
            return self._now(handler)
        except Unavailable:
            if not self._running():
                raise
        d = self._arrivals[id(handler)].wait()
        d.addTimeout(self.settings.timeout, self.reactor)
        try:
            return await d
        except (*_NO_ANSWER, defer.CancelledError):
            raise Unavailable("Redis cannot be reached", retry_after=1) from None

    # -- calls -------------------------------------------------------------------

    async def run(self, script: str, keys: list[str], args: list[str]) -> Any:
        """
        Run ``script`` on the command connection; `Unavailable` when Redis
        cannot be reached or does not answer within `Settings.timeout`.
        """
        conn = await self._connected(self._commands)
        d = conn.eval(script, keys, args)
        try:
            return await d.addTimeout(self.settings.timeout, self.reactor)
        except _NO_ANSWER as e:
            raise Unavailable(f"Redis did not answer: {e}", retry_after=1) from None

    async def command(self, *args: str) -> Any:
        """One command on the command connection; fails as `run` does."""
        conn = await self._connected(self._commands)
        d = conn.execute_command(*args)
        try:
            return await d.addTimeout(self.settings.timeout, self.reactor)
        except _NO_ANSWER as e:
            raise Unavailable(f"Redis did not answer: {e}", retry_after=1) from None

    def track(self, d: Deferred[Any], what: str) -> None:
        """
        Keep ``d`` (a call nobody awaits) until it is done, for `settle`;
        log its failure as ``what``.
        """
        self._pending.add(d)

        def done(result: Any) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure):
                _log.warn("{what}: {why}", what=what, why=result.getErrorMessage())

        d.addBoth(done)

    async def xread(self, keys: list[str], ids: list[str]) -> Any:
        """
        One ``XREAD BLOCK`` of ``keys`` after ``ids`` on the blocking
        connection: the entries, or ``None`` after `BLOCK` seconds without.
        A read unanswered for `Settings.timeout` longer drops the connection
        (it reconnects) and fails with `defer.TimeoutError`.
        """
        conn = await self._connected(self._blocking)
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
        try:
            return await d.addTimeout(BLOCK + self.settings.timeout, self.reactor)
        except defer.TimeoutError:
            with contextlib.suppress(Exception):
                self._now(self._blocking).transport.abortConnection()
            raise

    async def scan(self, pattern: str) -> list[str]:
        """
        The keys matching ``pattern`` (at most 100 rounds of ``SCAN``), on
        the command connection; `Unavailable` at once without one.
        """
        conn = self._now(self._commands)
        found: list[str] = []
        cursor = "0"
        for _ in range(100):
            cursor, keys = await conn.execute_command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", "1000"
            ).addTimeout(self.settings.timeout, self.reactor)
            found.extend(str(key) for key in keys)
            if str(cursor) == "0":
                break
        return found
