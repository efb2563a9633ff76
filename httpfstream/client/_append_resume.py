"""
What resuming an `Appender` needs: the bytes kept until the server
acknowledges them (`Unacked`), and what a 412 on resuming means
(`take_back`).

Resuming reconnects with ``offset=`` the acknowledged size.  A 412 there
is not always someone else's doing: bytes the server persisted but had not
yet acknowledged when the connection ended (a SIGKILLed server) make the
resource longer than the acknowledged size.  When the size the 412 reports
lies between the acknowledged size and the size sent, those bytes are read
back (a ``Range`` GET) and compared with the ones still held: equal, they
count as acknowledged and resuming goes on from there; different, or a
size outside those bounds, ends the session with `OffsetMismatch` saying
why.  A 409 while resuming is tried again (within ``give_up_after``): most
often it is the appender's own old session, which the server has not yet
seen end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import treq

from ._connections import Connections, as_dropped, response_headers
from ._errors import OffsetMismatch, http_error
from ._urls import target


class Unacked:
    """
    The bytes an appender sent that the server has not acknowledged yet,
    kept (with ``retry``) to be sent again once resumed, one message at a
    time (iterating gives them in order).

    :ivar nbytes: how many bytes are kept.
    """

    def __init__(self) -> None:
        # Each message, with the size the resource has once it is persisted.
        self._kept: deque[tuple[int, bytes]] = deque()
        self.nbytes = 0

    def keep(self, end: int, data: bytes) -> None:
        """Keep ``data``, the bytes that end at ``end`` in the resource."""
        self._kept.append((end, data))
        self.nbytes += len(data)

    def forget(self, size: int) -> None:
        """
        The resource holds ``size`` bytes: forget what is kept before that
        (so the first kept bytes are the ones at ``size``).
        """
        while self._kept:
            end, data = self._kept[0]
            start = end - len(data)
            if end <= size:
                self._kept.popleft()
                self.nbytes -= len(data)
            else:
                if start < size:
                    self._kept[0] = (end, data[size - start :])
                    self.nbytes -= size - start
                break

    def __iter__(self) -> Iterator[bytes]:
        return (data for _end, data in self._kept)


async def take_back(
    connections: Connections,
    url: str,
    mismatch: OffsetMismatch,
    acked: int,
    sent: int,
    unacked: Iterable[bytes],
) -> int:
    """
    After a 412 on resuming: if the resource holds more bytes than were
    acknowledged but no more than were sent, and they are the ones
    the appender sent, the size it holds (count them as acknowledged).

    :param mismatch: the 412.
    :param acked: the size the server acknowledged to the appender.
    :param sent: the size the resource has once all the appender sent is
        persisted.
    :param unacked: the bytes sent after ``acked``, in order.
    :raises OffsetMismatch: they are not ours (``why`` says how).
    """
    size = mismatch.size

    def refuse(why: str) -> OffsetMismatch:
        return OffsetMismatch(412, "Precondition Failed", mismatch.headers, why)

    if size is None:
        raise refuse("the server did not say how many bytes the resource holds")
    if size < acked:
        raise refuse(
            f"the resource holds {size} bytes, fewer than the {acked}"
            " the server acknowledged to this appender"
        )
    if size > sent:
        raise refuse(
            f"the resource holds {size} bytes, more than the {sent} this"
            " appender sent: someone else appended"
        )
    held = b"".join(unacked)[: size - acked]
    there = await _read_back(connections, url, acked, size)
    if there != held:
        raise refuse(
            f"the resource holds {size} bytes; the {size - acked} after the"
            f" {acked} acknowledged are not the ones this appender sent:"
            " someone else appended"
        )
    return size


async def _read_back(connections: Connections, url: str, start: int, end: int) -> bytes:
    """The resource's bytes from ``start`` to ``end`` (a Range GET)."""
    ranged = {"Range": f"bytes={start}-{end - 1}"}
    try:
        response = await connections.get(target(url), headers=ranged)
        body: bytes = await treq.content(response)
    except Exception as e:
        raise as_dropped(e) from None
    if response.code == 206:
        return body
    if response.code == 200:  # the whole content, Range ignored
        return body[start:end]
    raise http_error(
        response.code, response.phrase.decode(), response_headers(response), body
    )
