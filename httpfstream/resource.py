"""
`StreamResource`: the twisted.web resource that serves every resource name
below its mount point.

With tokens configured it first checks the request's token (section 8:
401/403, nothing else revealed).  It then dispatches on method, verb and
upgrade (PROTOCOL.md section 2), makes
every decision that can refuse a request itself, so refusals are plain HTTP
responses carrying the ``Httpfstream-*`` headers, and only then hands
accepted WebSocket handshakes to Autobahn (`websocket.Handoff`).

Every byte sent to a reader, WebSocket or HTTP, snapshot or live, goes
through a `stream.Cursor`; snapshots are cursors with a fixed end, so they
never send more than the persisted size they announced (unlike
``static.File`` on a growing file, STACK_NOTES.md 8.5).
"""

from __future__ import annotations

import errno
import mimetypes
import re

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .auth import Access, Right, Tokens, mask_token
from .names import InvalidName, Name, parse_name
from .registry import AppenderConflict, ShuttingDown, StreamRegistry
from .store import NotAResource, NotFound, SizeMismatch
from .stream import (
    APPENDER_LOST,
    COMPLETE,
    Cursor,
    IFollowerSink,
    ResourceFull,
    Stream,
)
from .websocket import AppenderRelay, Handoff

__all__ = ["StreamResource"]

_log = Logger()

_VERBS = ("FOLLOW", "APPEND")
_ALLOW = b"GET, HEAD, POST"


class _Refusal(Exception):
    """An error response: status, a message for the body, extra headers."""

    def __init__(
        self, code: int, message: str, headers: dict[bytes, bytes] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


def _busy(error: OSError) -> Exception:
    """503 for running out of file descriptors; anything else stays an error."""
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return _Refusal(
            503, "the server is out of file descriptors", {b"Retry-After": b"5"}
        )
    return error


def _arg(request: Request, key: bytes) -> bytes | None:
    values = request.args.get(key) if request.args else None
    return values[0] if values else None


def _int_arg(request: Request, key: bytes) -> int | None:
    raw = _arg(request, key)
    if raw is None:
        return None
    if not re.fullmatch(rb"-?[0-9]{1,19}", raw):
        raise _Refusal(400, f"{key.decode()} must be an integer")
    return int(raw)


def _flag(request: Request, key: bytes) -> bool:
    return (_arg(request, key) or b"").lower() in (b"1", b"true", b"yes")


def _start_offset(offset: int | None, size: int) -> int:
    """Where a follow starts: ``offset``, counted from the end if negative."""
    if offset is None:
        return 0
    if offset < 0:
        return max(0, size + offset)
    if offset > size:
        raise _Refusal(
            416,
            f"offset {offset} is past the end of the resource ({size} bytes)",
            {b"Content-Range": b"bytes */%d" % size},
        )
    return offset


_RANGE = re.compile(rb"bytes=([0-9]*)-([0-9]*)")


def _byte_range(header: bytes | None, size: int) -> tuple[int, int] | None:
    """
    The single range a ``Range`` header asks for, as ``(start, stop)``;
    ``None`` to send the whole content (no header, a header we do not
    understand, or several ranges, which RFC 9110 lets a server ignore).
    """
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
        raise _Refusal(
            416,
            f"range not satisfiable: the resource holds {size} bytes",
            {b"Content-Range": b"bytes */%d" % size},
        )
    return start, stop


def _content_type(name: Name) -> bytes:
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


@implementer(IFollowerSink)
class _ResponseSink:
    """Sends a cursor's bytes as an HTTP response body."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._cursor: Cursor | None = None
        self._gone = False
        request.notifyFinish().addErrback(self._lost)

    def start(self, cursor: Cursor) -> None:
        """Send ``cursor``'s bytes as the transport takes them."""
        self._cursor = cursor
        self._request.registerProducer(cursor, True)
        cursor.wake()

    def _lost(self, reason: Failure) -> None:
        self._gone = True
        if self._cursor is not None:
            self._cursor.stop()

    def send(self, data: bytes) -> None:
        self._request.write(data)

    def finish(self, code: int, reason: str) -> None:
        if not self._gone:
            self._request.unregisterProducer()
            self._request.finish()


class StreamResource(Resource):
    """
    Serves the resources of a `StreamRegistry` below wherever it is put in
    a twisted.web tree: ``root.putChild(b"logs", StreamResource(registry))``
    serves ``/logs/build.log`` from ``build.log`` under the registry's root.

    :param registry: the running registry that owns the streams.
    :param tokens: if given, every request needs a token granting its verb
        on its name (PROTOCOL.md section 8); otherwise all are allowed.
    """

    isLeaf = True

    def __init__(self, registry: StreamRegistry, tokens: Tokens | None = None) -> None:
        super().__init__()
        self._registry = registry
        self._tokens = tokens
        self._handoff = Handoff(
            registry.reactor,
            max_message_size=registry.max_message_size,
            read_size=registry.read_size,
            ping_interval=registry.ping_interval,
            ping_timeout=registry.ping_timeout,
            handshake_timeout=registry.handshake_timeout,
        )

    def render(self, request: Request) -> bytes | int:
        d = Deferred.fromCoroutine(self._serve(request))
        d.addErrback(self._crashed, request)
        return NOT_DONE_YET

    def _crashed(self, reason: Failure, request: Request) -> None:
        _log.failure("serving {uri}", reason, uri=mask_token(request.uri))
        if not request.finished and not request.startedWriting:
            request.setResponseCode(500)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.write(b"internal server error\n")
        if not request.finished and request.channel is not None:
            request.finish()

    async def _serve(self, request: Request) -> None:
        # Read the verb and the name once: the token check needs both
        # before anything else is decided.
        method = request.method
        raw_verb = request.getHeader(b"x-verb") or _arg(request, b"verb")
        verb = "FOLLOW" if raw_verb is None else raw_verb.decode("latin-1").upper()
        parsed: Name | None = None
        invalid: InvalidName | None = None
        try:
            parsed = parse_name(request.postpath or [])
        except InvalidName as e:
            invalid = e
        if self._tokens is not None:
            # HEAD is a snapshot whatever its verb: `follow` covers it.
            appending = method == b"POST" or (method == b"GET" and verb == "APPEND")
            right = Right.APPEND if appending else Right.FOLLOW
            if not self._allowed(request, self._tokens, right, parsed):
                return
        # Set once the checks below pass, for the refusals' state headers.
        name: Name | None = None
        try:
            if method not in (b"GET", b"HEAD", b"POST"):
                raise _Refusal(
                    405,
                    f"method {method.decode('latin-1')} is not allowed",
                    {b"Allow": _ALLOW},
                )
            writing = method == b"POST"
            if not writing:
                if verb not in _VERBS:
                    raise _Refusal(400, f"unknown verb {verb!r}")
                writing = verb == "APPEND" and method == b"GET"
            if parsed is None:
                raise _Refusal(400 if writing else 404, str(invalid))
            name = parsed
            if not self._registry.running:
                raise ShuttingDown()
            upgrade = b"websocket" in (request.getHeader(b"upgrade") or b"").lower()
            if method == b"POST":
                await self._post(request, parsed)
            elif method == b"HEAD":
                await self._snapshot(request, parsed, head=True)
            elif verb == "APPEND":
                if not upgrade:
                    raise _Refusal(
                        400, "APPEND over GET needs a WebSocket upgrade (or use POST)"
                    )
                await self._append(request, parsed)
            elif upgrade or _flag(request, b"follow"):
                await self._follow(request, parsed, websocket=upgrade)
            else:
                await self._snapshot(request, parsed, head=False)
        except _Refusal as refusal:
            await self._refuse(request, name, refusal)
        except ShuttingDown:
            await self._refuse(
                request,
                None,
                _Refusal(503, "server shutting down", {b"Retry-After": b"5"}),
            )

    # -- access control -----------------------------------------------------

    @staticmethod
    def _allowed(
        request: Request, tokens: Tokens, right: Right, name: Name | None
    ) -> bool:
        """
        Whether the request's token grants ``right`` on ``name`` (``None``:
        not a valid name); if not, refuse it with 401 or 403 and no
        ``Httpfstream-*`` headers, so a refused client learns nothing about
        the resource.
        """
        token: bytes | None = None
        authorization = request.getHeader(b"authorization") or b""
        scheme, _, credentials = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            token = credentials.strip()
        else:
            token = _arg(request, b"access_token")
        access = tokens.check(token, right, name)
        if access is Access.ALLOWED:
            return True
        if access is Access.UNAUTHORIZED:
            request.setResponseCode(401)
            challenge = b'Bearer realm="httpfstream"'
            if token:
                challenge += b', error="invalid_token"'
            request.setHeader(b"WWW-Authenticate", challenge)
            body = b"a valid token is needed (Authorization: Bearer TOKEN)\n"
        else:
            request.setResponseCode(403)
            body = b"this token does not allow %s here\n" % right.value.encode()
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()
        return False

    # -- refusals -----------------------------------------------------------

    async def _refuse(
        self, request: Request, name: Name | None, refusal: _Refusal
    ) -> None:
        active, size = False, None
        if name is not None:
            try:
                active, size = await self._registry.describe(name)
            except Exception:
                _log.failure("describing {name}", name="/".join(name))
        if request.finished or request.channel is None:
            return
        request.setResponseCode(refusal.code)
        self._state_headers(request, active, size)
        for key, value in refusal.headers.items():
            request.setHeader(key, value)
        body = refusal.message.encode() + b"\n"
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()

    @staticmethod
    def _state_headers(request: Request, active: bool, size: int | None) -> None:
        request.setHeader(b"Httpfstream-Active", b"1" if active else b"0")
        if size is not None:
            request.setHeader(b"Httpfstream-Size", b"%d" % size)

    # -- reading ------------------------------------------------------------

    async def _open(self, name: Name) -> Stream:
        try:
            return await self._registry.open(name)
        except (NotFound, NotAResource):
            raise _Refusal(404, "no such resource") from None
        except OSError as e:
            raise _busy(e) from None

    async def _snapshot(self, request: Request, name: Name, head: bool) -> None:
        """A plain GET or HEAD: the persisted bytes now, with Range."""
        stream = await self._open(name)
        try:
            if not head and not self._registry.room_for_follower(stream):
                raise _Refusal(
                    503, "too many readers; try again later", {b"Retry-After": b"5"}
                )
            size = stream.size
            byte_range = _byte_range(request.getHeader(b"range"), size)
            start, stop = byte_range or (0, size)
            self._state_headers(request, stream.active, size)
            if byte_range is not None:
                request.setResponseCode(206)
                request.setHeader(
                    b"Content-Range", b"bytes %d-%d/%d" % (start, stop - 1, size)
                )
            request.setHeader(b"Accept-Ranges", b"bytes")
            request.setHeader(b"Content-Type", _content_type(name))
            request.setHeader(b"Content-Length", b"%d" % (stop - start))
            if stream.active:
                request.setHeader(b"Cache-Control", b"no-store")
            if head or start == stop:
                request.write(b"")
                request.finish()
            else:
                sink = _ResponseSink(request)
                sink.start(stream.snapshot(sink, start, stop))
        finally:
            stream.release()

    async def _follow(self, request: Request, name: Name, websocket: bool) -> None:
        """A follow: WebSocket, or a chunked ``follow=1`` response."""
        offset = _int_arg(request, b"offset")
        text = (_arg(request, b"frames") or b"").lower() == b"text"
        stream = await self._open(name)
        handed = False
        try:
            if not self._registry.room_for_follower(stream):
                raise _Refusal(
                    503, "too many followers; try again later", {b"Retry-After": b"5"}
                )
            start = _start_offset(offset, stream.size)
            if websocket and stream.active:
                headers = {
                    "Httpfstream-Active": "1",
                    "Httpfstream-Size": str(stream.size),
                    "Httpfstream-Offset": str(start),
                }
                handed = True
                self._handoff.follower(request, stream, headers, start, text)
                return
            self._state_headers(request, stream.active, stream.size)
            request.setHeader(b"Httpfstream-Offset", b"%d" % start)
            request.setHeader(b"Content-Type", _content_type(name))
            request.setHeader(b"Cache-Control", b"no-store")
            if not stream.active:
                request.setHeader(b"Content-Length", b"%d" % (stream.size - start))
            # Send the headers now: a live follow may wait long for a byte.
            request.write(b"")
            sink = _ResponseSink(request)
            sink.start(stream.follow(sink, start))
        finally:
            if not handed:
                stream.release()

    # -- writing ------------------------------------------------------------

    async def _acquire(
        self, name: Name, relay: AppenderRelay, expected: int | None
    ) -> Stream:
        try:
            return await self._registry.acquire(name, relay, expected)
        except AppenderConflict:
            raise _Refusal(409, "another appender holds this resource") from None
        except SizeMismatch as e:
            raise _Refusal(
                412,
                f"offset {expected} does not match the resource's size"
                f" ({e.size or 0} bytes)",
            ) from None
        except NotAResource as e:
            raise _Refusal(400, f"cannot append here: {e}") from None
        except OSError as e:
            raise _busy(e) from None

    async def _append(self, request: Request, name: Name) -> None:
        """A WebSocket APPEND: take the slot, then upgrade."""
        expected = _int_arg(request, b"offset")
        if expected is not None and expected < 0:
            raise _Refusal(400, "offset must not be negative when appending")
        ack = _flag(request, b"ack")
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        relay = AppenderRelay()
        stream = await self._acquire(name, relay, expected)
        if gone or relay.shut_down:
            # The client left (or the server began stopping) meanwhile.
            stream.end_session(APPENDER_LOST, "appender lost")
            if relay.shut_down and not gone:
                raise ShuttingDown()
            return
        headers = {"Httpfstream-Active": "1", "Httpfstream-Size": str(stream.size)}
        self._handoff.appender(request, stream, relay, headers, ack)

    async def _post(self, request: Request, name: Name) -> None:
        """A POST: append the whole body as one piece."""
        expected = _int_arg(request, b"offset")
        if expected is not None and expected < 0:
            raise _Refusal(400, "offset must not be negative when appending")
        content = request.content
        assert content is not None
        content.seek(0, 2)
        length = content.tell()
        limit = self._registry.max_message_size
        if limit and length > limit:
            raise _Refusal(
                413, f"the body is larger than the maximum message size ({limit} bytes)"
            )
        content.seek(0)
        body = content.read()
        relay = AppenderRelay()
        stream = await self._acquire(name, relay, expected)
        try:
            stream.append(body)
            size = await stream.flush()
        except ResourceFull as e:
            await stream.end_session(APPENDER_LOST, str(e))
            raise _Refusal(413, str(e)) from None
        except Exception as e:
            await stream.end_session(APPENDER_LOST, "write failed")
            raise _Refusal(500, f"write failed: {e}") from None
        size = await stream.end_session(COMPLETE)
        if request.finished or request.channel is None:
            return
        self._state_headers(request, self._registry.active(name), size)
        request.setHeader(b"Content-Length", b"0")
        request.write(b"")
        request.finish()


def body_limited(max_body_size: int) -> type[Request]:
    """
    A ``Site.requestFactory`` that refuses request bodies over
    ``max_body_size`` bytes (0: no limit) with ``413`` before reading them:
    by ``Content-Length`` at once, a chunked body as soon as it passes the
    limit.  twisted.web otherwise reads every body whole (into a temporary
    file) before any resource sees the request (STACK_NOTES.md 7.3).

    Uses twisted.web's ``gotLength``/``handleContentChunk`` hooks, which it
    documents as "not intended for users" (twisted issues #4688, #5511).
    """

    class BodyLimitedRequest(Request):
        _received = 0
        _refused = False

        def gotLength(self, length: int | None) -> None:
            if max_body_size and length is not None and length > max_body_size:
                self._refuse()
            super().gotLength(0 if self._refused else length)

        def handleContentChunk(self, data: bytes) -> None:
            if self._refused:
                return
            self._received += len(data)
            if max_body_size and self._received > max_body_size:
                self._refuse()
                return
            super().handleContentChunk(data)

        def _refuse(self) -> None:
            self._refused = True
            body = b"the body is larger than the maximum of %d bytes\n" % max_body_size
            transport = self.channel.transport if self.channel else None
            if transport is None:
                return
            transport.write(
                b"HTTP/1.1 413 Content Too Large\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )
            transport.loseConnection()

    return BodyLimitedRequest
