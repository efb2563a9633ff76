"""
Turning a resource's ``http://`` or ``https://`` URL into the places the
calls go: the same URL with the call's query parameters for HTTP, and its
``ws://`` or ``wss://`` twin for WebSockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..protocol import Param

#: The value of a boolean query parameter (``ack``, ``follow``) meaning "yes".
YES = "1"
#: The value of `Param.FRAMES` asking for text frames.
TEXT_FRAMES = "text"


@dataclass(frozen=True)
class Target:
    """
    Where one call goes.

    :ivar http_url: the ``http://`` or ``https://`` URL, with the query.
    :ivar ws_url: the same as ``ws://`` or ``wss://``.
    :ivar host: the host name (or address) to connect to.
    :ivar port: the port, from the URL or the scheme's default.
    :ivar secure: whether the connection uses TLS.
    """

    http_url: str
    ws_url: str
    host: str
    port: int
    secure: bool


def target(url: str, params: Mapping[Param, object] | None = None) -> Target:
    """
    ``url`` as the places a call goes.

    :param url: an ``http://`` or ``https://`` URL.
    :param params: query parameters replacing those of the same names in
        ``url``; a ``None`` value removes one.
    :raises ValueError: ``url`` is neither ``http://`` nor ``https://``.
    """
    params = params or {}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    secure = parts.scheme == "https"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in params
    ]
    query += [(k.value, str(v)) for k, v in params.items() if v is not None]
    qs = urlencode(query)
    http_url = urlunsplit((parts.scheme, parts.netloc, parts.path, qs, ""))
    ws_url = urlunsplit(("wss" if secure else "ws", parts.netloc, parts.path, qs, ""))
    host = parts.hostname or "localhost"
    return Target(http_url, ws_url, host, parts.port or (443 if secure else 80), secure)
