"""
What several server processes on one storage root would have to agree on,
behind two interfaces, with today's single-process implementations.

- **The appender slot** (`IAppenderSlots`): at most one appender per
  resource.  In one process a set of names is enough; across processes it
  must be a lease that lives elsewhere (a lock in Redis, with expiry and a
  fencing token).  The registry takes every slot through this interface.
- **Growth written elsewhere** (`IGrowthFeed`): a stream learns that its
  file grew, or that its appender's session ended, from its own writes.
  When the appender is in another process, the stream has to be told; the
  feed calls the stream's `stream.IGrowthListener` methods, the same ones
  its own writes use.  In one process nothing grows behind a stream's back,
  so `LocalFeed` tells nobody anything.

Both local implementations answer at once (their Deferreds have already
fired), so the registry's guarantee that of racing APPEND handshakes exactly
one wins holds without any lock of its own.
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
]


class SlotTaken(Exception):
    """Another appender holds the resource's slot."""


class ISlot(Interface):
    """One held appender slot."""

    def release() -> None:
        """Give the slot back; once only."""


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

    def watch(name: Name, listener: IGrowthListener) -> Callable[[], None]:
        """
        Tell ``listener`` of growth of ``name`` written elsewhere, until the
        returned function is called.
        """

    def grown(name: Name, size: int) -> None:
        """This process persisted ``name`` up to ``size`` bytes."""

    def ended(name: Name, size: int, code: int, reason: str) -> None:
        """This process ended the appender session of ``name``."""


@implementer(IGrowthFeed)
class LocalFeed:
    """One process: every writer is local, so there is nothing to relay."""

    def watch(self, name: Name, listener: IGrowthListener) -> Callable[[], None]:
        return lambda: None

    def grown(self, name: Name, size: int) -> None:
        pass

    def ended(self, name: Name, size: int, code: int, reason: str) -> None:
        pass
