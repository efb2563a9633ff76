"""
Readers, in one place: the two sinks a `stream.Cursor` sends to.

- `FollowerProtocol`: a WebSocket follower (docs/PROTOCOL.md section 4).  After
  the 101 a cursor from the requested offset becomes the streaming producer
  of the transport; it sends binary (``frames=text``: text, cut into
  messages of at most ``--text-frame-size``) messages while the transport
  takes them, then a Close with the cursor's code: 1000 the
  appender finished, 4000 it was lost, 1001 the server is stopping, 1011
  the file could not be read.  With permessage-deflate negotiated
  (section 16), its messages are compressed (`wsdeflate.deflated`), once
  per batch for all such followers.
- `ResponseSink`: an HTTP response body, for snapshots and ``follow=1``
  (section 5); the response ends when the appender does (cleanly or lost:
  a chunked body cannot carry a code), but a body cut short (the server
  stopping, a failed read) is cut off, never ended as if whole.

Each reader has a `records.SessionRecord`: bytes sent, and one log line
with the code it really ended with (or ``cut`` when the client left).
Whoever starts a reader hands it a stream it holds; the sink gives the hold
back once its cursor exists (or at once, if the client has already gone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from .._borrowed import deflate_window, frame_bytes, send_now
from ..core.records import Kind, SessionRecord
from ..core.stamps import Stamped
from ..core.stream import Cursor, IFollowerSink, Stream
from ..protocol import APPENDER_LOST, COMPLETE
from .handoff import HandedProtocol
from .wsdeflate import deflated

__all__ = ["FollowerProtocol", "Following", "ResponseSink"]


@dataclass(frozen=True)
class Following:
    """
    What the resource hands a WebSocket follower: the stream (held), where
    to start, the frame type, the record, the most bytes in one message
    (0: whatever the cursor sends at once), and whether lines are stamped
    with their times (``timestamps=1``).
    """

    stream: Stream
    offset: int
    text: bool
    record: SessionRecord
    message_size: int = 0
    stamped: bool = False


def _framed(data: bytes, text: bool, size: int) -> bytes:
    """
    ``data`` as WebSocket messages of at most ``size`` bytes (0: one
    message), back to back, ready for the wire.
    """
    n = len(data)
    if not 0 < size < n:
        return frame_bytes(data, text)
    # Every full message has the same header: Autobahn's, built once, then
    # one copy of the bytes (three times faster than a frame per piece).
    header = frame_bytes(data[:size], text)[:-size]
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    whole = n - n % size
    for at in range(0, whole, size):
        parts += (header, view[at : at + size])
    if whole < n:
        parts.append(frame_bytes(data[whole:], text))
    return b"".join(parts)


class _LastFrame:
    """
    The frames of the last bytes a follower sent (one of each frame type
    and message size), for the next follower that sends the very same
    bytes object: the stream gives every caught-up cursor the same object
    (`stream.Tail`), so an append is framed once for all its followers, not
    once each.  (The object is held here, so its identity cannot be reused
    meanwhile.)  Compressed frames too, made by `wsdeflate.deflated`
    (which keeps them by range, for followers sending other objects).
    """

    def __init__(self) -> None:
        # (text?, message size) -> the bytes last framed, and their frames
        self._last: dict[tuple[bool, int], tuple[bytes, bytes]] = {}
        # (text?, message size, window) -> the same, compressed
        self._deflated: dict[tuple[bool, int, int], tuple[bytes, bytes]] = {}

    def frame(self, data: bytes, text: bool, size: int = 0) -> bytes:
        key = (text, size)
        last = self._last.get(key)
        if last is None or last[0] is not data:
            last = self._last[key] = (data, _framed(data, text, size))
        return last[1]

    def deflated(
        self,
        data: bytes,
        text: bool,
        size: int,
        window: int,
        make: Callable[[], bytes | None],
    ) -> bytes | None:
        """
        ``data``'s compressed frames: the last ones made if ``data`` is the
        same object, else ``make()`` (``None``: send it uncompressed).
        """
        key = (text, size, window)
        last = self._deflated.get(key)
        if last is not None and last[0] is data:
            return last[1]
        frames = make()
        if frames is not None:
            self._deflated[key] = (data, frames)
        return frames


_frames = _LastFrame()


@implementer(IFollowerSink)
class FollowerProtocol(HandedProtocol[Following]):
    """One WebSocket follower (see the module docstring)."""

    _cursor: Cursor | None = None
    #: permessage-deflate's window bits, 0 if not negotiated.
    _window = 0
    #: The offset of the next byte to send (``None``: its lines are
    #: stamped, so it sends no range of the stream's bytes).
    _at: int | None = None

    def onOpen(self) -> None:
        following = self.session
        self._window = deflate_window(self) or 0
        self._at = None if following.stamped else following.offset
        # twisted.web's HTTPChannel is still the transport's producer after
        # the upgrade; it must go before the cursor can be registered.
        self._socket.unregisterProducer()
        stream, offset = following.stream, following.offset
        sink: IFollowerSink = self
        if following.stamped:
            sink = Stamped(self, stream.time_of, offset)
        self._cursor = stream.follow(sink, offset)
        self._socket.registerProducer(self._cursor, True)
        following.stream.release()
        self._cursor.wake()

    # IFollowerSink

    def send(self, data: bytes) -> None:
        if self.state == self.STATE_OPEN:
            try:
                # What sendPreparedMessage does (a follower never queues a
                # synchronous send, so Autobahn's send queue is always
                # empty), without the debug line it formats on every send.
                following = self.session
                text, size = following.text, following.message_size
                frames = None
                window = self._window
                if window:
                    frames = _frames.deflated(
                        data,
                        text,
                        size,
                        window,
                        lambda: deflated(
                            following.stream,
                            self._at,
                            data,
                            text,
                            size,
                            window,
                            self.clock.seconds(),
                        ),
                    )
                if frames is None:
                    frames = _frames.frame(data, text, size)
                send_now(self.transport, frames)
            except Exception:
                # Never let the follower believe it has every byte.
                self.session.record.end("failed", "sending failed")
                self.dropConnection(abort=True)
                return
            if self._at is not None:
                self._at += len(data)
            self.session.record.add(len(data))

    def finish(self, code: int, reason: str) -> None:
        if self.state == self.STATE_OPEN:
            self.session.record.end(code, reason)
            self.sendCloseFrame(
                code=code, reasonUtf8=reason.encode()[:123], isReply=False
            )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Followers have nothing to say; what they send is ignored."""

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        following = self.session
        if self._cursor is None:
            # Never opened: give back the hold the resource passed us.
            following.stream.release()
            following.record.end("cut", "before the handshake completed")
            return
        self._cursor.stop()
        # Unless we ended it (`finish`), the peer did, or the connection.
        following.record.end(code if code is not None else "cut", reason or "")


@implementer(IFollowerSink)
class ResponseSink:
    """
    Sends a cursor's bytes as an HTTP response body.

    :param request: the response to write; its headers are set.
    :param record: the reader's record.
    """

    def __init__(self, request: Request, record: SessionRecord) -> None:
        self._request = request
        self._record = record
        self._cursor: Cursor | None = None
        self._gone = False
        request.notifyFinish().addErrback(self._lost)

    def start(self, cursor: Cursor) -> None:
        """Send ``cursor``'s bytes as the transport takes them."""
        self._cursor = cursor
        if self._gone:
            cursor.stop()
            return
        self._request.registerProducer(cursor, True)
        cursor.wake()

    def _lost(self, reason: Failure) -> None:
        self._gone = True
        self._record.end("cut", "the client went away")
        if self._cursor is not None:
            self._cursor.stop()

    def send(self, data: bytes) -> None:
        self._request.write(data)
        self._record.add(len(data))

    def deliver(self, wire: bytes, count: int) -> None:
        """
        Write ``wire``, which carries ``count`` of the resource's bytes (an
        encoding's, `gzip.GzipSink`).
        """
        if wire:
            self._request.write(wire)
        if count:
            self._record.add(count)

    def finish(self, code: int, reason: str, last: bytes = b"") -> None:
        """
        As `IFollowerSink.finish`; ``last``: what an encoding writes at
        the end of a whole body.
        """
        if self._gone:
            return
        # A snapshot that got all its bytes logs its status; a follow
        # logs how it ended, which its chunked body cannot say.
        whole = code == COMPLETE and self._record.kind is Kind.SNAPSHOT
        self._record.end(self._request.code if whole else code, reason)
        self._request.unregisterProducer()
        if code in (COMPLETE, APPENDER_LOST):
            if last:
                self._request.write(last)
            self._request.finish()
        else:
            # The body is cut short (the server stopping, a failed read):
            # end it so no client can take it for whole.
            self._gone = True
            transport: Any = self._request.channel.transport
            transport.abortConnection()
