"""
Object storage for finished resources (``--archive s3://BUCKET/PREFIX``):
an S3 client on the reactor, configured the way the AWS tools are.

The names the server uses are re-exported here; docs/ARCHITECTURE.md
("Object storage") says why the client is built this way.
"""

from .client import MIN_PART_SIZE, PART_SIZE, S3Client
from .config import ArchiveURL, Endpoint, parse_archive_url
from .documents import ListPage, ObjectInfo, Upload, check_metadata
from .errors import S3Denied, S3Error, S3NotFound, S3Unavailable

__all__ = [
    "MIN_PART_SIZE",
    "PART_SIZE",
    "ArchiveURL",
    "Endpoint",
    "ListPage",
    "ObjectInfo",
    "S3Client",
    "S3Denied",
    "S3Error",
    "S3NotFound",
    "S3Unavailable",
    "Upload",
    "check_metadata",
    "parse_archive_url",
]
