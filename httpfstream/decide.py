"""
What a request asks for, decided from its method and headers alone
(PROTOCOL.md section 2): which action serves it and which right it needs,
or the refusal it gets.  No I/O: `StreamResource` checks the token and the
name and then runs the action; this table is unit-tested on its own.

=========  ========  =======  ========  ===============================
method     verb      upgrade  follow=1  action
=========  ========  =======  ========  ===============================
GET        FOLLOW    yes      any       FOLLOW_WS
GET        FOLLOW    no       yes       FOLLOW_HTTP
GET        FOLLOW    no       no        SNAPSHOT
GET        APPEND    yes      any       APPEND_WS
GET        APPEND    no       any       400: needs a WebSocket (or POST)
HEAD       any                          HEAD (the snapshot's headers)
POST       any                          POST (append the body)
GET, HEAD  unknown                      400
other                                   405, with ``Allow``
=========  ========  =======  ========  ===============================

Rights: APPEND_WS and POST need ``append``; everything else ``follow``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .auth import Right
from .protocol import APPEND, VERBS, ResourceState

__all__ = ["ALLOW", "Action", "Decision", "Refusal", "decide"]

#: The methods a resource answers, for ``Allow``.
ALLOW = b"GET, HEAD, POST"


class Action(enum.Enum):
    SNAPSHOT = "snapshot"
    HEAD = "head"
    FOLLOW_HTTP = "follow-http"
    FOLLOW_WS = "follow-ws"
    APPEND_WS = "append-ws"
    POST = "post"


class Refusal(Exception):
    """
    An error response: its status, a one-line message for the body, extra
    headers, and the resource's state if it was known when deciding
    (otherwise the resource looks it up).
    """

    def __init__(
        self,
        code: int,
        message: str,
        headers: dict[bytes, bytes] | None = None,
        state: ResourceState | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.state = state


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


def decide(method: bytes, verb: str, upgrade: bool, follow: bool) -> Decision:
    """
    :param method: the HTTP method.
    :param verb: the verb, upper case (``X-Verb``, else ``verb=``, else
        ``FOLLOW``).
    :param upgrade: whether it asks for a WebSocket upgrade.
    :param follow: whether it has ``follow=1``.
    """
    writes = method == b"POST" or (method == b"GET" and verb == APPEND)
    right = Right.APPEND if writes else Right.FOLLOW
    if method == b"POST":
        return Decision(right, writes, Action.POST)
    if method not in (b"GET", b"HEAD"):
        return Decision(
            right,
            writes,
            refusal=Refusal(
                405,
                f"method {method.decode('latin-1')} is not allowed",
                {b"Allow": ALLOW},
            ),
        )
    if verb not in VERBS:
        return Decision(right, writes, refusal=Refusal(400, f"unknown verb {verb!r}"))
    if method == b"HEAD":
        return Decision(right, writes, Action.HEAD)
    if verb == APPEND:
        if not upgrade:
            return Decision(
                right,
                writes,
                refusal=Refusal(
                    400, "APPEND over GET needs a WebSocket upgrade (or use POST)"
                ),
            )
        return Decision(right, writes, Action.APPEND_WS)
    if upgrade:
        return Decision(right, writes, Action.FOLLOW_WS)
    if follow:
        return Decision(right, writes, Action.FOLLOW_HTTP)
    return Decision(right, writes, Action.SNAPSHOT)
