"""
The client API: every call returns a Deferred (use ``await`` inside
``Deferred.fromCoroutine`` or ``react``).

A `Client` holds what the calls share (the reactor, a bearer token, TLS
settings, a timeout, and one pooled HTTP Agent); make one and reuse it::

    hfs = client.Client(token=TOKEN, trust_root="ca.pem")
    size = await hfs.append("https://host:8443/logs/build.log", b"hello\\n")
    data = await hfs.read("https://host:8443/logs/build.log")
    result = await hfs.follow(url, sys.stdout.buffer.write, retry=True)
    result = await hfs.follow(url, write, lines=-20, timestamps=True)
    found = await hfs.grep(url, "error", lambda m: print(m.line, m.text))
    appender = await hfs.open_append(url)
    appender.write(b"more\\n")
    size = await appender.close()
    await hfs.close()

The module-level `read`, `follow`, `grep`, `open_append` and `append` are
shortcuts that make a `Client` for one call from their ``reactor``,
``tls``, ``token`` and ``timeout`` keywords::

    data = await client.read("http://host:8080/logs/build.log")

URLs are ``http://`` or ``https://`` (the WebSocket calls use ``ws://`` or
``wss://`` to the same place).  Errors are exceptions to catch by kind:
`NotFound`, `AppenderConflict`, `OffsetMismatch`, `AccessDenied`, or
`HTTPError` with the status for the rest (``reason``: the server's own
words); `AppendFailed` when the server ends an appender with a close code
other than 1000; `ConnectionLost` when a connection ends otherwise, or its
kinds `WrongTransport` for a mistake that retrying will not mend: `NotTLS`
(``https://`` to a plain-HTTP port), `TLSExpected` (``http://`` to a TLS
port), `UntrustedCertificate` (``trust_root`` missing or wrong);
`SearchUnsupported` when a server answers a search with something else
than one.
"""

from ._append import Appender
from ._client import Client, append, follow, grep, open_append, read
from ._errors import (
    AccessDenied,
    AppenderConflict,
    AppendFailed,
    ConnectionLost,
    FollowResult,
    HTTPError,
    NotFound,
    NotTLS,
    OffsetMismatch,
    SearchUnsupported,
    TLSExpected,
    UntrustedCertificate,
    WrongTransport,
)
from ._grep import Match, SearchResult

__all__ = [
    "AccessDenied",
    "AppendFailed",
    "Appender",
    "AppenderConflict",
    "Client",
    "ConnectionLost",
    "FollowResult",
    "HTTPError",
    "Match",
    "NotFound",
    "NotTLS",
    "OffsetMismatch",
    "SearchResult",
    "SearchUnsupported",
    "TLSExpected",
    "UntrustedCertificate",
    "WrongTransport",
    "append",
    "follow",
    "grep",
    "open_append",
    "read",
]
