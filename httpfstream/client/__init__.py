"""
The client API: every call returns a Deferred (use ``await`` inside
``Deferred.fromCoroutine`` or ``react``).

::

    size = await client.append("http://host:8080/logs/build.log", b"hello\\n")
    data = await client.read("http://host:8080/logs/build.log")
    result = await client.follow(url, sys.stdout.buffer.write, retry=True)
    appender = await client.open_append(url)
    appender.write(b"more\\n")
    size = await appender.close()

URLs are ``http://`` or ``https://`` (the WebSocket calls use ``ws://`` or
``wss://`` to the same place).  Errors are exceptions to catch by kind:
`NotFound`, `AppenderConflict`, `OffsetMismatch`, or `HTTPError` with the
status for the rest; `AppendFailed` when the server ends an appender with a
close code other than 1000.
"""

from ._append import Appender, append, open_append
from ._client import read
from ._errors import (
    AccessDenied,
    AppenderConflict,
    AppendFailed,
    ConnectionLost,
    FollowResult,
    HTTPError,
    NotFound,
    OffsetMismatch,
)
from ._follow import follow

__all__ = [
    "AccessDenied",
    "AppendFailed",
    "Appender",
    "AppenderConflict",
    "ConnectionLost",
    "FollowResult",
    "HTTPError",
    "NotFound",
    "OffsetMismatch",
    "append",
    "follow",
    "open_append",
    "read",
]
