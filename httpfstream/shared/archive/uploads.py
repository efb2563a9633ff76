"""
`Uploads`: when each resource is archived.

A resource is *scheduled* when a session on it ends (at once if it ended
well; after the idle time, ``--archive-idle``, if not, so that an appender
that resumes does so before its resource goes up half-done) and at
start-up for every file the bucket lacks.  One job per resource runs at a
time: it calls the archive's ``attempt`` and, while that fails because
the bucket cannot take it now (`S3Unavailable`, `S3Denied`, or no client
yet), tries again after 1 s, 2 s, 4 s... up to ``retry_max``, or at once
when the bucket is seen to answer again (`answered`).  Nothing is lost
meanwhile: the bytes stay in the local file, which is not evicted until
its upload is done.  A resource scheduled again while its job runs runs
once more after it.  At most `AT_ONCE` attempts run at a time (a start-up
that finds thousands of files the bucket lacks does not open thousands of
uploads).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ...core.coordination import Unavailable
from ...core.names import Name
from ..s3 import S3Denied, S3Error, S3Unavailable

__all__ = ["Uploads"]

_log = Logger()

#: Attempts at once.
AT_ONCE = 4
#: What makes an attempt worth another later.
_NOT_NOW = (S3Unavailable, S3Denied, Unavailable)


class Uploads:
    """
    :param attempt: archives one resource (or finds nothing to do);
        fails as above when the bucket cannot take it now.
    :param retry_max: the longest wait between two attempts, in seconds.
    """

    def __init__(
        self,
        reactor: Any,
        attempt: Callable[[Name], Awaitable[None]],
        retry_max: float = 10.0,
    ) -> None:
        self._reactor = reactor
        self._attempt = attempt
        self.retry_max = retry_max
        self._timers: dict[Name, IDelayedCall] = {}
        self._running: dict[Name, Deferred[None]] = {}
        # Scheduled again while running: the delay to run once more after.
        self._again: dict[Name, float] = {}
        self._waits: set[Deferred[None]] = set()
        self._idle: list[Deferred[None]] = []
        self._stopped = False
        self._at_once = DeferredSemaphore(AT_ONCE)

    @property
    def pending(self) -> int:
        """Resources scheduled or being archived now."""
        return len(self._timers.keys() | self._running.keys())

    def scheduled(self, name: Name) -> bool:
        return name in self._timers or name in self._running

    def schedule(self, name: Name, delay: float = 0.0) -> None:
        """Archive ``name`` in ``delay`` seconds (a new delay replaces an old one)."""
        if self._stopped:
            return
        if name in self._running:
            self._again[name] = delay
            return
        self.cancel(name)
        if delay <= 0:
            self._start(name)
        else:
            self._timers[name] = self._reactor.callLater(delay, self._start, name)

    def cancel(self, name: Name) -> None:
        """Forget a scheduled (not running) job for ``name``."""
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._again.pop(name, None)

    def answered(self) -> None:
        """The bucket answered: waits between attempts end now."""
        waits, self._waits = self._waits, set()
        for d in waits:
            d.callback(None)

    def _start(self, name: Name) -> None:
        self._timers.pop(name, None)
        job = Deferred.fromCoroutine(self._job(name))
        self._running[name] = job

        def ended(_: object) -> None:
            del self._running[name]
            again = self._again.pop(name, None)
            if again is not None:
                self.schedule(name, again)
            self._check_idle()

        job.addBoth(ended)

    async def _job(self, name: Name) -> None:
        delay = 1.0
        shown = "/".join(name)
        while True:
            try:
                await self._at_once.run(self._attempt, name)
                return
            except CancelledError:
                return
            except _NOT_NOW as e:
                _log.warn(
                    "archiving {name}: {error}; trying again within {delay:g}s",
                    name=shown,
                    error=e,
                    delay=delay,
                )
            except S3Error as e:
                _log.error(
                    "archiving {name} failed: {error}; it stays on local disk"
                    " (tried again at the next start)",
                    name=shown,
                    error=e,
                )
                return
            except Exception:
                _log.failure("archiving {name}", name=shown)
                return
            try:
                await self._wait(delay)
            except CancelledError:
                return
            delay = min(delay * 2, self.retry_max)

    def _wait(self, seconds: float) -> Deferred[None]:
        d: Deferred[None] = Deferred(self._waits.discard)
        timer = self._reactor.callLater(seconds, self._waited, d)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        self._waits.add(d)
        return d

    def _waited(self, d: Deferred[None]) -> None:
        if d in self._waits:
            self._waits.discard(d)
            d.callback(None)

    def _check_idle(self) -> None:
        if self._running or (self._timers and not self._stopped):
            return
        waiters, self._idle = self._idle, []
        for d in waiters:
            d.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Start every scheduled job now, and fire once none runs, or after
        ``timeout`` seconds, when those still running are cancelled.
        """
        for name in list(self._timers):
            self.cancel(name)
            self._start(name)
        done: Deferred[None] = Deferred()
        self._idle.append(done)
        self._check_idle()
        timer = self._reactor.callLater(timeout, self.stop)
        done.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        return done

    def stop(self) -> None:
        """Cancel everything: scheduled jobs and those running."""
        self._stopped = True
        for name in list(self._timers):
            self.cancel(name)
        self._again.clear()
        for job in list(self._running.values()):
            job.cancel()
        self._check_idle()
