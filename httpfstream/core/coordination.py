"""
What several server processes on one storage root must agree on, behind
two interfaces, with the single-process implementations.

- **The appender slot** (`IAppenderSlots`): at most one appender per
  resource.  In one process a set of names is enough (`LocalSlots`);
  across processes it is a lease that lives in Redis, with expiry and a
  fencing token.  The registry takes every slot through this interface.
- **Growth written elsewhere** (`IGrowthFeed`): a stream learns that its
  file grew, or that its appender's session ended, from its own writes.
  When the appender is in another process, the stream is told by the feed,
  which calls the stream's `growth.IGrowthListener` methods, the same ones
  its own writes use.  In one process nothing grows behind a stream's back,
  so `LocalFeed` tells nobody anything.

Both local implementations answer at once (their Deferreds have already
fired), so the registry's guarantee that of racing APPEND handshakes exactly
one wins holds without any lock of its own.  The shared implementation
(``--redis``: `shared.coordinator.RedisCoordinator`) decides a claim
atomically in Redis instead, and its slots are leases: `ISlot.valid`
says whether the holder may still write, and `ISlot.when_lost` is told
when it may not any more.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import Interface, implementer

from .names import Name
from .stream import IGrowthListener

__all__ = [
    "IAppenderSlots",
    "IGrowthFeed",
    "ISlot",
    "LocalFeed",
    "LocalSlots",
    "SlotTaken",
    "Unavailable",
]


class SlotTaken(Exception):
    """Another appender holds the resource's slot."""


class Unavailable(Exception):
    """
    What several servers agree through cannot be reached now (Redis is
    down), or the archive's bucket that a request needs (``--archive``):
    nothing was decided; try again later.

    :ivar retry_after: seconds after which trying again may succeed.
    """

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ISlot(Interface):
    """One held appender slot."""

    def release() -> None:
        """Give the slot back; once only."""

    def valid() -> bool:
        """
        Whether the holder may still write: checked before every write, so
        a holder whose lease ran out (another may hold it now) never writes
        again.  Called in the reactor and in the store's writing thread
        (`writes.write_fenced`): it must be safe in any thread, and quick.
        """

    def when_lost(lost: Callable[[str], None]) -> None:
        """
        Call ``lost(why)`` if the slot is lost before it is released (a
        lease that could not be renewed); the session must then end.
        """


class IAppenderSlots(Interface):
    """Who holds each resource's appender slot."""

    def claim(name: Name) -> Deferred[ISlot]:
        """
        Take the slot of ``name``; fails with `SlotTaken` if it is held.
        """

    def held(name: Name) -> bool:
        """Whether somebody holds the slot of ``name`` now."""


@implementer(ISlot)
class _LocalSlot:
    def __init__(self, slots: LocalSlots, name: Name) -> None:
        self._slots = slots
        self._name: Name | None = name

    def release(self) -> None:
        if self._name is not None:
            self._slots._held.discard(self._name)
            self._name = None

    def valid(self) -> bool:
        return True

    def when_lost(self, lost: Callable[[str], None]) -> None:
        pass  # a local slot is never lost


@implementer(IAppenderSlots)
class LocalSlots:
    """The slots of one process: a set of names, decided at once."""

    def __init__(self) -> None:
        self._held: set[Name] = set()

    def claim(self, name: Name) -> Deferred[ISlot]:
        if name in self._held:
            return fail(SlotTaken())
        self._held.add(name)
        return succeed(_LocalSlot(self, name))

    def held(self, name: Name) -> bool:
        return name in self._held


class IGrowthFeed(Interface):
    """News of resources growing, for streams whose appender is elsewhere."""

    def watch(name: Name, listener: IGrowthListener) -> Deferred[Callable[[], None]]:
        """
        Tell ``listener`` of growth of ``name`` written elsewhere, until the
        function the Deferred fires with is called.  It fires once the
        listener knows whether an appender holds ``name`` elsewhere (told
        `IGrowthListener.began` if so); it fails with `Unavailable` if
        that cannot be learnt now.
        """

    def grown(name: Name, size: int) -> None:
        """This process persisted ``name`` up to ``size`` bytes."""

    def ended(name: Name, size: int, code: int, reason: str) -> None:
        """This process ended the appender session of ``name``."""


@implementer(IGrowthFeed)
class LocalFeed:
    """One process: every writer is local, so there is nothing to relay."""

    def watch(
        self, name: Name, listener: IGrowthListener
    ) -> Deferred[Callable[[], None]]:
        return succeed(lambda: None)

    def grown(self, name: Name, size: int) -> None:
        pass

    def ended(self, name: Name, size: int, code: int, reason: str) -> None:
        pass
