"""
What the client API raises, and how a follow ends (`FollowResult`).

Refusals carry the HTTP status (`HTTPError` and its kinds); connections that
end without the close code that finishes the call carry the WebSocket close
code (`ConnectionLost`, `AppendFailed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import ACTIVE, SIZE

#: The close code a WebSocket library reports for a connection that ended
#: without a Close frame (never sent on the wire, so not in `..protocol`).
DROPPED = 1006
#: ``Httpfstream-Active`` while an appender holds the resource.
ACTIVE_YES = "1"


class HTTPError(Exception):
    """
    The server answered with a status that refuses the request.

    :ivar status: the HTTP status code.
    :ivar headers: the response headers, lowercase names.
    :ivar size: ``Httpfstream-Size`` from the response, if it had one.
    :ivar active: whether ``Httpfstream-Active`` said an appender held it.
    :ivar reason: the server's reason: the first line of a ``text/plain``
        body (httpfstream's refusals are one line), else ``""``.  Also for
        a refused WebSocket handshake, as far as the body came with the
        response's head (`._websocket` waits for a short one).
    """

    def __init__(
        self, status: int, message: str, headers: dict[str, str], reason: str = ""
    ) -> None:
        text = f"{status} {message}".strip()
        super().__init__(f"{text}: {reason}" if reason else text)
        self.status = status
        self.headers = headers
        self.reason = reason
        size = headers.get(SIZE.lower())
        self.size: int | None = int(size) if size and size.isdigit() else None
        self.active = headers.get(ACTIVE.lower()) == ACTIVE_YES


class AccessDenied(HTTPError):
    """401 (no valid token) or 403 (the token does not grant this)."""


class NotFound(HTTPError):
    """404: the resource was never written (or its name is not valid)."""


class AppenderConflict(HTTPError):
    """409: another appender holds the resource."""


class OffsetMismatch(HTTPError):
    """
    412: the resource does not hold the ``offset`` bytes asked for.

    :ivar why: when a resuming appender gave up on it, the reason (the
        bytes it holds are not the ones the appender sent, say).
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str],
        why: str = "",
        reason: str = "",
    ) -> None:
        super().__init__(
            status, f"{message}: {why}" if why else message, headers, reason
        )
        self.why = why


class ConnectionLost(Exception):
    """
    The connection ended without the close code that finishes the call.

    :ivar code: the WebSocket close code (1006: dropped without a Close).
    """

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed ({code}): {reason or 'no reason'}")
        self.code = code


class AppendFailed(ConnectionLost):
    """The server closed the appender: 1009 (over a limit), 1011 (write failed)."""


_KINDS: dict[int, type[HTTPError]] = {
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    409: AppenderConflict,
    412: OffsetMismatch,
}


#: How much of a refusal's body is read for its reason.
REASON_LIMIT = 4096


def reason_of(headers: dict[str, str], body: bytes) -> str:
    """
    The server's reason in a refusal's body: its first line, if the body
    is ``text/plain`` (as httpfstream's are), else ``""``.

    :param headers: the response headers, lowercase names.
    :param body: the body, or as much of it as arrived.
    """
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "text/plain":
        return ""
    line = body[:REASON_LIMIT].split(b"\n", 1)[0].strip()
    return line.decode("utf-8", "replace")


def http_error(
    status: int, message: str, headers: dict[str, str], body: bytes = b""
) -> HTTPError:
    """
    The `HTTPError` of the right kind for a refusal.

    :param status: the HTTP status code.
    :param message: the reason phrase.
    :param headers: the response headers, lowercase names.
    :param body: the response body (or its beginning), for `HTTPError.reason`.
    """
    kind = _KINDS.get(status, HTTPError)
    return kind(status, message, headers, reason=reason_of(headers, body))


@dataclass(frozen=True)
class FollowResult:
    """
    How a follow ended.

    :ivar complete: ``True`` if the appender finished cleanly (close 1000)
        or the resource was already finished and complete
        (``Httpfstream-Complete: 1``, or no such header from an older
        server); ``False`` if the appender was lost or interrupted (close
        4000) or the resource was found finished but incomplete
        (``Httpfstream-Complete: 0``), and, with ``retry``, no new
        appender finished it within ``give_up_after``.
    :ivar code: the close code: 1000 (also for a complete resource served
        whole) or 4000 (also for an incomplete one served whole).
    :ivar offset: the offset after the last byte received.
    :ivar reason: the close reason the server gave, or why the resource is
        not complete.
    """

    complete: bool
    code: int
    offset: int
    reason: str = ""


class SearchUnsupported(Exception):
    """
    The server's answer to a search is not one: not NDJSON (a server that
    does not search, PROTOCOL.md section 14, sends the bytes instead), or
    an object in it that is not JSON.
    """


class WrongTransport(ConnectionLost):
    """
    The connection failed for a reason that trying again will not mend: the
    URL's scheme does not match what the server speaks, or its certificate
    is not trusted.  Never retried.

    :ivar message: what was found, without the hint.
    :ivar hint: what to change, in words.
    """

    hint = ""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, f"{message} ({self.hint})" if self.hint else message)
        self.code = DROPPED
        self.message = message


class NotTLS(WrongTransport):
    """An ``https://`` URL, but the server answers in plain HTTP."""

    hint = "use http:// for a plain-HTTP port"


class TLSExpected(WrongTransport):
    """An ``http://`` URL, but the server speaks TLS."""

    hint = "use https:// for a TLS port"


class UntrustedCertificate(WrongTransport):
    """
    The server's certificate is not trusted (no trusted authority signed
    it), or is not for the host the URL names (``wrong_host``).
    """

    hint = "trust_root= the authority that signed it, and the host it names"

    def __init__(self, message: str, wrong_host: bool = False) -> None:
        super().__init__(message)
        self.wrong_host = wrong_host
