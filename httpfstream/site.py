"""
`make_site`: the one way to put httpfstream on a listening port, used by
the twistd plugin and by embedders alike, so every server gets the same
request-body limit, access log (tokens masked) and idle timeout.

::

    registry = StreamRegistry(root)
    root = Resource()
    root.putChild(b"logs", StreamResource(registry))
    site = make_site(root, registry)

A second listener (an admin site) would be built here beside it.
"""

from __future__ import annotations

from typing import Any

from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Site

from .auth import mask_token
from .registry import StreamRegistry
from .resource import body_limited

__all__ = ["make_site", "masked_log_formatter"]


class _MaskedRequest:
    """A request as the access log sees it: its token parameter hidden."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = mask_token(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def masked_log_formatter(timestamp: str, request: Any) -> str:
    """The combined log format, never showing an ``access_token``."""
    line: str = combinedLogFormatter(timestamp, _MaskedRequest(request))
    return line


def make_site(
    resource: IResource, registry: StreamRegistry, *, idle_timeout: float = 60
) -> Site:
    """
    A `Site` serving ``resource`` (a `StreamResource`, or a tree holding
    one) with what every httpfstream server needs:

    - request bodies over the registry's maximum message size refused with
      ``413`` before they are read (`body_limited`);
    - an access log in the combined format, ``access_token`` masked;
    - idle plain-HTTP connections closed after ``idle_timeout`` seconds
      (0: never).

    :param resource: the root of the site.
    :param registry: the registry whose limits apply.
    :param idle_timeout: seconds an idle connection is kept open.
    """
    site = Site(
        resource,
        timeout=idle_timeout or None,
        logFormatter=masked_log_formatter,
    )
    site.requestFactory = body_limited(registry.max_message_size)
    return site
