"""
`S3Client`: the operations the archive needs, each returning a Deferred,
all I/O on the reactor through Twisted's HTTP client (`wire`), signed by
botocore (`signing`), bodies streamed (`transfer`), failures as the four
kinds of `errors`.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from io import BytesIO
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import IResponse

from .config import ArchiveURL, Endpoint, parse_archive_url, resolve_endpoint
from .documents import (
    ListPage,
    ObjectInfo,
    Upload,
    check_metadata,
    complete_body,
    completed,
    listing,
    metadata_of,
    open_uploads,
    upload_id,
)
from .errors import S3Denied, S3Error, error_from_answer, error_from_failure
from .signing import Signer
from .transfer import Download, FileRange, OpenFile, sha256_of
from .wire import Wire, drop, header, query, request_id

__all__ = ["MAX_PARTS", "MIN_PART_SIZE", "PART_SIZE", "S3Client"]

_log = Logger()
_P = ParamSpec("_P")
_T = TypeVar("_T")
_Meta = Mapping[str, str]

#: S3's smallest part (but the last) and most parts of one upload.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
#: The default part size: above it, a file goes up in parts.
PART_SIZE = 16 * 1024 * 1024


def _deferred(
    f: Callable[_P, Coroutine[Deferred[Any], Any, _T]],
) -> Callable[_P, Deferred[_T]]:
    """An ``async def`` method that returns a (cancellable) Deferred."""

    def call(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))

    call.__name__, call.__doc__ = f.__name__, f.__doc__
    return call


def _threads() -> ThreadPool:
    """A client's own threads: file reads, hashing, credentials."""
    pool = ThreadPool(minthreads=0, maxthreads=4, name="httpfstream-s3")
    pool.start()
    return pool


class S3Client:
    """
    One bucket's objects, through one endpoint.

    Make it with `from_environment` (the standard AWS configuration) and
    `close` it when done. Keys are whole keys (`ArchiveURL.key` makes
    ``PREFIX/NAME``). Every method returns a Deferred; cancelling it ends
    the request (an upload cancelled or failed midway is aborted).

    :ivar part_size: a file larger than this goes up in parts of this size
        (larger if it would take over 10,000 parts).
    :ivar timeout: seconds to connect; for an answer once a request is
        sent (plus a second per 256 KiB of its body); between two pieces of
        a body being received while the consumer wants more.
    :ivar attempts: tries of one request that got no answer or a "not now"
        (`S3Unavailable`), a quarter second apart and then four times
        longer each time; never for a CompleteMultipartUpload.
    """

    def __init__(
        self,
        archive: ArchiveURL,
        endpoint: Endpoint,
        credentials: Any,
        *,
        reactor: Any = None,
        threads: ThreadPool | None = None,
        part_size: int = PART_SIZE,
        timeout: float = 30.0,
        attempts: int = 3,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part size {part_size} under S3's {MIN_PART_SIZE}")
        self.archive, self.bucket = archive, archive.bucket
        self.endpoint = endpoint
        self.part_size = part_size
        self.timeout = timeout
        self._reactor = reactor
        self._threads = threads or _threads()
        self._signer = Signer(credentials, self._in_thread)
        self._wire = Wire(endpoint, self._signer, reactor, timeout, attempts)
        #: Bytes of object bodies received (`get`).
        self.bytes_received = 0

    @property
    def requests(self) -> Counter[str]:
        """Requests sent so far (every try), by S3's name for the call."""
        return self._wire.requests

    @property
    def bytes_sent(self) -> int:
        """Bytes of request bodies sent so far."""
        return self._wire.bytes_sent

    @classmethod
    def from_environment(
        cls,
        archive: ArchiveURL | str,
        *,
        reactor: Any = None,
        session: Any = None,
        **options: Any,
    ) -> Deferred[S3Client]:
        """
        A client configured as the AWS tools are (`config.resolve_endpoint`,
        run in the client's threads); fails with `S3Error` (code
        ``NoCredentials``) when the credential chain finds nothing.

        :param archive: ``s3://BUCKET/PREFIX`` or its `ArchiveURL`.
        :param session: a ``botocore.session.Session`` (a new one by default).
        :param options: ``part_size``, ``timeout``, ``attempts``.
        """
        if reactor is None:
            from twisted.internet import reactor
        where = parse_archive_url(archive) if isinstance(archive, str) else archive
        threads = _threads()

        def resolve() -> tuple[Endpoint, Any]:
            import botocore.session

            return resolve_endpoint(session or botocore.session.get_session())

        def made(resolved: tuple[Endpoint, Any]) -> S3Client:
            endpoint, credentials = resolved
            if credentials is None:
                raise S3Error(
                    "Credentials",
                    None,
                    "the AWS credential chain found none (environment, shared"
                    " files, container or instance metadata)",
                    code="NoCredentials",
                )
            return cls(
                where,
                endpoint,
                credentials,
                reactor=reactor,
                threads=threads,
                **options,
            )

        def failed(reason: Failure) -> Failure:
            threads.stop()
            return reason

        d = deferToThreadPool(reactor, threads, resolve)
        return d.addCallback(made).addErrback(failed)

    def _in_thread(self, f: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._threads, f, *args)

    def close(self) -> Deferred[None]:
        """Closes the pooled connections and stops the client's threads."""
        d = self._wire.close()
        self._threads.stop()
        return d

    def _url(self, key: str) -> str:
        return self.endpoint.object_url(self.bucket, key)

    # The bucket.

    @_deferred
    async def check(self) -> None:
        """
        Fires once the bucket is there and these credentials reach it;
        `S3Error` (code ``NoSuchBucket``), `S3Denied` or `S3Unavailable`
        otherwise. For start-up: a wrong ``--archive`` said at once.
        """
        url = self.endpoint.bucket_url(self.bucket)
        response = await self._wire.send(
            "HeadBucket", None, "HEAD", url, ok=(200, 301, 403, 404)
        )
        await self._wire.read("HeadBucket", None, response)
        if response.code == 404:
            message = f"no bucket {self.bucket!r}"
            raise S3Error("HeadBucket", None, message, status=404, code="NoSuchBucket")
        if response.code == 403:
            raise _denied_head("HeadBucket", None, response)
        if response.code == 301:
            region = header(response, "x-amz-bucket-region")
            message = f"the bucket is in region {region}, not {self.endpoint.region}"
            raise S3Error("HeadBucket", None, message, status=301, code="Redirect")

    # Objects.

    @_deferred
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size, ETag and metadata; None if there is none."""
        response = await self._wire.send(
            "HeadObject", key, "HEAD", self._url(key), ok=(200, 403, 404)
        )
        await self._wire.read("HeadObject", key, response)
        if response.code == 404:
            return None
        if response.code == 403:
            raise _denied_head("HeadObject", key, response)
        return ObjectInfo(
            key=key,
            size=int(header(response, "content-length") or 0),
            etag=header(response, "etag") or "",
            last_modified=header(response, "last-modified") or "",
            metadata=metadata_of(response.headers.getAllRawHeaders()),
            content_type=header(response, "content-type"),
        )

    @_deferred
    async def get(
        self,
        key: str,
        consumer: IConsumer,
        offset: int = 0,
        length: int | None = None,
    ) -> int:
        """
        Streams the object's bytes from ``offset`` (``length`` of them, or
        to its end) to ``consumer``, and fires with their count.

        Once the answer came, the consumer gets ``registerProducer(p,
        True)``: pausing ``p`` stops reading the socket (the bytes already
        read still arrive), ``stopProducing`` ends the download
        (`CancelledError`); ``unregisterProducer()`` comes last, whatever
        the outcome. A body cut short fails with `S3Unavailable`: the
        consumer has what came, and a new `get` from there goes on.
        """
        if length == 0:
            return 0
        headers = {}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{last}"
        response = await self._wire.send(
            "GetObject", key, "GET", self._url(key), headers=headers, ok=(200, 206)
        )
        if headers and response.code != 206:
            drop(response)
            raise S3Error("GetObject", key, "the range was not honoured", status=200)
        if response.code == 206:
            got = (header(response, "content-range") or "").partition("-")[0]
            if got != f"bytes {offset}":
                drop(response)
                raise S3Error("GetObject", key, f"asked {offset}-, got {got}")
        download = Download(consumer, response.length, self._reactor, self.timeout)
        response.deliverBody(download)
        try:
            return await download.done
        except CancelledError:
            raise
        except Exception as e:
            raise error_from_failure("GetObject", key, Failure()) from e
        finally:
            self.bytes_received += download.received

    @_deferred
    async def delete(self, key: str) -> None:
        """Deletes the object (S3 answers the same whether it was there or not)."""
        response = await self._wire.send(
            "DeleteObject", key, "DELETE", self._url(key), ok=(200, 204)
        )
        await self._wire.read("DeleteObject", key, response)

    @_deferred
    async def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
        length: int | None = None,
        offset: int = 0,
    ) -> ObjectInfo:
        """
        Uploads the file as the object ``key``: one PUT up to `part_size`,
        a multipart upload above it (parts in order, one at a time, each
        read from the file twice: once for its SHA-256, once to send it),
        with ``metadata`` as ``x-amz-meta-*`` (`check_metadata`). A failed
        or cancelled multipart upload is aborted. Fires with what was
        written (size, ETag, metadata); the file must not change meanwhile
        (if it shrinks, the upload fails). With ``length``, only ``length``
        bytes go (a file that may grow), from ``offset`` (or its start).
        """
        headers = check_metadata(metadata or {})
        headers["Content-Type"] = content_type
        fd = await self._in_thread(os.open, os.fspath(path), os.O_RDONLY | os.O_CLOEXEC)
        file = OpenFile(fd, self._in_thread, self._reactor.callFromThread)
        try:
            size = os.fstat(fd).st_size - offset if length is None else length
            if size <= self.part_size:
                etag = await self._put_range(
                    "PutObject", key, self._url(key), file, offset, size, headers
                )
            else:
                etag = await self._multipart(key, file, size, headers, offset)
        finally:
            file.close()
        return ObjectInfo(
            key, size, etag, metadata=dict(metadata or {}), content_type=content_type
        )

    async def _put_range(
        self,
        operation: str,
        key: str,
        url: str,
        file: OpenFile,
        offset: int,
        length: int,
        headers: Mapping[str, str],
    ) -> str:
        """One PUT of a range of ``file`` (an object or a part); its ETag."""
        digest = await file.run(sha256_of, offset, length)
        response = await self._wire.send(
            operation,
            key,
            "PUT",
            url,
            headers=headers,
            body=lambda: FileRange(file, offset, length),
            payload_sha256=digest,
            length=length,
        )
        await self._wire.read(operation, key, response)
        return header(response, "etag") or ""

    async def _multipart(
        self, key: str, file: OpenFile, size: int, headers: _Meta, start: int = 0
    ) -> str:
        part = max(self.part_size, math.ceil(size / MAX_PARTS))
        url = self._url(key)
        response = await self._wire.send(
            "CreateMultipartUpload", key, "POST", f"{url}?uploads", headers=headers
        )
        begun = upload_id(await self._wire.read("CreateMultipartUpload", key, response))
        if not begun:
            raise S3Error("CreateMultipartUpload", key, "no UploadId in the answer")
        try:
            etags = []
            for number, offset in enumerate(range(0, size, part), start=1):
                where = query({"partNumber": str(number), "uploadId": begun})
                etags.append(
                    await self._put_range(
                        "UploadPart",
                        key,
                        f"{url}?{where}",
                        file,
                        start + offset,
                        min(part, size - offset),
                        {},
                    )
                )
            return await self._complete(key, begun, etags)
        except BaseException:
            await self._abort_quietly(key, begun)
            raise

    async def _complete(self, key: str, upload: str, etags: list[str]) -> str:
        body = complete_body(etags)
        response = await self._wire.send(
            "CompleteMultipartUpload",
            key,
            "POST",
            f"{self._url(key)}?{query({'uploadId': upload})}",
            body=lambda: FileBodyProducer(BytesIO(body)),
            payload_sha256=hashlib.sha256(body).hexdigest(),
            length=len(body),
            # Done twice, the second would find the upload gone.
            retry=False,
        )
        answer = await self._wire.read("CompleteMultipartUpload", key, response)
        etag = completed(answer)
        if etag is None:
            raise error_from_answer(
                "CompleteMultipartUpload", key, 500, answer, request_id(response)
            )
        return etag

    async def _abort_quietly(self, key: str, upload: str) -> None:
        try:
            await self.abort_upload(key, upload)
        except Exception as e:
            _log.warn(
                "S3 upload {upload} of {key} not aborted ({error}): S3 keeps"
                " its parts until a lifecycle rule or a later abort removes them",
                upload=upload,
                key=key,
                error=e,
            )

    @_deferred
    async def abort_upload(self, key: str, upload: str) -> None:
        """Aborts a multipart upload (S3 drops its parts); one gone is no error."""
        url = f"{self._url(key)}?{query({'uploadId': upload})}"
        response = await self._wire.send(
            "AbortMultipartUpload", key, "DELETE", url, ok=(200, 204, 404)
        )
        await self._wire.read("AbortMultipartUpload", key, response)

    @_deferred
    async def uploads(self, prefix: str = "") -> list[Upload]:
        """
        The multipart uploads open under ``prefix`` (the first 1,000): what
        a server that died mid-upload left, for `abort_upload`.
        """
        params = {"uploads": None, "prefix": prefix, "encoding-type": "url"}
        url = f"{self.endpoint.bucket_url(self.bucket)}?{query(params)}"
        response = await self._wire.send("ListMultipartUploads", None, "GET", url)
        return open_uploads(
            await self._wire.read("ListMultipartUploads", None, response)
        )

    # Listing.

    @_deferred
    async def list_page(
        self,
        prefix: str = "",
        token: str | None = None,
        max_keys: int = 1000,
        delimiter: str | None = None,
    ) -> ListPage:
        """
        One page of the keys under ``prefix``, in key order (ListObjectsV2);
        with a ``delimiter`` (``/``), the keys directly under it, and what
        lies deeper as the page's ``prefixes`` (the folders).
        """
        params: dict[str, str | None] = {
            "list-type": "2",
            "prefix": prefix,
            "max-keys": str(max_keys),
            "encoding-type": "url",
        }
        if token is not None:
            params["continuation-token"] = token
        if delimiter is not None:
            params["delimiter"] = delimiter
        url = f"{self.endpoint.bucket_url(self.bucket)}?{query(params)}"
        response = await self._wire.send("ListObjectsV2", None, "GET", url)
        return listing(await self._wire.read("ListObjectsV2", None, response))

    @_deferred
    async def list(self, prefix: str = "", page_size: int = 1000) -> list[ObjectInfo]:
        """Every key under ``prefix``: `list_page` until the last page."""
        found: list[ObjectInfo] = []
        token = None
        while True:
            page = await self.list_page(prefix, token, page_size)
            found.extend(page.objects)
            if page.next_token is None:
                return found
            token = page.next_token


def _denied_head(operation: str, key: str | None, response: IResponse) -> S3Error:
    """A 403 to a HEAD (which carries no body, so no code)."""
    return S3Denied(
        operation,
        key,
        "forbidden (a HEAD answer says no more)",
        status=403,
        request_id=request_id(response),
    )
