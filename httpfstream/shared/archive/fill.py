"""
`fill`: a resource that is only in the bucket, downloaded into the cache.

Its bytes are streamed to a new file under ``.httpfstream/filling/``
(`writer.FileWriter`: in threads, the download paused while the disk lags),
synced unless ``--fsync never``, then its line data beside it (optional:
missing or unreadable, the counts are rebuilt when a line is asked for,
and the bytes are dated by the file), and all of it put in place by
`local.install`, the file renamed in last, so a reader never finds a
resource half there, nor with a wrong completion.

Why the whole file before the first byte is served (rather than serving
the first reader from the download as it comes): every reader, however it
reads (a snapshot with ``Range``, ``lines=``, a search, a follow, the
event stream), then reads a local file as it does without the archive,
through the same cursor, with nothing of the archive in the core; and two
readers of one resource download it once (the store's lanes).  What that
costs a first reader of a large resource is measured in
docs/PERFORMANCE.md ("Archive").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ...core.names import Name
from ...core.store import NotAResource
from ..s3 import S3Error
from .bucket import DERIVED, Archived, Bucket, reading
from .local import Occupied, install, new_temporary
from .writer import FileWriter

__all__ = ["fill"]

_log = Logger()


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def fill(
    bucket: Bucket,
    root: str,
    name: Name,
    archived: Archived,
    run: Callable[..., Deferred[Any]],
    sync: bool,
) -> None:
    """
    Download ``name`` (as ``archived`` describes it) into the root.

    :param run: calls a blocking function in the archive's threads.
    :raises core.store.NotFound: the object went meanwhile.
    :raises core.coordination.Unavailable: the bucket cannot be read now.
    :raises core.store.NotAResource: the name cannot hold a file here.
    """
    temporaries: list[str] = []
    try:
        fd, path = await run(new_temporary, root)
        temporaries.append(path)
        writer = FileWriter(fd, run)
        try:
            await reading(bucket.download(name, writer, archived.size))
        finally:
            await writer.finish(sync)
        derived: list[str | None] = []
        for kind in DERIVED:
            if kind not in bucket.kinds_kept(archived.size):
                derived.append(None)
                continue
            fd, kept = await run(new_temporary, root)
            temporaries.append(kept)
            writer = FileWriter(fd, run)
            try:
                found = await bucket.download_derived(kind, name, writer)
            except S3Error as e:
                _log.warn(
                    "filling {name}: its {kind} not read ({error}); rebuilt or"
                    " dated by the file instead",
                    name="/".join(name),
                    kind=kind,
                    error=e,
                )
                found = False
            finally:
                await writer.finish(False)
            derived.append(kept if found else None)
        try:
            await run(
                install,
                root,
                name,
                path,
                (derived[0], derived[1]),
                archived.record,
                archived.modified,
                sync,
            )
        except Occupied as e:
            raise NotAResource(str(e)) from None
    finally:
        await run(_unlink_all, temporaries)
