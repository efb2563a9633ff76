"""
The command-line clients, ``httpfstream-append`` and ``httpfstream-follow``.

Both print nothing but errors unless given ``-v``, and exit with a status
that says how things ended (see `EXIT_CODES`, also in the README).
"""

from __future__ import annotations

from ._append import append_main
from ._exits import (
    APPEND_EXIT_CODES,
    EXIT_CODES,
    EXIT_CONFLICT,
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_NO_MATCH,
    EXIT_NOT_FOUND,
    EXIT_OFFSET,
    EXIT_OK,
    EXIT_PAST_END,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    FOLLOW_EXIT_CODES,
)
from ._follow import follow_main
from ._progress import Progress

__all__ = [
    "APPEND_EXIT_CODES",
    "EXIT_CODES",
    "EXIT_CONFLICT",
    "EXIT_DENIED",
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_NO_MATCH",
    "EXIT_OFFSET",
    "EXIT_OK",
    "EXIT_PAST_END",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "FOLLOW_EXIT_CODES",
    "Progress",
    "append_main",
    "follow_main",
]
