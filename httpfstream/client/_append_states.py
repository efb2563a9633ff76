"""
The states of an `Appender` (`State`), the sets of them its methods test,
and the error a session ends with (`ending_error`).

An `Appender` is in one of these states:

``CONNECTING``
    the opening handshake is under way (``Client.open_append`` hands the
    appender out only once it is ``OPEN``).
``OPEN``
    connected: ``write`` sends at once.
``RESUMING``
    the connection dropped (1006) or the server went away (1001), and
    ``retry`` is on: reconnecting with backoff; ``write`` only keeps bytes
    to send again once reconnected.
``CLOSING``
    ``close`` was called while connected: our Close (1000) is sent, and the
    server answers it once every byte is persisted.
``CLOSING_RESUMING``
    as ``RESUMING``, but ``close`` has been called: once reconnected, the
    unacknowledged bytes are sent again and then the Close.
``INTERRUPTING``
    ``interrupt`` was called while connected: our Close (1001,
    "interrupted") is sent; the server persists every byte, records the
    resource as not complete, gives its followers 4000, and answers.
``ENDED``
    the session ended before ``close`` was called (the server closed it,
    the connection was lost, or resuming gave up); always with an error.
``CLOSED``
    ``close`` (or ``interrupt``) was called and the session has ended:
    with the final size, or the error that ended it.

Transitions (an event not listed leaves the state as it is)::

    state              event                                  next state
    -----------------  -------------------------------------  ----------------
    CONNECTING         handshake accepted (101)               OPEN
    CONNECTING         handshake refused or failed            ENDED
    OPEN               close()                                CLOSING
    OPEN               interrupt()                            INTERRUPTING
    OPEN               closed 1001/1006, retry                RESUMING
    OPEN               closed otherwise                       ENDED
    RESUMING           close()                                CLOSING_RESUMING
    RESUMING           interrupt()                            CLOSED
    RESUMING           reconnected                            OPEN
    RESUMING           412, the bytes past the ack are ours   RESUMING (again
                                                              at once)
    RESUMING           gave up (deadline, 412, not retryable) ENDED
    CLOSING            closed 1000                            CLOSED
    CLOSING            closed 1001/1006, retry                CLOSING_RESUMING
    CLOSING            closed otherwise                       CLOSED
    CLOSING_RESUMING   reconnected (bytes again, then Close)  CLOSING
    CLOSING_RESUMING   interrupt()                            CLOSED
    CLOSING_RESUMING   412, the bytes past the ack are ours   CLOSING_RESUMING
    CLOSING_RESUMING   gave up (deadline, 412, not retryable) CLOSED
    INTERRUPTING       closed                                 CLOSED
    ENDED              close() or interrupt()                 CLOSED

"Closed 1000" in ``CLOSING`` ends with the final size if the server
acknowledged every byte written, else with `AppendFailed`; "closed
otherwise" ends with `AppendFailed` for 1001, 1009 and 1011, and with
`ConnectionLost` for any other code.  ``INTERRUPTING`` ends with the final
size if every byte was acknowledged, else with that error; ``interrupt()``
while resuming ends at once with `ConnectionLost` (what was not
acknowledged may not be persisted).

What each method does in each state:

- ``write``: sends in ``OPEN``; keeps the bytes in ``RESUMING``; raises the
  error that ended the session in ``ENDED``; raises `RuntimeError` in
  ``CONNECTING`` and once ``close`` or ``interrupt`` was called.  It never
  raises Autobahn's ``Disconnected``: in ``OPEN`` while the connection is
  closing (the server's Close has arrived, its end not yet), the bytes are
  kept with ``retry`` (and sent once resumed) and refused without it, with
  `AppendFailed` or `ConnectionLost`.
- ``close``: as in the table; in ``CONNECTING`` it raises `RuntimeError`;
  in ``CLOSING``, ``CLOSING_RESUMING``, ``INTERRUPTING`` and ``CLOSED`` it
  only waits.
- ``interrupt``: as in the table; in ``CONNECTING`` it raises
  `RuntimeError`; in ``CLOSING`` (a clean close already asked for),
  ``INTERRUPTING`` and ``CLOSED`` it only waits.
- ``drained``: fails with the error in ``ENDED`` or a failed ``CLOSED``;
  otherwise fires once the appender is not `Appender.full`.
- A registered producer is paused whenever the appender is full or not
  connected (any state but ``OPEN`` and ``CLOSING``).
"""

from __future__ import annotations

import enum

from ..protocol import GOING_AWAY, TOO_BIG, WRITE_FAILED
from ._errors import AppendFailed, ConnectionLost


class State(enum.Enum):
    """Where an `Appender` is in its session (the module docstring)."""

    CONNECTING = "connecting"
    OPEN = "open"
    RESUMING = "resuming"
    CLOSING = "closing"
    CLOSING_RESUMING = "closing, resuming"
    INTERRUPTING = "interrupting"
    ENDED = "ended"
    CLOSED = "closed"


#: States with a connection to the server.
CONNECTED = frozenset({State.OPEN, State.CLOSING, State.INTERRUPTING})
#: States in which a registered producer may produce.
PRODUCING = frozenset({State.OPEN, State.CLOSING})
#: States without a connection, reconnecting.
RESUMING = frozenset({State.RESUMING, State.CLOSING_RESUMING})
#: States after ``close()`` or ``interrupt()`` was called.
CLOSE_CALLED = frozenset(
    {State.CLOSING, State.CLOSING_RESUMING, State.INTERRUPTING, State.CLOSED}
)
#: States in which the session has ended.
DONE = frozenset({State.ENDED, State.CLOSED})
#: Close codes with which the server ends an appender's session itself.
_SERVER_ENDINGS = frozenset({TOO_BIG, WRITE_FAILED, GOING_AWAY})
#: The reason our Close gives when `Appender.interrupt` ends the session.
INTERRUPTED = b"interrupted"


def ending_error(code: int | None, reason: str | None) -> ConnectionLost:
    """
    The error for a session the server ended with ``code`` (`AppendFailed`)
    or that ended otherwise (`ConnectionLost`).
    """
    if code in _SERVER_ENDINGS:
        return AppendFailed(code, reason)
    return ConnectionLost(code, reason)
