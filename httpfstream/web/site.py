"""
`make_site`: the one way to put httpfstream on a listening port, used by
the twistd plugin and by embedders alike, so every server gets the same
request-body limit, access log (tokens masked), idle timeout and bound on
how long a request's head may take.

::

    registry = StreamRegistry(root)
    root = Resource()
    root.putChild(b"logs", StreamResource(registry))
    site = make_site(root, registry)

The admin site (``--admin``: metrics and health) is `admin.make_admin_site`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ..core.registry import StreamRegistry
from .auth import mask_token

__all__ = ["body_limited", "make_site", "masked_log_formatter"]

_log = Logger()


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


class _HeadTimedChannel(HTTPChannel):
    """
    An HTTP channel that closes a connection whose request head (request
    line and headers) takes longer than ``head_timeout`` seconds to arrive.
    twisted.web's own timeout restarts on every byte, so a client sending
    one header line every few seconds (slowloris) would be kept forever.
    """

    head_timeout: float = 0
    _head_timer: IDelayedCall | None = None

    def lineReceived(self, line: bytes) -> None:
        # Head lines arrive here; bodies go to rawDataReceived.
        if self._head_timer is None and self.head_timeout:
            self._head_timer = self.callLater(self.head_timeout, self._too_slow)
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:
        self._stop_head_timer()
        super().allHeadersReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_head_timer()
        super().connectionLost(reason)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            if self._head_timer.active():
                self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        peer = self.transport.getPeer() if self.transport else None
        _log.info(
            "closing {peer}: its request head took over {timeout}s",
            peer=str(peer),
            timeout=self.head_timeout,
        )
        self.timeoutConnection()


class _Site(Site):
    protocol = _HeadTimedChannel  # type: ignore[assignment]
    head_timeout: float = 0

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.head_timeout = self.head_timeout
        return channel


def make_site(
    resource: IResource,
    registry: StreamRegistry,
    *,
    idle_timeout: float = 60,
    header_timeout: float = 30,
) -> Site:
    """
    A `Site` serving ``resource`` (a `StreamResource`, or a tree holding
    one) with what every httpfstream server needs:

    - request bodies over the registry's maximum message size refused with
      ``413`` before they are read (`body_limited`);
    - an access log in the combined format, ``access_token`` masked;
    - idle plain-HTTP connections closed after ``idle_timeout`` seconds
      (0: never);
    - a request whose head takes over ``header_timeout`` seconds to arrive
      closed, however slowly it trickles in (0: no limit).

    :param resource: the root of the site.
    :param registry: the registry whose limits apply.
    :param idle_timeout: seconds an idle connection is kept open.
    :param header_timeout: seconds a request's head may take.
    """
    site = _Site(
        resource,
        timeout=idle_timeout or None,
        logFormatter=masked_log_formatter,
    )
    site.head_timeout = header_timeout
    counters = registry.counters

    def refused() -> None:
        counters.refused[413] += 1

    site.requestFactory = body_limited(registry.max_message_size, refused)
    return site


def body_limited(
    max_body_size: int, on_refused: Callable[[], object] = lambda: None
) -> type[Request]:
    """
    A ``Site.requestFactory`` that refuses request bodies over
    ``max_body_size`` bytes (0: no limit) with ``413`` before reading them:
    by ``Content-Length`` at once, a chunked body as soon as it passes the
    limit.  twisted.web otherwise reads every body whole (into a temporary
    file) before any resource sees the request.

    Uses twisted.web's ``gotLength``/``handleContentChunk`` hooks, which it
    documents as "not intended for users" (twisted issues #4688, #5511).
    """

    class BodyLimitedRequest(Request):
        _received = 0
        _refused = False

        def gotLength(self, length: int | None) -> None:
            if max_body_size and length is not None and length > max_body_size:
                self._refuse()
            super().gotLength(0 if self._refused else length)

        def handleContentChunk(self, data: bytes) -> None:
            if self._refused:
                return
            self._received += len(data)
            if max_body_size and self._received > max_body_size:
                self._refuse()
                return
            super().handleContentChunk(data)

        def _refuse(self) -> None:
            self._refused = True
            on_refused()
            body = b"the body is larger than the maximum of %d bytes\n" % max_body_size
            transport = self.channel.transport if self.channel else None
            if transport is None:
                return
            transport.write(
                b"HTTP/1.1 413 Content Too Large\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            )
            transport.loseConnection()

    return BodyLimitedRequest
