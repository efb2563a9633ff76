"""
`OpenStreams`: the streams open now, by name.

Each resource is opened once however many ask at once (later callers wait
for the open under way), watched on the growth feed while open, dropped
when its last holder, cursor and session are gone, and closed once every
read and write queued on its file has finished.  `when_idle` fires when
nothing is open, opening or closing.  A deleted resource's stream is
detached: its followers finish with what they were given, and nobody else
finds it.

The registry decides who may open what; this table only keeps them.
`cancellable` lets whoever waits for a stream give it back early.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from .coordination import IGrowthFeed
from .names import Name
from .store import IStore, IStoreFile, SizeMismatch
from .stream import Stream

__all__ = ["OpenStreams", "cancellable"]

_log = Logger()
_T = TypeVar("_T")

#: Makes the stream of a file just opened; given what to call once idle.
StreamMaker = Callable[[Name, IStoreFile, Callable[[Stream], None]], Stream]


def cancellable(d: Deferred[_T], undo: Callable[[_T], object]) -> Deferred[_T]:
    """
    ``d``'s result, in a Deferred the caller may cancel.  ``d`` itself runs
    to its end either way (a store open in a thread cannot be stopped);
    a result nobody will take any more is given to ``undo``.
    """
    outer: Deferred[_T] = Deferred(lambda _: None)

    def settle(result: _T | Failure) -> None:
        if outer.called:  # cancelled
            if not isinstance(result, Failure):
                undo(result)
        elif isinstance(result, Failure):
            outer.errback(result)
        else:
            outer.callback(result)

    d.addBoth(settle)
    return outer


class OpenStreams:
    """
    :param store: where files are opened.
    :param feed: told of every stream opened (`IGrowthFeed.watch`) and of
        every stream dropped.
    :param make: builds a `Stream` on a file just opened.
    """

    def __init__(self, store: IStore, feed: IGrowthFeed, make: StreamMaker) -> None:
        self._store = store
        self._feed = feed
        self._make = make
        self._streams: dict[Name, Stream] = {}
        # Names being opened, each with whoever waits for that to end.
        self._opening: dict[Name, list[Deferred[None]]] = {}
        # Streams of deleted resources, still read by their followers.
        self._detached: set[Stream] = set()
        self._unwatch: dict[Stream, Callable[[], None]] = {}
        self._closing: set[Deferred[None]] = set()
        self._idle_waiters: list[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._streams)

    def named(self) -> list[Stream]:
        """Every stream open now that can be found by its name."""
        return list(self._streams.values())

    def all(self) -> list[Stream]:
        """Every stream open now, detached ones included."""
        return [*self._streams.values(), *self._detached]

    def find(self, name: Name) -> Stream | None:
        """``name``'s stream if it is open now (an open under way aside)."""
        return self._streams.get(name)

    async def current(self, name: Name) -> Stream | None:
        """``name``'s stream once any open under way has ended, if open."""
        while name in self._opening:
            await self._opened(name)
        return self._streams.get(name)

    async def get(
        self,
        name: Name,
        create: bool,
        expected_size: int | None,
        take: Callable[[Stream], _T],
    ) -> _T:
        """
        ``take(stream)`` on ``name``'s stream, opened if need be, before
        anybody else sees a stream opened here.

        :raises store.SizeMismatch: ``expected_size`` is not its size.
        """
        stream = await self.current(name)
        if stream is not None:
            if expected_size is not None and stream.size != expected_size:
                raise SizeMismatch(stream.size, stream.complete)
            return take(stream)
        self._opening[name] = []
        try:
            file = await self._store.open(name, create, expected_size)
        except BaseException:
            self._done_opening(name)
            raise
        stream = self._make(name, file, self.idle)
        try:
            # Whether an appender holds it elsewhere, before anybody sees it.
            unwatch = await self._feed.watch(name, stream)
        except BaseException:
            try:
                await stream.close()
            finally:
                self._done_opening(name)
            raise
        self._streams[name] = stream
        self._unwatch[stream] = unwatch
        try:
            return take(stream)
        finally:
            self._done_opening(name)

    def detach(self, name: Name) -> None:
        """
        Nobody finds ``name``'s stream any more (its resource was deleted);
        its followers go on until they end.
        """
        stream = self._streams.pop(name, None)
        if stream is not None:
            self._detached.add(stream)
            self._unwatch.pop(stream)()

    def idle(self, stream: Stream) -> None:
        """``stream`` is in use no more: drop it and close its file."""
        if self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
            self._unwatch.pop(stream)()
        elif stream in self._detached:
            self._detached.discard(stream)
        else:
            return
        d = stream.close()
        d.addErrback(
            lambda f: _log.failure("closing {name}", f, name="/".join(stream.name))
        )
        self._closing.add(d)

        def closed(_: object) -> None:
            self._closing.discard(d)
            self._check_all_idle()

        d.addBoth(closed)

    def when_idle(self) -> Deferred[None]:
        """
        Fire once no stream is open or opening and every file is closed
        (at once if that is so now).
        """
        d: Deferred[None] = Deferred(self._idle_waiters.remove)
        self._idle_waiters.append(d)
        self._check_all_idle()
        return d

    def _check_all_idle(self) -> None:
        if self._streams or self._detached or self._opening or self._closing:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    def _opened(self, name: Name) -> Deferred[None]:
        """Fire once the open of ``name`` under way has ended."""
        d: Deferred[None] = Deferred()
        self._opening[name].append(d)
        return d

    def _done_opening(self, name: Name) -> None:
        for d in self._opening.pop(name):
            d.callback(None)
        self._check_all_idle()
