"""
One record per session, and the running counters they feed.

Every appender (WebSocket or POST) and every reader (WebSocket follower,
``follow=1`` stream, event stream, snapshot) gets a `SessionRecord` when
it starts.  The record counts its bytes and, when the session ends, logs
one line with its outcome and moves the `Counters` a metrics endpoint
reads.  The registry
owns the counters; its reader limits read them too.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .names import Name

__all__ = ["Counters", "Kind", "Latency", "SessionRecord"]

_log = Logger(namespace="httpfstream.session")


class Kind(enum.Enum):
    """What a session does, and over which transport."""

    APPEND = "append"  # WebSocket APPEND
    POST = "post"
    FOLLOW_WS = "follow-ws"
    FOLLOW_HTTP = "follow-http"  # GET ?follow=1
    FOLLOW_EVENTS = "follow-events"  # GET Accept: text/event-stream
    SNAPSHOT = "snapshot"  # GET without follow=1
    SEARCH = "search"  # GET with grep=

    @property
    def reads(self) -> bool:
        return self in _READERS


_READERS = frozenset(
    {
        Kind.FOLLOW_WS,
        Kind.FOLLOW_HTTP,
        Kind.FOLLOW_EVENTS,
        Kind.SNAPSHOT,
        Kind.SEARCH,
    }
)


#: Upper bounds of the latency buckets, in seconds (the last is +Inf).
LATENCY_BUCKETS = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    float("inf"),
)


@dataclass
class Latency:
    """A histogram of durations: counts per bucket (not cumulative), sum."""

    counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass
class Counters:
    """
    Running totals of one registry's sessions.

    :ivar open: sessions in progress, by kind.
    :ivar ended: sessions ended, by kind and outcome (a close code, or for
        HTTP a status or ``"cut"``).
    :ivar bytes_appended: bytes appenders sent that were persisted.
    :ivar bytes_delivered: bytes sent to readers.
    :ivar swept: resources removed for being older than the maximum age.
    :ivar refused: error responses, by status.
    :ivar no_space: appends that found no space left on the storage.
    :ivar write_seconds: from a batch of writes queued to persisted.
    :ivar sync_seconds: fsyncs of a resource file.
    """

    open: Counter[Kind] = field(default_factory=Counter)
    ended: Counter[tuple[Kind, str]] = field(default_factory=Counter)
    bytes_appended: int = 0
    bytes_delivered: int = 0
    swept: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    no_space: int = 0
    write_seconds: Latency = field(default_factory=Latency)
    sync_seconds: Latency = field(default_factory=Latency)

    def observe(self, what: str, seconds: float) -> None:
        """
        A write (``"write"``) or a sync (``"sync"``) took ``seconds``, or a
        write found no space left (``"no-space"``).
        """
        if what == "no-space":
            self.no_space += 1
        else:
            latency = self.write_seconds if what == "write" else self.sync_seconds
            latency.observe(seconds)

    @property
    def readers(self) -> int:
        """Readers in progress, all kinds."""
        return sum(self.open[kind] for kind in _READERS)


class SessionRecord:
    """
    One session, from start to its one log line.

    :param counters: the totals to move.
    :param clock: for the session's duration.
    :param kind: what the session does.
    :param name: the resource.
    :param peer: who, for the log (e.g. ``tcp4:127.0.0.1:50312``).
    :param offset: where a reader started; for an appender, the size it
        found.
    """

    def __init__(
        self,
        counters: Counters,
        clock: IReactorTime,
        kind: Kind,
        name: Name,
        peer: str,
        offset: int = 0,
    ) -> None:
        self.kind = kind
        self.name = name
        self.peer = peer
        self.offset = offset
        self.nbytes = 0
        self.outcome: str | None = None
        self._counters = counters
        # Decided once: `add` runs for every message sent to every reader.
        self._reads = kind.reads
        self._clock = clock
        self._started = clock.seconds()
        counters.open[kind] += 1

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    def add(self, nbytes: int) -> None:
        """``nbytes`` more were sent (reader) or persisted (appender)."""
        self.nbytes += nbytes
        if self._reads:
            self._counters.bytes_delivered += nbytes
        else:
            self._counters.bytes_appended += nbytes

    def end(self, outcome: int | str, detail: str = "") -> None:
        """
        The session ended with ``outcome`` (a close code, an HTTP status
        or a word); log it once.  Later calls are ignored.
        """
        if self.outcome is not None:
            return
        self.outcome = str(outcome)
        self._counters.open[self.kind] -= 1
        self._counters.ended[self.kind, self.outcome] += 1
        _log.info(
            "{kind} {peer} on {name} from {offset}: {nbytes} bytes in"
            " {duration:.3f}s, ended {outcome}{detail}",
            kind=self.kind.value,
            peer=self.peer,
            name="/".join(self.name),
            offset=self.offset,
            nbytes=self.nbytes,
            duration=self._clock.seconds() - self._started,
            outcome=self.outcome,
            detail=f" ({detail})" if detail else "",
        )
