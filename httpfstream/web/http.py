"""
The HTTP edges of the web layer: what a request asks, read once
(`Query.of`: its verb, flags, offset, token, headers, peer; `byte_range`,
`start_offset`), and what every response shares (`write_text`, the one way
to answer with a short text body; `refuse`, the one way to answer a
`Refusal`; `state_headers`; `content_type`).  No state, no core calls.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.server import Request

from ..core.derived import Lines
from ..core.names import Name
from ..core.refusal import Refusal
from ..protocol import FOLLOW, X_VERB, Param, ResourceState, flag, header_bytes

__all__ = [
    "Query",
    "byte_range",
    "content_type",
    "refuse",
    "start_offset",
    "state_headers",
    "write_text",
]

_X_VERB = header_bytes(X_VERB)


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


def refuse(request: Request, refusal: Refusal, state: ResourceState | None) -> None:
    """
    Answer with ``refusal``: unless it is about the server rather than the
    resource, with the resource's state (``None``: it has none).
    """
    if refusal.reveal:
        state_headers(request, state or ResourceState(False, None))
    write_text(request, refusal.code, refusal.message, refusal.headers)


def _peer(request: Request) -> str:
    """The client, as WebSocket sessions name theirs (``tcp4:HOST:PORT``)."""
    address = request.getClientAddress()
    if isinstance(address, IPv4Address | IPv6Address):
        family = "tcp4" if isinstance(address, IPv4Address) else "tcp6"
        return f"{family}:{address.host}:{address.port}"
    return str(address)


def _arg(request: Request, key: bytes) -> bytes | None:
    """The first value of the query parameter ``key``, if given."""
    values = request.args.get(key) if request.args else None
    return values[0] if values else None


@dataclass(frozen=True)
class Query:
    """
    What a request asks, beyond its method and path, read once.

    :ivar verb: ``X-Verb`` or ``verb=``, upper-cased (``FOLLOW`` if neither).
    :ivar verb_given: whether either was given.
    :ivar upgrade: whether it asks for a WebSocket.
    :ivar follow: ``follow=1``.
    :ivar raw: ``raw=1``.
    :ivar offset: ``offset=`` as given (see `start`).
    :ivar ack: ``ack=1``.
    :ivar frames: ``frames=``, lower-cased.
    :ivar as_json: ``format=json``.
    :ivar token: the bearer token (``Authorization`` or ``access_token=``).
    :ivar access_token: ``access_token=`` alone (for the viewer's links).
    :ivar lines: ``lines=`` as given (see `lines_asked`).
    :ivar timestamps: ``timestamps=1``.
    :ivar range: the ``Range`` header.
    :ivar accept: the ``Accept`` header.
    :ivar peer: the client, as WebSocket sessions name theirs
        (``tcp4:HOST:PORT``).
    :ivar last_event_id: the ``Last-Event-ID`` header (an event stream
        resuming; see `events.event_start`).
    :ivar grep: ``grep=`` as given (a search, section 14; see `web.search`).
    :ivar case: ``case=1``.
    :ivar regex: ``regex=1``.
    :ivar max: ``max=`` as given.
    """

    verb: str
    verb_given: bool
    upgrade: bool
    follow: bool
    raw: bool
    offset: bytes | None
    ack: bool
    frames: bytes
    as_json: bool
    token: bytes | None
    access_token: bytes | None
    lines: bytes | None
    timestamps: bool
    range: bytes | None
    accept: bytes | None
    peer: str
    last_event_id: bytes | None = None
    grep: bytes | None = None
    case: bool = False
    regex: bool = False
    max: bytes | None = None

    @classmethod
    def of(cls, request: Request) -> Query:
        raw_verb = request.getHeader(_X_VERB) or _arg(request, Param.VERB.key)
        access_token = _arg(request, Param.ACCESS_TOKEN.key)
        authorization = request.getHeader(b"authorization") or b""
        scheme, _, credentials = authorization.strip().partition(b" ")
        bearer = scheme.lower() == b"bearer"
        return cls(
            verb=FOLLOW if raw_verb is None else raw_verb.decode("latin-1").upper(),
            verb_given=raw_verb is not None,
            upgrade=b"websocket" in (request.getHeader(b"upgrade") or b"").lower(),
            follow=flag(_arg(request, Param.FOLLOW.key)),
            raw=flag(_arg(request, Param.RAW.key)),
            offset=_arg(request, Param.OFFSET.key),
            ack=flag(_arg(request, Param.ACK.key)),
            frames=(_arg(request, Param.FRAMES.key) or b"").lower(),
            as_json=(_arg(request, Param.FORMAT.key) or b"").lower() == b"json",
            token=credentials.strip() if bearer else access_token,
            access_token=access_token,
            lines=_arg(request, Param.LINES.key),
            timestamps=flag(_arg(request, Param.TIMESTAMPS.key)),
            range=request.getHeader(b"range"),
            accept=request.getHeader(b"accept"),
            peer=_peer(request),
            last_event_id=request.getHeader(b"last-event-id"),
            grep=_arg(request, Param.GREP.key),
            case=flag(_arg(request, Param.CASE.key)),
            regex=flag(_arg(request, Param.REGEX.key)),
            max=_arg(request, Param.MAX.key),
        )

    @property
    def plain(self) -> bool:
        """Whether it asks for the bytes as they are, nothing more."""
        return not (
            self.offset is not None
            or self.range
            or self.raw
            or self.lines is not None
            or self.timestamps
            or self.grep is not None
        )

    def lines_asked(self, state: ResourceState, snapshot: bool) -> Lines | None:
        """
        ``lines=`` (section 13), if given, or a 400 refusal: malformed, with
        ``offset`` or ``Range``, or a range of lines (``A-B``) on a follow.
        Also refuses ``timestamps=1`` with ``offset`` or ``Range``.
        """
        ranged = self.offset is not None or (snapshot and self.range is not None)
        if self.timestamps and ranged:
            raise Refusal(
                400,
                "timestamps=1 does not combine with offset or Range: the body"
                " is not the resource's bytes (use lines= to start elsewhere)",
                state=state,
            )
        if self.lines is None:
            return None
        if ranged:
            raise Refusal(
                400, "lines= does not combine with offset or Range", state=state
            )
        try:
            lines = Lines.parse(self.lines.decode("latin-1"))
        except ValueError as e:
            raise Refusal(400, str(e), state=state) from None
        if lines.last is not None and not snapshot:
            raise Refusal(
                400,
                "lines=A-B reads a snapshot; a follow starts at lines=N or -N",
                state=state,
            )
        return lines

    def expected_size(self) -> int | None:
        """``offset=`` as an append's precondition, or a 400 refusal."""
        expected = self._offset()
        if expected is not None and expected < 0:
            raise Refusal(400, "offset must not be negative when appending")
        return expected

    def start(self, state: ResourceState) -> int:
        """Where a follow of the resource in ``state`` starts (`start_offset`)."""
        return start_offset(self._offset(state), state)

    def _offset(self, state: ResourceState | None = None) -> int | None:
        if self.offset is None:
            return None
        if not re.fullmatch(rb"-?[0-9]{1,19}", self.offset):
            raise Refusal(400, "offset must be an integer", state=state)
        return int(self.offset)


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
