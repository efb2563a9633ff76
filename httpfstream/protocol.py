"""
The wire vocabulary, shared by the server and the client: header names,
verbs, query parameters and close codes (docs/PROTOCOL.md).

No I/O and no Twisted here: both sides import these names instead of
retyping the strings, so a rename is one edit.  Header names are given as
``str`` (Autobahn's header dictionaries and treq take ``str``); use
`header_bytes` where twisted.web wants bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ACTIVE",
    "APPEND",
    "APPENDER_LOST",
    "COMPLETE",
    "COMPLETE_HEADER",
    "FOLLOW",
    "FOLLOWERS",
    "GOING_AWAY",
    "LEASE_LOST",
    "OFFSET",
    "READ_FAILED",
    "SIZE",
    "TOO_BIG",
    "VERBS",
    "WRITE_FAILED",
    "X_VERB",
    "Param",
    "ResourceState",
    "flag",
    "header_bytes",
]

# -- verbs (section 2) ---------------------------------------------------------

FOLLOW = "FOLLOW"
APPEND = "APPEND"
VERBS = (FOLLOW, APPEND)

# -- headers (section 2) -------------------------------------------------------

#: The request header naming the verb (else the ``verb`` query parameter).
X_VERB = "X-Verb"
#: ``1`` while an appender holds the resource, else ``0``.
ACTIVE = "Httpfstream-Active"
#: The number of persisted bytes.
SIZE = "Httpfstream-Size"
#: The absolute offset a follow's data starts at.
OFFSET = "Httpfstream-Offset"
#: ``1`` when the resource's last append session ended well (section 9).
COMPLETE_HEADER = "Httpfstream-Complete"
#: How many follow it live here now (WebSocket and ``follow=1``).
FOLLOWERS = "Httpfstream-Followers"
#: With ``lines=``: the number of the body's first line (section 13).
LINE = "Httpfstream-Line"


def header_bytes(name: str) -> bytes:
    """A header name as twisted.web's request methods want it."""
    return name.encode("ascii")


# -- query parameters ----------------------------------------------------------


class Param(enum.StrEnum):
    """Query parameters the server reads (never part of a resource name)."""

    VERB = "verb"
    #: APPEND/POST: the size the resource must hold; FOLLOW: where to start.
    OFFSET = "offset"
    #: APPEND: send the persisted size after each batch of writes.
    ACK = "ack"
    #: GET: stream live (chunked) instead of a snapshot.
    FOLLOW = "follow"
    #: FOLLOW over WebSocket: ``text`` for text frames.
    FRAMES = "frames"
    #: The bearer token, for browsers (section 8).
    ACCESS_TOKEN = "access_token"
    #: GET: the bytes, even for a browser (section 12).
    RAW = "raw"
    #: GET of a folder: ``json`` for JSON whatever ``Accept`` says.
    FORMAT = "format"
    #: Reading: start at a line (``N``, ``-N``), or lines ``A-B`` (section 13).
    LINES = "lines"
    #: Reading: each line prefixed with its time (section 13).
    TIMESTAMPS = "timestamps"
    #: GET: the lines that hold this text, as NDJSON (section 14).
    GREP = "grep"
    #: Search: ``1`` for case to matter.
    CASE = "case"
    #: Search: ``1`` for ``grep`` to be an RE2 regular expression.
    REGEX = "regex"
    #: Search: the most matching lines to answer.
    MAX = "max"

    @property
    def key(self) -> bytes:
        """The name as a key of twisted.web's ``request.args``."""
        return self.value.encode("ascii")


#: Values of a boolean query parameter that mean "yes".
_YES = frozenset({"1", "true", "yes"})


def flag(value: str | bytes | None) -> bool:
    """Whether a boolean query parameter's value means "yes"."""
    if value is None:
        return False
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.lower() in _YES


# -- close codes (section 7) ---------------------------------------------------

#: Follower: the appender finished, every byte sent.  Appender: your close
#: was honoured, every byte persisted.
COMPLETE = 1000
#: The server is shutting down.
GOING_AWAY = 1001
#: A message, or the resource, over the configured limit.
TOO_BIG = 1009
#: A write failed on the server.
WRITE_FAILED = 1011
#: Reading the resource failed (a follower).
READ_FAILED = 1011
#: Follower: the appender was lost; you have every persisted byte.
APPENDER_LOST = 4000
#: Appender (shared mode, ``--redis``): the server could not keep its lease
#: on the resource (Redis unreachable, or the lease expired), so it stopped
#: writing; every acknowledged byte is persisted.  Try again later (resume
#: with ``offset=``).  RFC 6455's "Try Again Later".
LEASE_LOST = 1013


# -- the state every response reports (section 2) ------------------------------


@dataclass(frozen=True)
class ResourceState:
    """
    What every response says about a resource.

    :ivar active: whether an appender holds it.
    :ivar size: its persisted size; ``None`` when it has no file.
    :ivar complete: whether its last append session ended well (and none
        holds it now).
    :ivar followers: how many follow it live on this server: followers
        (WebSocket or ``follow=1``) that started while an appender held it
        and have not finished; snapshots and downloads of a finished
        resource are not counted.
    """

    active: bool
    size: int | None
    complete: bool = True
    followers: int = 0

    def headers(self) -> dict[str, str]:
        """
        ``Httpfstream-Active`` and, if there is a file, ``-Size``,
        ``-Complete`` and ``-Followers``.
        """
        headers = {ACTIVE: "1" if self.active else "0"}
        if self.size is not None:
            headers[SIZE] = str(self.size)
            headers[COMPLETE_HEADER] = "1" if self.complete and not self.active else "0"
            headers[FOLLOWERS] = str(self.followers)
        return headers
