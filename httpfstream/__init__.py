"""
httpfstream: one writer appends to a file over a WebSocket while any number
of readers follow it live.

The server side is two classes::

    registry = StreamRegistry("/var/lib/httpfstream")
    root.putChild(b"logs", StreamResource(registry))
    site = Site(root)
    site.requestFactory = body_limited(registry.max_message_size)  # optional

and ``httpfstream.client`` is the Deferred-returning client API.
"""

from .registry import StreamRegistry
from .resource import StreamResource, body_limited

__all__ = ["StreamRegistry", "StreamResource", "body_limited"]
