"""
What the storage options make of a server (docs/SCALING.md, "Three
modes"): the registry's keywords for each mode, built from twistd's
options.

- no ``--redis``, no ``--archive``: one server, files only (nothing here);
- ``--redis``: shared mode, several servers on one root
  (`coordinator.RedisCoordinator` as the registry's slots and feed);
- ``--archive``: one server, finished resources in a bucket
  (`archive.ArchiveStore`);
- both: the stateless mode, every server's root only a cache
  (`stateless.StatelessStore` on the coordinator's Redis).

A wrong option stops twistd with one line: `ModeError`, which ``tap``
turns into its start-up error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.python.filepath import FilePath

from ..core.store import FileStore
from ..core.writes import FsyncPolicy

__all__ = ["ModeError", "storage"]


class ModeError(Exception):
    """An option of the storage modes cannot be used; its message says why."""


def _redis_config(options: Mapping[str, Any]) -> Any:
    from .coordinator import parse_redis_url

    password = None
    if options["redis-password-file"]:
        try:
            with open(options["redis-password-file"]) as f:
                password = f.read().strip()
        except OSError as e:
            raise ModeError(
                f"--redis-password-file {options['redis-password-file']}: {e.strerror}"
            ) from None
    try:
        return parse_redis_url(options["redis"], password, options["redis-lease"])
    except ValueError as e:
        raise ModeError(f"--redis: {e}") from None


def _archive_url(options: Mapping[str, Any]) -> Any:
    from .archive import check_archive
    from .s3 import parse_archive_url

    url = options["archive"]
    try:
        archive = parse_archive_url(url)
        check_archive(archive)
    except ValueError as e:
        raise ModeError(f"--archive {url}: {e}") from None
    return archive


def storage(
    options: Mapping[str, Any], reactor: Any, top: MultiService
) -> dict[str, Any]:
    """
    The registry's keywords for the mode the options ask for (none for
    one server on files); services it needs before the registry (the Redis
    coordinator, which must stop after it) are added to ``top``.
    """
    redis, archive = options["redis"], options["archive"]
    if not redis and not archive:
        return {}
    from .s3 import S3Client

    local = FileStore(FilePath(options["root"]), reactor)
    sync = options["fsync"] is not FsyncPolicy.NEVER
    if archive:
        url = _archive_url(options)

        def connect() -> Any:
            return S3Client.from_environment(url, reactor=reactor)

    if not redis:
        from .archive import ArchiveStore

        store = ArchiveStore(
            local,
            url,
            connect,
            reactor=reactor,
            cache_size=options["cache-size"],
            idle=options["archive-idle"],
            sync=sync,
        )
        return {"store": store}
    from .coordinator import RedisCoordinator

    config = _redis_config(options)
    if not archive:
        coordinator = RedisCoordinator(config, local.stat, reactor)
        coordinator.setServiceParent(top)
        return {"store": local, "slots": coordinator, "feed": coordinator}
    from .stateless import StatelessStore

    # The coordinator asks the store for sizes and copies; the store
    # appends through the coordinator's Redis: made one after the other.
    stores: list[StatelessStore] = []
    coordinator = RedisCoordinator(
        config,
        lambda name: stores[0].settled(name),
        reactor,
        pull=lambda name, size: stores[0].pull(name, size),
    )
    stores.append(
        StatelessStore(
            local,
            url,
            connect,
            coordinator.live_bytes(options["live-chunk"], options["live-max"]),
            coordinator.lease_of,
            coordinator.released,
            reactor=reactor,
            cache_size=options["cache-size"],
            idle=options["archive-idle"],
            sync=sync,
        )
    )
    coordinator.setServiceParent(top)
    return {"store": stores[0], "slots": coordinator, "feed": coordinator}
