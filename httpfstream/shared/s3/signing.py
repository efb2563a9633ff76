"""
Credentials and SigV4 signatures, by botocore, without blocking the
reactor.

botocore's credential chain (environment, shared files, SSO, web identity,
container and instance metadata) gives either fixed credentials or
*refreshable* ones (instance roles, SSO, assumed roles): reading those calls
the provider again when they are near expiry, over the network, under a
lock. So a signature takes a frozen copy of the credentials: at once in
the reactor while they are fresh, else from a thread (one refresh at a
time, every request waiting on it) from 20 minutes before they expire,
before botocore's own windows (15 minutes advisory, 10 mandatory) open;
so a refresh never happens in the reactor.

The payload is signed: each body's SHA-256 is computed before it is sent
(from the file, in a thread) and goes in ``x-amz-content-sha256``; see
docs/ARCHITECTURE.md ("Object storage") for why not ``UNSIGNED-PAYLOAD``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

__all__ = ["EMPTY_SHA256", "Signer"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: Credentials with less than this left (seconds) are refreshed in a
#: thread: more than botocore's advisory (15 min) and mandatory (10 min)
#: windows, so its own refresh never runs in the reactor.
REFRESH_AHEAD = 20 * 60


class _PrecomputedPayload(S3SigV4Auth):  # type: ignore[misc]
    """S3's SigV4 with the body's SHA-256 given, never read by botocore."""

    def __init__(self, credentials: Any, region: str, payload_sha256: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_sha256 = payload_sha256

    def payload(self, request: Any) -> str:
        return self._payload_sha256


class Signer:
    """
    Signs requests with the current credentials.

    :param credentials: botocore's credentials object (from
        `config.resolve_endpoint`).
    :param in_thread: runs a blocking callable in a thread, returning a
        Deferred (the client's pool).
    """

    def __init__(
        self,
        credentials: Any,
        in_thread: Callable[[Callable[[], Any]], Deferred[Any]],
    ) -> None:
        self._credentials = credentials
        self._in_thread = in_thread
        self._refreshing: Deferred[Any] | None = None
        self._waiting: list[Deferred[Any]] = []

    def frozen(self) -> Deferred[Any]:
        """
        Fires with botocore's ``ReadOnlyCredentials``: at once when they
        are fixed or fresh, else after a refresh in a thread (one at a
        time, however many ask meanwhile).
        """
        credentials = self._credentials
        if not hasattr(credentials, "refresh_needed") or not (
            credentials.refresh_needed(REFRESH_AHEAD)
        ):
            return succeed(credentials.get_frozen_credentials())
        waiting: Deferred[Any] = Deferred()
        self._waiting.append(waiting)
        if self._refreshing is None:
            # botocore refreshes inside, if its own windows say so.
            self._refreshing = self._in_thread(credentials.get_frozen_credentials)
            self._refreshing.addBoth(self._refreshed)
        return waiting

    def _refreshed(self, result: Any) -> None:
        self._refreshing = None
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    @staticmethod
    def sign(
        credentials: Any,
        region: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        payload_sha256: str,
    ) -> dict[str, str]:
        """
        The headers to send: ``headers`` plus ``Host``, ``X-Amz-Date``,
        ``X-Amz-Content-SHA256``, the session token if any, and
        ``Authorization``. Cheap and local (HMACs): fine in the reactor.
        """
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        _PrecomputedPayload(credentials, region, payload_sha256).add_auth(request)
        return dict(request.headers.items())
