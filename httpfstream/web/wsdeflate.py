"""
permessage-deflate (RFC 7692) on WebSocket connections (docs/PROTOCOL.md
section 16): what the server accepts (`accept`, Autobahn's
``perMessageCompressionAccept`` for followers and appenders), and the
followers' compressed frames (`deflated`, built by `framed`).

What the server accepts and answers:

- The first ``permessage-deflate`` offer in the client's list; nothing
  else (Autobahn's other ``permessage-*`` codecs are declined).  A client
  that offers nothing gets plain frames, as before.
- It always answers ``server_no_context_takeover``, asked or not (RFC 7692
  section 7.1.1.1 lets a server add it): each message the server sends is
  compressed on its own (a `deflate.segment`), so the frames of a batch
  serve every follower that sends it with the same parameters (kept by
  `deflate.SHARED`, which also bounds what followers sending bytes of
  their own may cost), and a follower holds no compressor of its own.
- ``server_max_window_bits=N`` in the offer is honoured (and echoed): that
  follower's messages use a window of 2**N bytes (followers asking the
  same N share frames).  Without it, 2**15.
- Nothing is asked of the client's own direction
  (``client_no_context_takeover``, ``client_max_window_bits``): only
  appenders send data, and Autobahn inflates what they send, checking the
  inflated size against the message limit.
- An offer Autobahn cannot parse (a window of 8, an unknown parameter)
  fails the handshake in Autobahn (400) before this module sees it.

A message that does not get smaller (random bytes, a tiny batch) is sent
uncompressed (RSV1 clear), which RFC 7692 allows per message, and so are a
follower's bytes the budget refuses (`deflate.SHARED`); control frames are
never compressed.
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)

from ..core.stream import Stream
from .deflate import MARKER, SHARED, segment

__all__ = ["accept", "deflated", "framed"]

_NO_CONTEXT = "server_no_context_takeover"


class _Accept(PerMessageDeflateOfferAccept):
    """An offer accepted with ``server_no_context_takeover``, said."""

    def __init__(self, offer: PerMessageDeflateOffer) -> None:
        super().__init__(offer, no_context_takeover=True)

    def get_extension_string(self) -> str:
        answer: str = super().get_extension_string()
        if _NO_CONTEXT not in answer:
            answer += f"; {_NO_CONTEXT}"
        return answer


def accept(offers: list[Any]) -> Any:
    """The answer to a client's compression offers (``None``: none taken)."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return _Accept(offer)
    return None


def _header(first: int, length: int) -> bytes:
    """A server frame's header (RFC 6455 section 5.2: never masked)."""
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def framed(data: bytes, text: bool, size: int, window: int) -> bytes:
    """
    ``data`` as permessage-deflate messages of at most ``size`` bytes
    before compression (0: one message), back to back, ready for the wire;
    each message compressed on its own with a window of ``2**window``, or
    left as it is when that does not make it smaller.
    """
    opcode = 0x1 if text else 0x2
    view = memoryview(data)
    n = len(data)
    step = size if 0 < size < n else max(n, 1)
    parts: list[bytes | memoryview] = []
    for at in range(0, n, step):
        piece = view[at : at + step]
        compressed = memoryview(segment(piece, window))[: -len(MARKER)]
        if len(compressed) < len(piece):
            # FIN, RSV1 (this message is compressed), the opcode.
            parts += (_header(0xC0 | opcode, len(compressed)), compressed)
        else:
            parts += (_header(0x80 | opcode, len(piece)), piece)
    return b"".join(parts)


def deflated(
    stream: Stream,
    start: int | None,
    data: bytes,
    text: bool,
    size: int,
    window: int,
    now: float,
) -> bytes | None:
    """
    The frames of ``data``, ``stream``'s bytes from ``start`` (``None``:
    bytes derived from them, which no other follower sends), as `framed`
    makes them: made once for every follower that sends them with the same
    frame type, message size and window; ``None`` if `deflate.SHARED`
    refuses to compress them (send them uncompressed).
    """
    key = None
    if start is not None:
        key = SHARED.key(stream, start, len(data), window, text, size)
    shared = data is stream.last_batch
    return SHARED.get(key, data, shared, now, lambda: framed(data, text, size, window))
