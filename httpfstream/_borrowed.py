"""
What httpfstream uses of its libraries beyond their public API, each name
behind one small function here, so that a library that renames one breaks
one place, and `tests/test_borrowed.py` (the canaries) fails naming the
library and its version.

- Twisted: sending to an idle TCP socket at once (`send_now`, for the
  WebSocket followers' fan-out, docs/PERFORMANCE.md).  If Twisted no longer
  has what it reads, `FAST_SEND` is false and every write is queued as
  Twisted's ``write`` does; `fast_send_report` says which at start-up.
- Autobahn: the bytes of a prepared frame (`frame_bytes`), the handshake
  bytes a client protocol has read (`handshake_buffer`, `parse_http_head`),
  the Close a peer sent (`remote_close`), the permessage-deflate a
  connection negotiated (`deflate_window`).
- txredisapi: a connection handler's reconnection delays, its pool of
  connections, and the notice of its next connection (`set_reconnect_delays`,
  `connections`, `next_connection`).

Nothing here imports txredisapi: its functions take its objects.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from autobahn.websocket.compress import PerMessageDeflate
from autobahn.websocket.protocol import PreparedMessage, parseHttpHeader
from twisted.internet import abstract, tcp
from twisted.internet.defer import Deferred

__all__ = [
    "FAST_SEND",
    "connections",
    "deflate_window",
    "fast_send_report",
    "frame_bytes",
    "handshake_buffer",
    "next_connection",
    "parse_http_head",
    "remote_close",
    "send_now",
    "set_reconnect_delays",
]

# -- Twisted ------------------------------------------------------------------

#: What `send_now` reads of a ``tcp.Server`` besides its public interface
#: (``FileDescriptor``'s write buffer and its per-call send, the abort flag).
TWISTED_NAMES = (
    "dataBuffer",
    "_tempDataLen",
    "_aborting",
    "writeSomeData",
    "SEND_LIMIT",
)


def _fast_send_missing() -> list[str]:
    # _tempDataLen is set in FileDescriptor.__init__, the others on the classes.
    init = abstract.FileDescriptor.__init__.__code__.co_names
    return [
        name
        for name in TWISTED_NAMES
        if not hasattr(tcp.Server, name) and name not in init
    ]


#: Whether `send_now` may send straight to an idle socket.
FAST_SEND = not _fast_send_missing()


def fast_send_report() -> str:
    """One line for the start-up log: whether `send_now` sends directly."""
    twisted = f"Twisted {version('twisted')}"
    if FAST_SEND:
        return f"followers: frames go straight to idle sockets ({twisted})"
    missing = ", ".join(_fast_send_missing())
    return f"followers: every frame is queued ({twisted} has no {missing})"


def send_now(transport: Any, data: bytes) -> None:
    """
    Write ``data`` to ``transport``, sending it at once when nothing is
    queued before it.

    ``transport.write`` only queues: the bytes go out on the reactor's next
    turn, which registers the socket for writability, waits for epoll to
    report it, sends at most 128 KiB, and unregisters it.  For a thousand
    caught-up followers of one append that turn costs more than the sends
    themselves, and one fast follower gets less per turn than the appender
    brings in, so it falls behind (docs/PERFORMANCE.md).  So a plain TCP
    (or Unix) transport with nothing queued is sent to directly, for as
    long as the kernel takes it all; the rest, and anything for a
    transport with bytes queued (or TLS, or closing), is queued by
    ``write`` as usual, so the order of bytes never changes.  A failed
    send is queued too: the reactor's own write then finds the connection
    lost.
    """
    if (
        not FAST_SEND
        or not isinstance(transport, tcp.Server)
        # TLS on this transport encrypts in write(), never in writeSomeData.
        or transport.TLS
        or transport.dataBuffer
        # Written this turn and not sent yet (Twisted's own bookkeeping).
        or transport._tempDataLen
        or transport._aborting
        or transport.disconnecting
        or not transport.connected
    ):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if sent == len(data):
        return  # all of it: the common case
    left = memoryview(data)
    while not isinstance(sent, BaseException):
        left = left[sent:]
        if sent < transport.SEND_LIMIT or not left:
            break  # the kernel took less than asked: it is full
        # At most SEND_LIMIT bytes a call.  (Twisted's own doWrite hands it
        # memoryviews too.)
        sent = transport.writeSomeData(left)  # type: ignore[arg-type]
    if left:
        transport.write(bytes(left))


# -- Autobahn -----------------------------------------------------------------


def frame_bytes(data: bytes, text: bool) -> bytes:
    """
    ``data`` as one unmasked, uncompressed WebSocket frame, ready for the
    wire (Autobahn's ``PreparedMessage.payloadHybi``).
    """
    prepared = PreparedMessage(
        data, isBinary=not text, applyMask=False, doNotCompress=True
    )
    frame: bytes = prepared.payloadHybi
    return frame


def handshake_buffer(protocol: Any) -> bytes:
    """What an Autobahn client protocol has read and not yet parsed (``data``)."""
    data: bytes = protocol.data
    return data


def parse_http_head(head: bytes) -> tuple[str, dict[str, str]]:
    """An HTTP response head's status line and headers (lower-case names)."""
    status_line, headers, _ = parseHttpHeader(head)
    return status_line, dict(headers)


def deflate_window(protocol: Any) -> int | None:
    """
    The window bits of the permessage-deflate an open server protocol
    negotiated for what it sends (its ``websocket_extensions_in_use``), or
    ``None`` if it negotiated none.
    """
    for extension in protocol.websocket_extensions_in_use:
        if isinstance(extension, PerMessageDeflate):
            return int(extension.server_max_window_bits)
    return None


def remote_close(protocol: Any) -> tuple[int | None, str | None]:
    """The code and reason of the Close frame the peer sent, if it sent one."""
    return (
        getattr(protocol, "remoteCloseCode", None),
        getattr(protocol, "remoteCloseReason", None),
    )


# -- txredisapi ---------------------------------------------------------------


def set_reconnect_delays(handler: Any, initial: float, most: float) -> None:
    """How soon a txredisapi connection handler reconnects, and at most how late."""
    factory = handler._factory
    factory.initialDelay = initial
    factory.maxDelay = most


def connections(handler: Any) -> list[Any]:
    """The connections (protocols) of a txredisapi connection handler's pool."""
    return list(handler._factory.pool)


def next_connection(handler: Any) -> Deferred[Any]:
    """
    A connected protocol of a txredisapi connection handler's pool: at once
    if it has one, else as soon as one is made (its factory's
    ``getConnection``, peeking, so the protocol stays in the pool).  Fails
    with txredisapi's ``ConnectionError`` if the handler has stopped
    connecting and has no connection.
    """
    d: Deferred[Any] = handler._factory.getConnection(peek=True)
    return d
