"""
``timestamps=1`` (docs/PROTOCOL.md section 13): every line a reader gets is
prefixed with the time its first byte was persisted, in RFC 3339 UTC with
milliseconds, and one space: ``2026-12-07T10:15:02.125Z make: ...``.

`Stamped` sits between a cursor and its sink: the cursor still sends the
resource's bytes in order from a line's start, and the sink gets them
stamped.  It holds nothing back: a line cut between two sends is stamped
once, where it starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zope.interface import implementer

from .cursor import IFollowerSink

__all__ = ["Stamped", "stamp"]


def stamp(ms: int) -> bytes:
    """``ms`` since the epoch as RFC 3339 UTC with milliseconds, and a space."""
    seconds, millis = divmod(ms, 1000)
    return b"%s.%03dZ " % (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode(),
        millis,
    )


@implementer(IFollowerSink)
class Stamped:
    """
    ``sink``, its lines stamped.

    :param sink: where the stamped bytes go.
    :param time_of: when the byte at an offset was persisted, in ms.
    :param offset: where the cursor starts: a line's first byte.
    """

    def __init__(
        self, sink: IFollowerSink, time_of: Callable[[int], int], offset: int
    ) -> None:
        self._sink = sink
        self._time_of = time_of
        self._offset = offset
        self._line_start = True
        # The last stamp made, for lines persisted in the same millisecond.
        self._last: tuple[int, bytes] = (-1, b"")

    def _stamp(self, offset: int) -> bytes:
        ms = self._time_of(offset)
        if ms != self._last[0]:
            self._last = (ms, stamp(ms))
        return self._last[1]

    def send(self, data: bytes) -> None:
        if not data:
            return
        offset = self._offset
        pieces = data.split(b"\n")
        out: list[bytes] = []
        at = offset
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            starts_line = self._line_start if i == 0 else True
            if i == last and not piece:
                break  # the data ended with a newline: the next line waits
            if starts_line:
                out.append(self._stamp(at))
            out.append(piece)
            if i < last:
                out.append(b"\n")
            at += len(piece) + 1
        self._line_start = data.endswith(b"\n")
        self._offset = offset + len(data)
        self._sink.send(b"".join(out))

    def finish(self, code: int, reason: str) -> None:
        self._sink.finish(code, reason)
