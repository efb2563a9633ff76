"""
What S3 says and is told, as values: objects (`ObjectInfo`), listing
pages, open uploads, user metadata (``x-amz-meta-*``, checked so that it
comes back exactly as given), and the XML documents of the calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_plus
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from .errors import strip_namespace

__all__ = [
    "METADATA_LIMIT",
    "ListPage",
    "ObjectInfo",
    "Upload",
    "check_metadata",
    "complete_body",
    "listing",
    "metadata_of",
    "open_uploads",
    "upload_id",
]

#: What S3 keeps of an object's user metadata, names and values together.
METADATA_LIMIT = 2048
_META = "x-amz-meta-"
_META_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_META_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


@dataclass(frozen=True)
class ObjectInfo:
    """
    One object as HEAD or a listing describes it (a listing says no
    metadata and no content type).

    :ivar last_modified: as S3 wrote it (an HTTP date from HEAD, ISO 8601
        in a listing).
    """

    key: str
    size: int
    etag: str
    last_modified: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of a listing; ``next_token`` None on the last."""

    objects: list[ObjectInfo]
    next_token: str | None


@dataclass(frozen=True)
class Upload:
    """A multipart upload S3 holds open (begun, neither completed nor aborted)."""

    key: str
    upload_id: str
    initiated: str


def check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """
    The ``x-amz-meta-*`` headers for ``metadata``; `ValueError` for what
    would not come back exactly: names other than lower-case letters,
    digits, ``-`` and ``_``; values other than printable ASCII without
    spaces at either end; more than S3's 2 KiB in all.
    """
    headers: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not _META_NAME.fullmatch(name):
            raise ValueError(f"metadata name {name!r}: lower-case a-z, 0-9, - and _")
        if value and not _META_VALUE.fullmatch(value):
            raise ValueError(f"metadata {name}={value!r}: printable ASCII, unpadded")
        total += len(name) + len(value)
        headers[_META + name] = value
    if total > METADATA_LIMIT:
        raise ValueError(f"metadata of {total} bytes: S3 keeps {METADATA_LIMIT}")
    return headers


def metadata_of(headers: Iterable[tuple[bytes, list[bytes]]]) -> dict[str, str]:
    """The user metadata among an answer's raw headers."""
    found = {}
    for name, values in headers:
        lower = name.decode("latin-1").lower()
        if lower.startswith(_META):
            found[lower[len(_META) :]] = values[0].decode("latin-1")
    return found


def _text(element: ElementTree.Element, name: str) -> str:
    for child in element:
        if strip_namespace(child.tag) == name:
            return child.text or ""
    return ""


def _children(element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
    return [c for c in element if strip_namespace(c.tag) == name]


def upload_id(body: bytes) -> str:
    """The ``UploadId`` a CreateMultipartUpload answered ("" if none)."""
    return _text(ElementTree.fromstring(body), "UploadId")


def complete_body(etags: list[str]) -> bytes:
    """The CompleteMultipartUpload document: parts 1.. with their ETags."""
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>"
        for n, etag in enumerate(etags, start=1)
    )
    return (
        '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{parts}</CompleteMultipartUpload>"
    ).encode()


def completed(body: bytes) -> str | None:
    """
    The ETag of a CompleteMultipartUpload's answer, or None when it is an
    ``<Error>`` (S3 may answer 200 and fail in the body).
    """
    root = ElementTree.fromstring(body)
    if strip_namespace(root.tag) == "Error":
        return None
    return _text(root, "ETag")


def listing(body: bytes) -> ListPage:
    """A ListObjectsV2 page (asked with ``encoding-type=url``)."""
    root = ElementTree.fromstring(body)
    objects = [
        ObjectInfo(
            key=unquote_plus(_text(c, "Key")),
            size=int(_text(c, "Size") or 0),
            etag=_text(c, "ETag"),
            last_modified=_text(c, "LastModified"),
        )
        for c in _children(root, "Contents")
    ]
    truncated = _text(root, "IsTruncated") == "true"
    next_token = _text(root, "NextContinuationToken") if truncated else None
    return ListPage(objects, next_token or None)


def open_uploads(body: bytes) -> list[Upload]:
    """A ListMultipartUploads answer (asked with ``encoding-type=url``)."""
    root = ElementTree.fromstring(body)
    return [
        Upload(
            unquote_plus(_text(u, "Key")), _text(u, "UploadId"), _text(u, "Initiated")
        )
        for u in _children(root, "Upload")
    ]
