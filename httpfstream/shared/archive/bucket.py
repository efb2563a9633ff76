"""
`Bucket`: the archive's objects seen as resources, on an `S3Client`.

One resource is one object at ``PREFIX/NAME`` holding exactly its bytes,
with its state in the object's user metadata:

- ``x-amz-meta-complete``: ``1`` if its last append session ended well,
  ``0`` if not (section 9); an object with no such field (put there by
  other means) counts as complete, as a file put into the root does;
- ``x-amz-meta-modified``: when its bytes last changed, in milliseconds
  since the epoch (an object without it: its Last-Modified).

Its line data (section 13) goes beside it under
``PREFIX/.httpfstream/lines/NAME`` and ``PREFIX/.httpfstream/times/NAME``,
a name no resource can take (`core/names.py`): the line counts, which a
fill could rebuild from the bytes, and the batch times, which nothing
could.  Both are optional: a fill without them rebuilds the counts when a
line is asked for, and dates the bytes with the file's time.

Listings cannot carry user metadata, so a resource listed from the bucket
is asked for its state with a HEAD, remembered by key and ETag (`describe`).

`BucketLink` makes the client (at start, and again if that failed) and
hands out the `Bucket`; `reading` turns what S3 says into what the store
says (`NotFound`, `Unavailable`).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from twisted.internet.defer import (
    Deferred,
    DeferredSemaphore,
    FirstError,
    gatherResults,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from ...core.coordination import Unavailable
from ...core.names import STATE_FOLDER, Name
from ...core.scan import Entry, Listing
from ...core.store import NotFound
from ..s3 import (
    ArchiveURL,
    ObjectInfo,
    S3Client,
    S3Error,
    S3NotFound,
    S3Unavailable,
)
from .local import Record
from .writer import FileWriter

__all__ = ["DERIVED", "LINES_FROM", "Archived", "Bucket", "BucketLink", "reading"]

_log = Logger()

#: The kinds of line data kept beside an object, in `derived_paths` order.
DERIVED = ("lines", "times")
#: The smallest resource whose line counts go beside it: a smaller one's
#: are rebuilt from its bytes when a line is first asked for (about 0.8 s
#: per GiB read from the page cache: under 15 ms), which saves a PUT per
#: session and a GET per fill.
LINES_FROM = 16 << 20
#: Tries of one download cut short (each from where the last stopped).
_DOWNLOAD_TRIES = 4
_T = TypeVar("_T")

#: Objects' states remembered from HEADs and uploads.
_REMEMBERED = 50_000


@dataclass(frozen=True)
class Archived:
    """What the bucket holds of one resource."""

    size: int
    complete: bool
    #: When its bytes last changed, in seconds since the epoch.
    modified: float
    etag: str = ""
    #: The resource's generation (the stateless mode; ``""`` if none).
    gen: str = ""

    @property
    def record(self) -> Record:
        return Record(self.size, self.complete)


def s3_time(text: str) -> float:
    """An S3 time (ISO 8601 in listings, an HTTP date from HEAD) → seconds."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


def archived_of(info: ObjectInfo) -> Archived:
    """A HEAD's answer as the resource's state."""
    modified = info.metadata.get("modified", "")
    return Archived(
        info.size,
        info.metadata.get("complete") != "0",
        int(modified) / 1000 if modified.isdigit() else s3_time(info.last_modified),
        info.etag,
        info.metadata.get("gen", ""),
    )


def _segment(text: str) -> bool:
    return text not in ("", ".", "..") and "\0" not in text


class Bucket:
    """
    :param client: the S3 client (the bucket is its own).
    :param archive: the bucket and the prefix.
    :param answered: called whenever the bucket answered a request, even
        with a refusal (the archive's retries wait less once it is back).
    :param unreachable: called whenever it did not (`S3Unavailable`).
    :param heads: HEADs at once when describing a listing.
    """

    def __init__(
        self,
        client: S3Client,
        archive: ArchiveURL,
        answered: Callable[[], None] = lambda: None,
        unreachable: Callable[[], None] = lambda: None,
        heads: int = 8,
    ) -> None:
        self.client = client
        self.archive = archive
        self._answered = answered
        self._unreachable = unreachable
        self._known: OrderedDict[str, Archived] = OrderedDict()
        self._heads = DeferredSemaphore(heads)

    def close(self) -> Deferred[None]:
        return self.client.close()

    # Names and keys.

    def key(self, name: Name) -> str:
        return self.archive.key(name)

    def derived_key(self, kind: str, name: Name) -> str:
        return self.archive.key((STATE_FOLDER, kind, *name))

    def name_of(self, key: str) -> Name | None:
        """The resource an object holds, or None (line data, odd keys)."""
        name = self.archive.name_of(key)
        if name is None or name[0] == STATE_FOLDER or not all(map(_segment, name)):
            return None
        return name

    def _remember(self, key: str, archived: Archived | None) -> None:
        if archived is None:
            self._known.pop(key, None)
            return
        self._known[key] = archived
        self._known.move_to_end(key)
        while len(self._known) > _REMEMBERED:
            self._known.popitem(last=False)

    async def _ask(self, request: Deferred[_T]) -> _T:
        """``request``'s result, telling whether the bucket answered."""
        try:
            result = await request
        except S3Unavailable:
            self._unreachable()
            raise
        except S3Error:
            self._answered()  # a refusal is an answer
            raise
        self._answered()
        return result

    # One resource.

    async def head(self, name: Name) -> Archived | None:
        """What the bucket holds of ``name``, or None."""
        key = self.key(name)
        info = await self._ask(self.client.head(key))
        archived = None if info is None else archived_of(info)
        self._remember(key, archived)
        return archived

    async def upload(
        self, name: Name, path: str, record: Record, modified: float, gen: str = ""
    ) -> Archived:
        """The file's first ``record.size`` bytes as ``name``'s object."""
        key = self.key(name)
        metadata = {
            "complete": "1" if record.complete else "0",
            "modified": str(int(modified * 1000)),
        }
        if gen:
            metadata["gen"] = gen
        info = await self._ask(
            self.client.put_file(key, path, metadata, length=record.size)
        )
        archived = Archived(record.size, record.complete, modified, info.etag, gen)
        self._remember(key, archived)
        return archived

    @staticmethod
    def kinds_kept(size: int) -> tuple[str, ...]:
        """The kinds of line data kept beside a resource of ``size`` bytes."""
        return DERIVED if size >= LINES_FROM else ("times",)

    async def upload_derived(
        self, name: Name, paths: tuple[str, str], size: int
    ) -> None:
        """The line data's files, those there are, beside the object."""
        for kind, path in zip(DERIVED, paths, strict=True):
            if kind not in self.kinds_kept(size):
                continue
            with contextlib.suppress(FileNotFoundError):
                await self._ask(
                    self.client.put_file(self.derived_key(kind, name), path)
                )

    async def download(self, name: Name, writer: FileWriter, size: int) -> None:
        """
        The object's bytes to ``writer``; a body cut short goes on from
        where it stopped (a few times).  Fails with `S3NotFound` if it is
        gone, `S3Unavailable` if the bucket stops answering.
        """
        key = self.key(name)
        tries = 0
        while True:
            start = writer.received
            try:
                await self._ask(self.client.get(key, writer, start))
            except S3Unavailable:
                tries += 1
                if tries >= _DOWNLOAD_TRIES or writer.received == start == 0:
                    raise
                continue
            break
        if writer.received != size:
            raise S3Unavailable(
                "GetObject", key, f"{writer.received} bytes, {size} expected"
            )

    async def download_derived(self, kind: str, name: Name, writer: FileWriter) -> bool:
        """One kind of line data to ``writer``; False if the bucket has none."""
        try:
            await self._ask(self.client.get(self.derived_key(kind, name), writer))
        except S3NotFound:
            return False
        return True

    async def delete(self, name: Name) -> None:
        """The object and its line data."""
        for key in (self.key(name), *(self.derived_key(k, name) for k in DERIVED)):
            await self._ask(self.client.delete(key))
            self._remember(key, None)

    def summary(self) -> str:
        """The requests sent so far, for the log."""
        client = self.client
        by = ", ".join(f"{k} {v}" for k, v in sorted(client.requests.items()))
        return (
            f"{sum(client.requests.values())} S3 requests ({by or 'none'}),"
            f" {client.bytes_sent} bytes sent, {client.bytes_received} received"
        )

    async def abort_stale(self, before: float) -> None:
        """
        Abort the multipart uploads under the prefix begun before
        ``before`` (what a server stopped or killed midway left open: S3
        keeps their parts, and bills them, until aborted).
        """
        uploads = await self._ask(self.client.uploads(self.archive.key_prefix))
        for upload in uploads:
            if s3_time(upload.initiated) < before:
                await self._ask(self.client.abort_upload(upload.key, upload.upload_id))
                _log.info("aborted an upload of {key} left open", key=upload.key)

    # Many resources.

    async def folder(
        self, folder: Name
    ) -> tuple[list[tuple[str, ObjectInfo]], list[str]]:
        """
        The resources directly in ``folder`` (each with its name there) and
        its sub-folders (names ending in ``/``), by name.
        """
        prefix = self.archive.key_prefix + "".join(f"{s}/" for s in folder)
        objects: list[tuple[str, ObjectInfo]] = []
        folders: list[str] = []
        token = None
        while True:
            page = await self._ask(self.client.list_page(prefix, token, delimiter="/"))
            for info in page.objects:
                rest = info.key[len(prefix) :]
                if _segment(rest) and "/" not in rest:
                    objects.append((rest, info))
            for common in page.prefixes:
                rest = common[len(prefix) : -1]
                if _segment(rest) and "/" not in rest:
                    if not folder and rest == STATE_FOLDER:
                        continue
                    folders.append(f"{rest}/")
            token = page.next_token
            if token is None:
                break
        return objects, folders

    async def describe(self, infos: list[ObjectInfo]) -> list[Archived | None]:
        """
        The state of each listed object: remembered when its ETag is the
        one remembered, else asked (a HEAD, a few at once); None for one
        gone meanwhile.
        """

        async def one(info: ObjectInfo) -> Archived | None:
            known = self._known.get(info.key)
            if known is not None and known.etag == info.etag:
                return known
            answer = await self._ask(self.client.head(info.key))
            archived = None if answer is None else archived_of(answer)
            self._remember(info.key, archived)
            return archived

        asked = [self._heads.run(one, info) for info in infos]
        try:
            found: list[Archived | None] = await gatherResults(
                asked, consumeErrors=True
            )
        except FirstError as e:
            e.subFailure.raiseException()
        return found

    async def older_than(self, cutoff: float) -> list[Name]:
        """Every resource in the bucket whose bytes last changed before ``cutoff``."""
        found: list[Name] = []
        for info in await self._ask(self.client.list(self.archive.key_prefix)):
            name = self.name_of(info.key)
            if name is None:
                continue
            known = self._known.get(info.key)
            if known is not None and known.etag == info.etag:
                modified = known.modified
            else:
                modified = s3_time(info.last_modified)
            if modified < cutoff:
                found.append(name)
        return found

    async def listing(self, folder: Name, local: Listing | None) -> Listing | None:
        """
        ``folder`` as the bucket and the local disk hold it together (a
        resource on local disk is described by its file: it is never
        older than its object); None if neither has it.
        """
        objects, folders = await self.folder(folder)
        if local is None and not objects and not folders:
            return None
        entries = {e.name: e for e in (local.resources if local else [])}
        others = [(n, info) for n, info in objects if n not in entries]
        states = await self.describe([info for _, info in others])
        for (n, _), archived in zip(others, states, strict=True):
            if archived is not None:
                entries[n] = Entry(
                    n, archived.size, archived.complete, archived.modified
                )
        return Listing(
            sorted(entries.values(), key=lambda e: e.name),
            sorted({*(local.folders if local else []), *folders}),
        )


async def reading(work: Awaitable[_T]) -> _T:
    """
    ``work``'s result, with S3's refusals as the store's: a missing object
    `NotFound` (404), anything else `Unavailable` (503 with Retry-After),
    logged once here.
    """
    try:
        return await work
    except S3NotFound as e:
        raise NotFound(str(e)) from None
    except S3Error as e:
        _log.warn("the archive cannot be read now: {error}", error=e)
        raise Unavailable("the archive cannot be reached now") from None


class BucketLink:
    """
    The `Bucket` once its S3 client is made: ``connect`` is called at
    `start`, and again whenever the bucket is asked for after it failed.

    :param answered: passed to the `Bucket`.
    :param unreachable: passed to the `Bucket`.
    """

    def __init__(
        self,
        archive: ArchiveURL,
        connect: Callable[[], Deferred[S3Client]],
        answered: Callable[[], None],
        unreachable: Callable[[], None],
    ) -> None:
        self.archive = archive
        self.current: Bucket | None = None
        self._connect = connect
        self._answered = answered
        self._unreachable = unreachable
        self._connecting = False
        self._waiters: list[Deferred[Bucket]] = []

    def start(self) -> None:
        if self._connecting or self.current is not None:
            return
        self._connecting = True
        self._connect().addCallbacks(self._made, self._failed)

    def _made(self, client: S3Client) -> None:
        self._connecting = False
        self.current = Bucket(client, self.archive, self._answered, self._unreachable)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.current)

    def _failed(self, reason: Failure) -> None:
        self._connecting = False
        _log.error(
            "archive {url}: no S3 client: {error}",
            url=str(self.archive),
            error=reason.getErrorMessage(),
        )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(Unavailable("the archive cannot be reached now"))

    async def bucket(self) -> Bucket:
        """The bucket; `Unavailable` if its client cannot be made."""
        if self.current is not None:
            return self.current
        d: Deferred[Bucket] = Deferred()
        self._waiters.append(d)
        self.start()
        return await d

    def close(self) -> Bucket | None:
        """Stop: the bucket (if any), its client closing."""
        bucket, self.current = self.current, None
        if bucket is not None:
            bucket.close()
        return bucket
