"""
What an S3 call fails with: four kinds the server can act on, each keeping
the S3 error code, its message and the request ID for the logs.

- `S3NotFound`: the object (or upload) is not there; a bucket that does
  not exist is a configuration error instead (`S3Error`).
- `S3Unavailable`: no answer, or an answer meaning "not now": the endpoint
  refused the connection or could not be reached, a timeout, a connection
  lost mid-transfer, a 5xx, throttling (``SlowDown``, 429), S3's own
  ``RequestTimeout``. Worth another try later (``retryable``).
- `S3Denied`: 403: the credentials are wrong, expired or not allowed.
- `S3Error`: anything else (a bad request, a missing bucket, a TLS
  certificate that is not trusted, an answer that makes no sense).
"""

from __future__ import annotations

from xml.etree import ElementTree

from twisted.internet import error as net
from twisted.internet.defer import TimeoutError
from twisted.python.failure import Failure
from twisted.web import client as web

__all__ = [
    "S3Denied",
    "S3Error",
    "S3NotFound",
    "S3Unavailable",
    "Stalled",
    "error_from_answer",
    "error_from_failure",
    "strip_namespace",
]


class S3Error(Exception):
    """
    An S3 call that failed.

    :ivar operation: S3's name for the call (``PutObject``, ``UploadPart``).
    :ivar key: the object's key, or None for the bucket.
    :ivar status: the HTTP status, or None when no answer came.
    :ivar code: S3's error code (``NoSuchKey``, ``AccessDenied``), or None.
    :ivar message: S3's message, or what went wrong on the way.
    :ivar request_id: S3's ``x-amz-request-id``, for the provider's support.
    """

    retryable = False

    def __init__(
        self,
        operation: str,
        key: str | None,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(operation, key, message, status, code)
        self.operation = operation
        self.key = key
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        what = f"{self.operation} {self.key}" if self.key else self.operation
        said = " ".join(str(p) for p in (self.status, self.code) if p is not None)
        tail = f" (request {self.request_id})" if self.request_id else ""
        return f"{what}: {said + ': ' if said else ''}{self.message}{tail}"


class S3NotFound(S3Error):
    """The object or the multipart upload does not exist."""


class S3Unavailable(S3Error):
    """Unreachable, timed out, cut off, or busy: try again later."""

    retryable = True


class S3Denied(S3Error):
    """The credentials were refused (403)."""


class Stalled(Exception):
    """No byte of a body came for a while, though the consumer wanted more."""

    def __init__(self, received: int, seconds: float) -> None:
        super().__init__(f"no data for {seconds:g}s after {received} bytes")
        self.received = received


#: S3's codes for "try again", whatever their HTTP status.
_RETRY_CODES = frozenset(
    {
        "RequestTimeout",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
#: Codes of a 404 that say the configuration is wrong, not that a key is absent.
_NOT_AN_ABSENT_OBJECT = frozenset({"NoSuchBucket"})


def strip_namespace(tag: str) -> str:
    """``{http://s3.amazonaws.com/doc/2006-03-01/}Key`` → ``Key``."""
    return tag.rpartition("}")[2]


def _error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Code, message and request ID of an ``<Error>`` body, if it is one."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None, None, None
    if strip_namespace(root.tag) != "Error":
        return None, None, None
    fields = {strip_namespace(child.tag): (child.text or "") for child in root}
    return fields.get("Code"), fields.get("Message"), fields.get("RequestId")


def error_from_answer(
    operation: str,
    key: str | None,
    status: int,
    body: bytes,
    request_id: str | None = None,
) -> S3Error:
    """
    The error an answer says, from its status and its ``<Error>`` body
    (which a HEAD answer has not; S3 also answers some failures of a
    CompleteMultipartUpload with 200 and such a body).
    """
    code, message, body_request_id = _error_fields(body)
    message = message or (body[:200].decode("utf-8", "replace").strip() or "no message")
    kind: type[S3Error] = S3Error
    if code in _RETRY_CODES or status >= 500 or status == 429:
        kind = S3Unavailable
    elif status == 403:
        kind = S3Denied
    elif status == 404 and code not in _NOT_AN_ABSENT_OBJECT:
        kind = S3NotFound
    return kind(
        operation,
        key,
        message,
        status=status,
        code=code,
        request_id=request_id or body_request_id,
    )


#: Failures on the way that mean "no answer": retryable.
_UNREACHABLE = (
    net.ConnectError,  # refused, no route, connect timeout
    net.DNSLookupError,  # an endpoint's name not (yet) in the DNS
    net.ConnectionLost,
    net.ConnectionDone,
    TimeoutError,
    web.ResponseFailed,
    web.RequestTransmissionFailed,
    web.PartialDownloadError,
    Stalled,
)


def _is_tls(reason: Failure) -> bool:
    try:
        from OpenSSL.SSL import Error as TLSError
    except ImportError:  # pragma: no cover - twisted[tls] brings it
        return False
    return reason.check(TLSError) is not None


def error_from_failure(operation: str, key: str | None, failure: Failure) -> S3Error:
    """
    The error for a request that got no (complete) answer; an `S3Error`
    passes through unchanged. (The caller tells its own cancellation and
    timeouts apart first: Twisted reports them in other guises.)
    """
    if isinstance(failure.value, S3Error):
        return failure.value
    reasons = getattr(failure.value, "reasons", None) or []
    if any(_is_tls(r) for r in reasons):
        detail = "; ".join(str(r.value) for r in reasons)
        return S3Error(operation, key, f"TLS failed: {detail}", code="TLSError")
    if failure.check(*_UNREACHABLE):
        detail = str(failure.value) or type(failure.value).__name__
        if reasons:
            detail = "; ".join(str(r.value) or type(r.value).__name__ for r in reasons)
        return S3Unavailable(operation, key, detail)
    return S3Error(operation, key, f"{type(failure.value).__name__}: {failure.value}")
