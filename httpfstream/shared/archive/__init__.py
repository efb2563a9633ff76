"""
The archive (``--archive s3://BUCKET/PREFIX``, one server): finished
resources in an S3 bucket, one object each, and the storage root a cache
of them bounded in size.  `ArchiveStore` is the store the registry uses
then; `check_archive` is the start-up check.  docs/ARCHITECTURE.md
("Archive") says how it is built and why.
"""

from .check import check_archive
from .store import ArchiveStore

__all__ = ["ArchiveStore", "check_archive"]
