"""
Small HTTP helpers of the web layer: reading a request's query and headers
(`arg`, `int_arg`, `byte_range`, `start_offset`, `peer`), and writing what
every response shares (`write_text`, the one way to answer with a short
text body; `state_headers`; `content_type`).  No state, no core calls.
"""

from __future__ import annotations

import mimetypes
import re

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.server import Request

from ..core.names import Name
from ..core.refusal import Refusal
from ..protocol import ResourceState, header_bytes

__all__ = [
    "arg",
    "byte_range",
    "content_type",
    "int_arg",
    "peer",
    "start_offset",
    "state_headers",
    "write_text",
]


def write_text(
    request: Request,
    code: int,
    message: str,
    headers: dict[bytes, bytes] | None = None,
) -> None:
    """
    The one way to answer with a short text/plain body: ``message`` and a
    newline, with ``code`` and ``headers``.  Does nothing if the client has
    gone.
    """
    if request.finished or request.channel is None:
        return
    body = message.encode() + b"\n"
    request.setResponseCode(code)
    for key, value in (headers or {}).items():
        request.setHeader(key, value)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()


def state_headers(request: Request, state: ResourceState) -> None:
    """The ``Httpfstream-*`` headers that say ``state``."""
    for key, value in state.headers().items():
        request.setHeader(header_bytes(key), value.encode())


def peer(request: Request) -> str:
    """The client, as WebSocket sessions name theirs (``tcp4:HOST:PORT``)."""
    address = request.getClientAddress()
    if isinstance(address, IPv4Address | IPv6Address):
        family = "tcp4" if isinstance(address, IPv4Address) else "tcp6"
        return f"{family}:{address.host}:{address.port}"
    return str(address)


def arg(request: Request, key: bytes) -> bytes | None:
    """The first value of the query parameter ``key``, if given."""
    values = request.args.get(key) if request.args else None
    return values[0] if values else None


def int_arg(request: Request, key: bytes) -> int | None:
    """The query parameter ``key`` as an integer, or a 400 refusal."""
    raw = arg(request, key)
    if raw is None:
        return None
    if not re.fullmatch(rb"-?[0-9]{1,19}", raw):
        raise Refusal(400, f"{key.decode()} must be an integer")
    return int(raw)


def start_offset(offset: int | None, state: ResourceState) -> int:
    """
    Where a follow starts: ``offset``, counted from the end if negative, or
    a 416 refusal past the end of the resource in ``state``.
    """
    size = state.size or 0
    if offset is None:
        return 0
    if offset < 0:
        return max(0, size + offset)
    if offset > size:
        raise Refusal(
            416,
            f"offset {offset} is past the end of the resource ({size} bytes)",
            {b"Content-Range": b"bytes */%d" % size},
            state,
        )
    return offset


_RANGE = re.compile(rb"bytes=([0-9]*)-([0-9]*)")


def byte_range(header: bytes | None, state: ResourceState) -> tuple[int, int] | None:
    """
    The single range a ``Range`` header asks of the resource in ``state``,
    as ``(start, stop)``; ``None`` to send the whole content (no header, a
    header we do not understand, or several ranges, which RFC 9110 lets a
    server ignore); a 416 refusal for a range past the end.
    """
    size = state.size or 0
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == b"":
        return None
    first, last = match.group(1), match.group(2)
    if first == b"":
        start, stop = max(0, size - int(last)), size
        if int(last) == 0:
            start = size
    else:
        start = int(first)
        stop = size if last == b"" else min(size, int(last) + 1)
        if last != b"" and int(last) < start:
            return None
    if start >= size:
        raise Refusal(
            416,
            f"range not satisfiable: the resource holds {size} bytes",
            {b"Content-Range": b"bytes */%d" % size},
            state,
        )
    return start, stop


def content_type(name: Name) -> bytes:
    """
    Text as UTF-8 plain text, images, audio and video as their type, and
    everything else as bytes: never a type a browser would run (HTML, SVG,
    scripts) for content anybody can append.
    """
    guessed, _ = mimetypes.guess_type(name[-1], strict=False)
    if name[-1].endswith(".log") or (guessed or "").startswith("text/"):
        return b"text/plain; charset=utf-8"
    kind = (guessed or "").split("/")[0]
    if kind in ("image", "audio", "video") and "svg" not in (guessed or ""):
        return (guessed or "").encode()
    return b"application/octet-stream"
