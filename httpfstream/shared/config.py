"""
Where Redis is (`RedisConfig`, `parse_redis_url`), the constants of shared
mode, and `Settings`: what every part of one coordinator shares (the key
names, this server's ID, and the timings that follow from the lease).
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = [
    "BLOCK",
    "FENCE_TTL",
    "MAXLEN",
    "RETENTION",
    "SHUTDOWN_WAIT",
    "RedisConfig",
    "Settings",
    "parse_redis_url",
]

#: Entries kept per feed (only the newest matters; a reader that lags more
#: than this still gets the newest size).
MAXLEN = 32
#: Seconds one blocking read waits; a stream opened meanwhile joins after.
BLOCK = 0.25
#: Seconds a feed lives after its session ended (readers need its end).
RETENTION = 60.0
#: Seconds a fencing counter lives after its last claim.
FENCE_TTL = 86400.0
#: Seconds stopping waits for this server's sessions to end (the registry's
#: default ``shutdown_timeout``).
SHUTDOWN_WAIT = 15.0


@dataclass(frozen=True)
class RedisConfig:
    """Where Redis is, and the lease length."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: Seconds a lease lives without renewal: the longest a dead server's
    #: resource stays taken, and about how long its followers wait.
    lease: float = 10.0


def parse_redis_url(
    url: str, password: str | None = None, lease: float = 10.0
) -> RedisConfig:
    """
    ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS,
    checked against the system's certificate authorities); ``password``, if
    given, overrides the URL's.

    :raises ValueError: not such a URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r} is not a redis:// or rediss:// URL")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the path must be a database number")
    if lease <= 0:
        raise ValueError("the lease must be longer than 0 seconds")
    return RedisConfig(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=password
        if password is not None
        else (unquote(parts.password) if parts.password else None),
        tls=parts.scheme == "rediss",
        lease=lease,
    )


def _server_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Settings:
    """
    What the parts of one coordinator share: the config, the first part of
    every key, this server's ID (in every lease value and feed entry it
    writes), and the timings derived from the lease.
    """

    config: RedisConfig
    prefix: str = "httpfstream"
    server_id: str = field(default_factory=_server_id)

    @property
    def lease(self) -> float:
        """Seconds a lease lives without renewal."""
        return self.config.lease

    @property
    def lease_ms(self) -> str:
        return str(math.ceil(self.config.lease * 1000))

    @property
    def feed_ttl_ms(self) -> str:
        """How long a feed lives unrenewed: a lease, then its retention."""
        return str(math.ceil((self.config.lease + RETENTION) * 1000))

    @property
    def check_interval(self) -> float:
        """Seconds between checks of a session elsewhere (a quarter lease, 0.1-1)."""
        return max(0.1, min(1.0, self.config.lease / 4))

    @property
    def timeout(self) -> float:
        """
        Seconds to wait for a connection, and then for an answer (a quarter
        lease, 0.5-2).
        """
        return max(0.5, min(2.0, self.config.lease / 4))

    @property
    def global_keys(self) -> list[str]:
        """The deployment's keys: ``boot`` and ``quarantine``."""
        return [f"{self.prefix}:boot", f"{self.prefix}:quarantine"]

    def key(self, path: str, what: str) -> str:
        """The key of ``what`` (lease, fence, feed) for the resource ``path``."""
        return f"{self.prefix}:{{{path}}}:{what}"
