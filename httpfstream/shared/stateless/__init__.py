"""
The stateless mode (``--redis`` with ``--archive``): live bytes in Redis,
finished resources in the bucket, every server's root only a cache
(`StatelessStore`).  docs/ARCHITECTURE.md ("Stateless servers") has the
design; docs/SCALING.md how to run it.
"""

from .live import LiveRedis
from .store import StatelessStore

__all__ = ["LiveRedis", "StatelessStore"]
