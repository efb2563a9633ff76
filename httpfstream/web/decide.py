"""
What a request asks for, decided from its method, headers and query alone
(docs/PROTOCOL.md sections 2, 10, 11, 12 and 14): which action serves it and which
right it needs, or the refusal it gets.  No I/O: `StreamResource` checks the
token and the name and then runs the action; this table is unit-tested on
its own.

Resources (a path not ending in ``/``):

=========  ========  =======  ========  ===============================
method     verb      upgrade  follow=1  action
=========  ========  =======  ========  ===============================
GET        FOLLOW    yes      any       FOLLOW_WS (with ``grep``: 400)
GET        FOLLOW    no       any       SEARCH, with ``grep`` (section 14)
GET        FOLLOW    no       any       EVENTS, for an event-stream client
GET        FOLLOW    no       yes       FOLLOW_HTTP
GET        FOLLOW    no       no        SNAPSHOT, or VIEW for a browser
GET        APPEND    yes      any       APPEND_WS
GET        APPEND    no       any       400: needs a WebSocket (or POST)
HEAD       any                          HEAD (the snapshot's headers)
POST       any                          POST (append the body)
DELETE     any                          DELETE
GET, HEAD  unknown                      400
other                                   405, with ``Allow``
=========  ========  =======  ========  ===============================

EVENTS (section 15): a GET whose ``Accept`` names ``text/event-stream``
(with a non-zero ``q``) and does not name ``text/html`` first
(`wants_events`): the follow as server-sent events, whatever ``follow=``
says.

VIEW (section 12): a plain GET (no verb, ``follow``, ``offset``, ``Range``,
``raw=1`` or ``grep``) whose ``Accept`` names ``text/html`` before any other type.

Folders (a path ending in ``/``, or the mount point): GET and HEAD are
LIST (section 10); writes are ``400``; a follow of a folder (WebSocket,
``follow=1`` or an event stream) or a search of one is ``404``.

Rights: APPEND_WS, POST and DELETE need ``append``; everything else
``follow``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..core.refusal import Refusal
from ..protocol import APPEND, VERBS
from .auth import Right

__all__ = [
    "ALLOW",
    "Action",
    "Asked",
    "Decision",
    "decide",
    "prefers_html",
    "wants_events",
]

#: The methods a resource answers, for ``Allow``.
ALLOW = b"GET, HEAD, POST, DELETE"


class Action(enum.Enum):
    SNAPSHOT = "snapshot"
    HEAD = "head"
    FOLLOW_HTTP = "follow-http"
    FOLLOW_WS = "follow-ws"
    APPEND_WS = "append-ws"
    POST = "post"
    DELETE = "delete"
    VIEW = "view"
    LIST = "list"
    EVENTS = "events"
    SEARCH = "search"


@dataclass(frozen=True)
class Asked:
    """
    What a request says, as far as deciding goes.

    :ivar method: the HTTP method.
    :ivar verb: the verb, upper case (``X-Verb``, else ``verb=``, else
        ``FOLLOW``).
    :ivar verb_given: whether the request named a verb at all.
    :ivar upgrade: whether it asks for a WebSocket upgrade.
    :ivar follow: whether it has ``follow=1``.
    :ivar folder: whether its path names a folder.
    :ivar browser: whether its ``Accept`` names ``text/html`` first.
    :ivar plain: no ``offset=``, ``Range``, ``raw=1`` or ``grep=``.
    :ivar events: whether it asks for an event stream (`wants_events`).
    :ivar search: it has ``grep=`` (a search, section 14).
    """

    method: bytes
    verb: str = "FOLLOW"
    verb_given: bool = False
    upgrade: bool = False
    follow: bool = False
    folder: bool = False
    browser: bool = False
    plain: bool = True
    events: bool = False
    search: bool = False


@dataclass(frozen=True)
class Decision:
    """
    :ivar right: what the request's token must grant.
    :ivar writes: whether it would write: an invalid name is then ``400``,
        else ``404``.
    :ivar action: what serves it, unless it is refused.
    :ivar refusal: why it is refused, if it is.
    """

    right: Right
    writes: bool
    action: Action | None = None
    refusal: Refusal | None = field(default=None, compare=False)


def prefers_html(accept: bytes | None) -> bool:
    """Whether an ``Accept`` header names ``text/html`` before any other type."""
    if not accept:
        return False
    first = accept.split(b",", 1)[0].split(b";", 1)[0].strip().lower()
    return first == b"text/html"


def wants_events(accept: bytes | None) -> bool:
    """
    Whether an ``Accept`` header asks for an event stream: it names
    ``text/event-stream`` (not with ``q=0``) and not ``text/html`` first.
    """
    if not accept or prefers_html(accept):
        return False
    for item in accept.split(b","):
        kind, *params = item.split(b";")
        if kind.strip().lower() != b"text/event-stream":
            continue
        for param in params:
            key, _, value = param.partition(b"=")
            if key.strip().lower() == b"q" and _is_zero(value.strip()):
                break
        else:
            return True
    return False


def _is_zero(q: bytes) -> bool:
    """Whether a ``q`` value says "not acceptable" (``0``, ``0.0``...)."""
    return q[:1] == b"0" and not q.strip(b"0.")


def decide(asked: Asked) -> Decision:
    """The action for ``asked`` and the right it needs, or its refusal."""
    method, verb = asked.method, asked.verb
    writes = method in (b"POST", b"DELETE") or (method == b"GET" and verb == APPEND)
    right = Right.APPEND if writes else Right.FOLLOW

    def refuse(code: int, message: str, **headers: bytes) -> Decision:
        extra = {k.encode(): v for k, v in headers.items()}
        return Decision(right, writes, refusal=Refusal(code, message, extra))

    if method not in (b"GET", b"HEAD", b"POST", b"DELETE"):
        return refuse(
            405, f"method {method.decode('latin-1')} is not allowed", Allow=ALLOW
        )
    if method in (b"GET", b"HEAD") and verb not in VERBS:
        return refuse(400, f"unknown verb {verb!r}")
    if asked.folder:
        if writes:
            return refuse(400, "a folder cannot be written; name a resource")
        if asked.upgrade or asked.follow or (asked.events and method == b"GET"):
            return refuse(404, "a folder cannot be followed; name a resource")
        if asked.search:
            return refuse(404, "a folder cannot be searched; name a resource")
        return Decision(right, writes, Action.LIST)
    if method == b"POST":
        return Decision(right, writes, Action.POST)
    if method == b"DELETE":
        return Decision(right, writes, Action.DELETE)
    if method == b"HEAD":
        return Decision(right, writes, Action.HEAD)
    if verb == APPEND:
        if not asked.upgrade:
            return refuse(
                400, "APPEND over GET needs a WebSocket upgrade (or use POST)"
            )
        return Decision(right, writes, Action.APPEND_WS)
    if asked.upgrade:
        if asked.search:
            return refuse(400, "a search (grep=) is a plain GET, not a WebSocket")
        return Decision(right, writes, Action.FOLLOW_WS)
    if asked.search:
        return Decision(right, writes, Action.SEARCH)
    if asked.events:
        return Decision(right, writes, Action.EVENTS)
    if asked.follow:
        return Decision(right, writes, Action.FOLLOW_HTTP)
    if asked.browser and asked.plain and not asked.verb_given:
        return Decision(right, writes, Action.VIEW)
    return Decision(right, writes, Action.SNAPSHOT)
