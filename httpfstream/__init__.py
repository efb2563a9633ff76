"""
httpfstream: one writer appends to a file over a WebSocket while any number
of readers follow it live.

The server side, embedded in any twisted.web tree::

    registry = StreamRegistry("/var/lib/httpfstream")
    registry.setServiceParent(application)
    root.putChild(b"logs", StreamResource(registry))
    site = make_site(root, registry)   # body limit, masked log, timeouts

``StreamResource(registry, tokens, WebSocketOptions(...))`` takes the
WebSocket pings and timeouts.  ``httpfstream.client`` is the
Deferred-returning client API.
"""

from importlib.metadata import PackageNotFoundError, version

from .core.registry import StreamRegistry
from .web.auth import Tokens
from .web.handoff import WebSocketOptions
from .web.resource import StreamResource
from .web.site import body_limited, make_site

try:
    #: The installed distribution's version (``pyproject.toml``'s).
    __version__ = version("httpfstream")
except PackageNotFoundError:  # run from a tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "StreamRegistry",
    "StreamResource",
    "Tokens",
    "WebSocketOptions",
    "__version__",
    "body_limited",
    "make_site",
]
