"""
`StreamResource`: the twisted.web resource that serves every resource name
below its mount point.

A request goes through five steps:

1. `http.Query.of`: its query and headers, read once;
2. `decide.decide`: from the method, headers and query alone, the action
   and the right it needs (or a refusal);
3. with tokens configured, the token check (section 8: 401/403, nothing
   else revealed);
4. the name (section 1);
5. the action, which calls the registry (the core's one facade) and makes
   every decision that can refuse the request (404, 409, 412, 416,
   503...) before it answers, so refusals are plain HTTP responses
   carrying the ``Httpfstream-*`` headers; only then are accepted
   WebSocket handshakes handed to Autobahn (`handoff.Handoff`).

Everything that turns a request down is a `core.refusal.Refusal`, answered
and counted in `_serve` alone.

If the client goes away while an action waits (for a file to open, say),
the action is cancelled, and the registry gives back what it was opening.

Every byte sent to a reader, WebSocket or HTTP, snapshot or live, goes
through a `core.cursor.Cursor`; snapshots are cursors with a fixed end, so they
never send more than the persisted size they announced (unlike
``static.File`` on a growing file).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..core.names import InvalidName, Name, names_folder, parse_folder, parse_name
from ..core.records import Kind
from ..core.refusal import RETRY_SOON, Refusal
from ..core.registry import StreamRegistry
from ..core.session import AppendSession
from ..core.stream import WriteFailed
from ..protocol import (
    COMPLETE,
    LINE,
    OFFSET,
    ResourceState,
    header_bytes,
)
from . import reads, search, viewer, wsdeflate
from .appender import AppenderProtocol, Appending
from .auth import Access, Right, Tokens, mask_token
from .decide import Action, Asked, decide, prefers_html, wants_events
from .events import KEEPALIVE, event_start, start_events
from .followers import FollowerProtocol, Following, ResponseSink
from .handoff import Handoff, WebSocketOptions
from .http import (
    Query,
    refuse,
    state_headers,
    write_text,
)

__all__ = ["StreamResource"]

_log = Logger()

_OFFSET = header_bytes(OFFSET)
_LINE = header_bytes(LINE)

#: What serves one kind of request, once decided.
_Action = Callable[[Request, Query, Name], Awaitable[None]]


class StreamResource(Resource):
    """
    Serves the resources of a `StreamRegistry` below wherever it is put in
    a twisted.web tree: ``root.putChild(b"logs", StreamResource(registry))``
    serves ``/logs/build.log`` from ``build.log`` under the registry's root.

    :param registry: the running registry that owns the streams.
    :param tokens: if given, every request needs a token granting its verb
        on its name (docs/PROTOCOL.md section 8); otherwise all are allowed.
    :param websocket: pings and timeouts for WebSocket connections.
    :param event_keepalive: seconds of silence after which an event stream
        gets a comment line (section 15; 0: never).
    """

    isLeaf = True

    def __init__(
        self,
        registry: StreamRegistry,
        tokens: Tokens | None = None,
        websocket: WebSocketOptions | None = None,
        event_keepalive: float = KEEPALIVE,
    ) -> None:
        super().__init__()
        # mimetypes reads the system's tables on its first guess: at start,
        # not in a request that may come when descriptors have run out (it
        # answered 500 then, not 503).  Once per process.
        if not mimetypes.inited:
            mimetypes.init()
        self._registry = registry
        self._tokens = tokens
        self._options = options = websocket or WebSocketOptions()
        self._event_keepalive = event_keepalive
        self._appenders = Handoff(
            AppenderProtocol,
            registry.reactor,
            options,
            # The original clients send arbitrary bytes as text.
            utf8validateIncoming=False,
            maxMessagePayloadSize=registry.max_message_size,
            maxFramePayloadSize=registry.max_message_size,
            # Section 16; Autobahn checks the inflated size against the limit.
            perMessageCompressionAccept=wsdeflate.accept,
        )
        # Followers have nothing to say; bound what they can make us hold.
        # Autobahn applies the same limit to what we send them.
        follower_limit = max(64 << 10, registry.read_size)
        self._followers = Handoff(
            FollowerProtocol,
            registry.reactor,
            options,
            maxMessagePayloadSize=follower_limit,
            maxFramePayloadSize=follower_limit,
            perMessageCompressionAccept=wsdeflate.accept,
        )
        self._actions: dict[Action, _Action] = {
            Action.SNAPSHOT: self._snapshot,
            Action.HEAD: self._head,
            Action.FOLLOW_HTTP: self._follow_http,
            Action.FOLLOW_WS: self._follow_ws,
            Action.APPEND_WS: self._append,
            Action.POST: self._post,
            Action.DELETE: self._delete,
            Action.VIEW: self._view,
            Action.LIST: self._list,
            Action.EVENTS: self._events,
            Action.SEARCH: self._search,
        }

    def render(self, request: Request) -> bytes | int:
        d = Deferred.fromCoroutine(self._serve(request))
        # The client went away: stop waiting for whatever the action waits
        # for (the registry gives back what it was opening).
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addErrback(self._crashed, request)
        return NOT_DONE_YET

    def _crashed(self, reason: Failure, request: Request) -> None:
        if reason.check(CancelledError):
            return
        _log.failure("serving {uri}", reason, uri=mask_token(request.uri))
        if not request.startedWriting:
            write_text(request, 500, "internal server error")
        elif not request.finished and request.channel is not None:
            request.finish()

    async def _serve(self, request: Request) -> None:
        query = Query.of(request)
        segments = request.postpath or []
        folder = names_folder(segments)
        decision = decide(
            Asked(
                method=request.method,
                verb=query.verb,
                verb_given=query.verb_given,
                upgrade=query.upgrade,
                follow=query.follow,
                folder=folder,
                browser=prefers_html(query.accept),
                plain=query.plain,
                events=wants_events(query.accept),
                search=query.grep is not None,
            )
        )
        parsed: Name | None = None
        invalid: InvalidName | None = None
        try:
            parsed = parse_folder(segments) if folder else parse_name(segments)
        except InvalidName as e:
            invalid = e
        try:
            if self._tokens is not None:
                _check_token(query.token, self._tokens, decision.right, parsed)
            if decision.refusal is not None:
                raise decision.refusal
            if parsed is None:
                raise Refusal(400 if decision.writes else 404, str(invalid))
            assert decision.action is not None
            await self._actions[decision.action](request, query, parsed)
        except Refusal as refusal:
            # Every refusal is answered (and counted) here.
            self._registry.counters.refused[refusal.code] += 1
            state = refusal.state
            if state is None and refusal.reveal and parsed is not None and not folder:
                state = await self._describe(parsed)
            refuse(request, refusal, state)

    async def _describe(self, name: Name) -> ResourceState | None:
        """The resource's true state, for a refusal that did not carry it."""
        try:
            return await self._registry.describe(name)
        except CancelledError:
            raise  # the client went away: nobody to answer
        except Exception:
            _log.failure("describing {name}", name="/".join(name))
            return None

    # -- reading ------------------------------------------------------------

    async def _head(self, request: Request, query: Query, name: Name) -> None:
        """HEAD: the snapshot's headers."""
        stream = await self._registry.open(name)
        try:
            await reads.snapshot_headers(self._registry, request, query, name, stream)
            request.write(b"")
            request.finish()
        finally:
            stream.release()

    async def _snapshot(self, request: Request, query: Query, name: Name) -> None:
        """A plain GET: the persisted bytes now, with Range or lines."""
        stream = await self._registry.open(name, reader="readers")
        try:
            start, stop, gzipped = await reads.snapshot_headers(
                self._registry, request, query, name, stream
            )
            record = self._registry.record(Kind.SNAPSHOT, name, query.peer, start)
            sink = ResponseSink(request, record)
            out = reads.body_sink(self._registry, query, sink, stream, start, gzipped)
            sink.start(stream.snapshot(out, start, stop))
        finally:
            stream.release()

    async def _follow_http(self, request: Request, query: Query, name: Name) -> None:
        """``follow=1``: a chunked response that streams live."""
        stream = await self._registry.open(name, reader="followers")
        try:
            await reads.stream_body(
                self._registry, request, query, name, stream, encode=True
            )
        finally:
            stream.release()

    async def _follow_ws(self, request: Request, query: Query, name: Name) -> None:
        """A WebSocket FOLLOW: 101 while an appender holds it, else 200."""
        stream = await self._registry.open(name, reader="followers")
        handed = False
        try:
            if not stream.active:
                # Nothing to follow live: the content, over plain HTTP.
                await reads.stream_body(self._registry, request, query, name, stream)
                return
            start, line = await reads.follow_start(self._registry, query, stream)
            frames = query.frames
            text = frames == b"text" or (not frames and self._options.text_frames)
            headers = stream.state.headers()
            headers[OFFSET] = str(start)
            if line is not None:
                headers[LINE] = str(line)
            record = self._registry.record(Kind.FOLLOW_WS, name, query.peer, start)
            # Text is for the original Go follower: messages it reads whole.
            size = self._options.text_frame_size if text else 0
            following = Following(stream, start, text, record, size, query.timestamps)
            handed = self._followers.upgrade(request, following, headers)
            if not handed:
                record.end("cut", "the client went away before the upgrade")
        finally:
            if not handed:
                stream.release()

    async def _events(self, request: Request, query: Query, name: Name) -> None:
        """An event stream (section 15): a follow as server-sent events."""
        stream = await self._registry.open(name, reader="followers")
        try:
            if (query.last_event_id or b"").strip():
                # An EventSource reconnecting: where it was, whatever else
                # the URL it reconnects to says.
                start, line = event_start(query, stream.state), None
            else:
                start, line = await reads.follow_start(self._registry, query, stream)
            if line is not None:
                request.setHeader(_LINE, b"%d" % line)
            record = self._registry.record(Kind.FOLLOW_EVENTS, name, query.peer, start)
            start_events(
                request, stream, record, self._registry.reactor, self._event_keepalive
            )
        finally:
            stream.release()

    async def _search(self, request: Request, query: Query, name: Name) -> None:
        """``grep=``: the matching lines as NDJSON (`search.serve`)."""
        await search.serve(self._registry, request, query, name)

    async def _view(self, request: Request, query: Query, name: Name) -> None:
        """
        A browser opening a resource: the page that follows it.  One not
        written yet gets the same page with a 404 (section 12): it waits.
        """
        try:
            stream = await self._registry.open(name)
        except Refusal as refusal:
            if refusal.code != 404:
                raise
            self._registry.counters.refused[404] += 1
            state_headers(request, refusal.state or ResourceState(False, None))
            request.setResponseCode(404)
            viewer.send_page(request, viewer.resource_page(name, query.access_token))
            return
        try:
            state = stream.state
        finally:
            stream.release()
        state_headers(request, state)
        page = viewer.resource_page(name, query.access_token)
        viewer.send_page(request, page)

    async def _list(self, request: Request, query: Query, folder: Name) -> None:
        """A folder: JSON for programs, an index page for browsers."""
        listing = await self._registry.listing(folder)
        entries = [
            viewer.Listed(
                entry,
                self._registry.active((*folder, entry.name)),
                self._registry.followers((*folder, entry.name)),
            )
            for entry in listing.resources
        ]
        if prefers_html(query.accept) and not query.as_json:
            page = viewer.listing_page(
                folder, entries, listing.folders, self._registry.reactor.seconds()
            )
            viewer.send_page(request, page)
            return
        body = viewer.listing_json(entries, listing.folders)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(b"Vary", b"Accept")
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(b"" if request.method == b"HEAD" else body)
        request.finish()

    # -- writing ------------------------------------------------------------

    async def _begin(
        self, query: Query, name: Name, kind: Kind, reserve: int = 0
    ) -> AppendSession:
        return await self._registry.begin_append(
            name, query.expected_size(), kind=kind, peer=query.peer, reserve=reserve
        )

    async def _append(self, request: Request, query: Query, name: Name) -> None:
        """A WebSocket APPEND: take the slot, then upgrade."""
        session = await self._begin(query, name, Kind.APPEND)
        if session.shut_down:
            # The server began stopping meanwhile.
            session.end(None, "server shutting down")
            raise Refusal(503, "server shutting down", RETRY_SOON, reveal=False)
        headers = session.stream.state.headers()
        appending = Appending(session, query.ack, self._options.fin_ends_appender)
        if not self._appenders.upgrade(request, appending, headers):
            session.end(None, "the client went away before the upgrade")

    async def _delete(self, request: Request, query: Query, name: Name) -> None:
        """DELETE: remove a resource nobody appends to."""
        await self._registry.delete(name)
        state_headers(request, ResourceState(False, None))
        request.setResponseCode(204)
        request.finish()

    async def _post(self, request: Request, query: Query, name: Name) -> None:
        """A POST: append the whole body as one piece."""
        content = request.content
        assert content is not None
        content.seek(0, 2)
        length = content.tell()
        limit = self._registry.max_message_size
        if limit and length > limit:
            raise Refusal(
                413, f"the body is larger than the maximum message size ({limit} bytes)"
            )
        most = self._registry.max_resource_size
        if most and length > most:
            # Refused before anything exists: no file, no state changed.
            raise Refusal(
                413, f"the body is larger than the maximum resource size ({most} bytes)"
            )
        content.seek(0)
        body = content.read()
        session = await self._begin(query, name, Kind.POST, reserve=length)
        try:
            session.append(body)
            await session.flush()
        except CancelledError:
            # The client went away: what it sent is persisted, the slot
            # given back, and nobody is answered.
            session.end(None, "the client went away")
            raise
        except WriteFailed as e:
            if e.no_space:
                await session.end(507, f"no space left: {e}")
                raise Refusal(
                    507,
                    "no space left on the server for this body; the resource"
                    f" keeps the {session.stream.size} bytes it had",
                    state=session.stream.state,
                ) from None
            await session.end(500, "write failed")
            raise Refusal(
                500, f"write failed: {e}", state=session.stream.state
            ) from None
        size = await session.end(COMPLETE, outcome=200)
        if request.finished or request.channel is None:
            return
        state = ResourceState(
            self._registry.active(name),
            size,
            session.stream.complete,
            session.stream.state.followers,
        )
        state_headers(request, state)
        request.setHeader(b"Content-Length", b"0")
        request.write(b"")
        request.finish()


def _check_token(
    token: bytes | None, tokens: Tokens, right: Right, name: Name | None
) -> None:
    """
    Refuse the request (401 or 403, saying nothing of the resource) unless
    ``token`` grants ``right`` on ``name`` (``None``: not a valid name).
    """
    access = tokens.check(token, right, name)
    if access is Access.ALLOWED:
        return
    if access is Access.UNAUTHORIZED:
        challenge = b'Bearer realm="httpfstream"'
        if token:
            challenge += b', error="invalid_token"'
        raise Refusal(
            401,
            "a valid token is needed (Authorization: Bearer TOKEN)",
            {b"WWW-Authenticate": challenge},
            reveal=False,
        )
    raise Refusal(403, f"this token does not allow {right.value} here", reveal=False)
