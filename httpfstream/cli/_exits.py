"""
How the command-line clients end: their exit statuses (`EXIT_CODES`, one
table for each tool), and the status and message for an error from the
client API (`explain`).
"""

from __future__ import annotations

from twisted.internet import error as net_error
from twisted.internet.defer import FirstError

from .. import client
from ..protocol import GOING_AWAY

EXIT_OK = 0
EXIT_ERROR = 1  # anything else: an unexpected status, a refused write...
EXIT_USAGE = 2  # bad arguments (argparse)
EXIT_NOT_FOUND = 3  # 404
EXIT_CONFLICT = 4  # 409: another appender holds the resource
EXIT_OFFSET = 5  # 412: the resource does not hold --offset bytes (--new: 0)
EXIT_INCOMPLETE = 6  # not all there: the appender was lost or interrupted
# (and no new one finished the resource), or our connection was lost
EXIT_UNREACHABLE = 7  # could not connect to the server (or not as the URL says)
EXIT_DENIED = 8  # 401 or 403: no valid token, or not one for this
EXIT_PAST_END = 9  # 416: --offset (or --lines) is past the end of the resource
EXIT_NO_MATCH = 10  # --grep: the whole resource was searched, no line matched
EXIT_INTERRUPTED = 130  # Ctrl-C

#: What each status means from ``httpfstream-append``; only these.
APPEND_EXIT_CODES = {
    EXIT_OK: "done: every byte read was persisted and the session ended"
    " cleanly (the resource is complete)",
    EXIT_ERROR: "another error (the message says which): the server refused"
    " (with its reason) or closed the appender (1009: too big, 1011: a write"
    " failed), or reading standard input failed",
    EXIT_USAGE: "bad arguments",
    EXIT_CONFLICT: "409: another appender holds the resource",
    EXIT_OFFSET: "412: the resource does not hold --offset bytes (with --new: it"
    " is not empty), or a resuming appender found bytes there that are not its"
    " own",
    EXIT_INCOMPLETE: "the server went away or the connection was lost (the"
    " resource is incomplete)",
    EXIT_UNREACHABLE: "the server could not be reached (within --retry-for with"
    " --retry), or not as the URL says: https:// to a plain-HTTP port, http:// to"
    " a TLS port, a certificate not trusted (--cafile)",
    EXIT_DENIED: "401/403: no valid token (--token), or not one for this",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM): what was sent is persisted,"
    " the resource is incomplete",
}

#: What each status means from ``httpfstream-follow``; only these.
FOLLOW_EXIT_CODES = {
    EXIT_OK: "done: the appender finished cleanly (or had), every byte received"
    " (with --grep: every line searched, and a line matched)",
    EXIT_ERROR: "another error (the message says which, with the server's reason)",
    EXIT_USAGE: "bad arguments, also those the server refuses in a search (400:"
    " an invalid --regex, with the server's reason)",
    EXIT_NOT_FOUND: "404: no such resource (--wait waits for it)",
    EXIT_INCOMPLETE: "incomplete: the appender was lost or interrupted and no new"
    " one finished the resource (within --retry-for), or the connection was lost",
    EXIT_UNREACHABLE: APPEND_EXIT_CODES[EXIT_UNREACHABLE],
    EXIT_DENIED: APPEND_EXIT_CODES[EXIT_DENIED],
    EXIT_PAST_END: "416: --offset or --lines is past the end of the resource",
    EXIT_NO_MATCH: "--grep: no line matched (every line was searched, the resource"
    " is complete)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM)",
}

#: Every status either tool may return.
EXIT_CODES = {**APPEND_EXIT_CODES, **FOLLOW_EXIT_CODES}


class Exit(Exception):
    """Raised by a tool's main to end with ``status``, saying ``message``."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def explain(e: BaseException) -> Exit:
    """The exit status and message for an error from the client API."""
    while isinstance(e, FirstError) and e.subFailure.value is not None:
        e = e.subFailure.value  # from a DeferredList: what failed
    if isinstance(e, Exit):
        return e
    if isinstance(e, client.HTTPError):
        return _refused(e)
    if isinstance(e, client.NotTLS):
        return Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: use http:// for this port",
        )
    if isinstance(e, client.TLSExpected):
        return Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: use https:// for this port",
        )
    if isinstance(e, client.UntrustedCertificate) and e.wrong_host:
        return Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: name a host the certificate is for in the URL",
        )
    if isinstance(e, client.UntrustedCertificate):
        return Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: give --cafile the PEM file of the authority that signed it",
        )
    if isinstance(e, client.SearchUnsupported):
        return Exit(EXIT_ERROR, str(e))
    if isinstance(e, client.AppendFailed) and e.code == GOING_AWAY:
        return Exit(EXIT_INCOMPLETE, f"the server went away: {e}")
    if isinstance(e, client.AppendFailed):
        return Exit(EXIT_ERROR, f"the server ended the append: {e}")
    if isinstance(e, client.ConnectionLost):
        return Exit(EXIT_INCOMPLETE, f"connection lost: {e}")
    if isinstance(e, net_error.ConnectError | net_error.DNSLookupError):
        return Exit(EXIT_UNREACHABLE, f"cannot reach the server: {e}")
    if isinstance(e, ValueError):
        return Exit(EXIT_USAGE, str(e))
    return Exit(EXIT_ERROR, f"{type(e).__name__}: {e}")


def _refused(e: client.HTTPError) -> Exit:
    """A refusal: its status, and the server's reason when it gave one."""
    said = f": {e.reason}" if e.reason else ""
    if isinstance(e, client.AccessDenied):
        return Exit(
            EXIT_DENIED,
            f"access denied ({e.status}){said}; give a --token that allows it",
        )
    if isinstance(e, client.NotFound):
        return Exit(EXIT_NOT_FOUND, _once("no such resource", 404, e.reason))
    if isinstance(e, client.AppenderConflict):
        return Exit(
            EXIT_CONFLICT, _once("another appender holds the resource", 409, e.reason)
        )
    if isinstance(e, client.OffsetMismatch):
        if e.why:
            return Exit(EXIT_OFFSET, f"cannot resume (412): {e.why}")
        if e.reason:
            return Exit(EXIT_OFFSET, f"offset does not match the resource (412){said}")
        size = "" if e.size is None else f": it holds {e.size} bytes"
        return Exit(EXIT_OFFSET, f"offset does not match the resource (412){size}")
    if e.status == 416:
        return Exit(EXIT_PAST_END, f"--offset is past the end (416){said}")
    return Exit(EXIT_ERROR, f"the server refused: {e}")


#: Words left out when telling whether the server's reason says what we do.
_FILLER = {"a", "an", "the", "this"}


def _once(ours: str, status: int, reason: str) -> str:
    """
    ``ours (status)``, and the server's ``reason`` after it only when it
    says something else (``another appender holds this resource`` is what
    ``another appender holds the resource`` says).
    """

    def words(text: str) -> list[str]:
        return [w for w in text.lower().rstrip(".").split() if w not in _FILLER]

    if not reason or words(reason) == words(ours):
        return f"{ours} ({status})"
    return f"{ours} ({status}): {reason}"
