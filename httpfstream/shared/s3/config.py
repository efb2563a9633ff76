"""
Where the archive is: the ``--archive s3://BUCKET/PREFIX`` URL, the keys
under its prefix, and the endpoint that the standard AWS configuration
names (resolved by botocore, in a thread: reading the shared files and
creating its client are blocking calls).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["ArchiveURL", "Endpoint", "parse_archive_url", "resolve_endpoint"]

#: S3's rules for a bucket name (the general-purpose kind): 3 to 63
#: characters, lower-case letters, digits, dots and hyphens, starting and
#: ending with a letter or a digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: A name that can be a host's leftmost label: what virtual-host style needs.
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class ArchiveURL:
    """
    The bucket and the key prefix of ``s3://BUCKET/PREFIX``; `key` names a
    resource's object, `name_of` reads a listed key back.

    :ivar prefix: without a leading or trailing ``/``; empty for the
        bucket's top.
    """

    bucket: str
    prefix: str = ""

    def key(self, name: tuple[str, ...] | str) -> str:
        """``PREFIX/NAME`` for a resource's name (its segments, or joined)."""
        joined = name if isinstance(name, str) else "/".join(name)
        if not joined or joined.startswith("/"):
            raise ValueError(f"not a resource name: {name!r}")
        return f"{self.prefix}/{joined}" if self.prefix else joined

    @property
    def key_prefix(self) -> str:
        """What every key of the archive starts with (for listing)."""
        return f"{self.prefix}/" if self.prefix else ""

    def name_of(self, key: str) -> tuple[str, ...] | None:
        """The resource name of an archived key, or None if not under it."""
        rest = key.removeprefix(self.key_prefix)
        if (rest == key and self.prefix) or not rest:
            return None
        return tuple(rest.split("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_archive_url(url: str) -> ArchiveURL:
    """
    ``s3://BUCKET`` or ``s3://BUCKET/PREFIX`` → `ArchiveURL`; `ValueError`
    saying what is wrong otherwise (another scheme, a bad bucket name, a
    query, empty or dot segments in the prefix).
    """
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"{url!r}: not an s3://BUCKET/PREFIX URL")
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(f"{url!r}: only s3://BUCKET/PREFIX, nothing more")
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{url!r}: {bucket!r} is not a bucket name (3 to 63 lower-case"
            " letters, digits, dots and hyphens)"
        )
    prefix = parts.path.strip("/")
    if prefix and any(s in ("", ".", "..") for s in prefix.split("/")):
        raise ValueError(f"{url!r}: the prefix has an empty, . or .. segment")
    return ArchiveURL(bucket, prefix)


@dataclass(frozen=True)
class Endpoint:
    """
    Where requests go and how they are addressed.

    :ivar url: ``scheme://host[:port]`` and maybe a base path, no slash at
        the end.
    :ivar path_style: ``URL/BUCKET/KEY`` (MinIO, Ceph, moto: any configured
        endpoint, unless told ``addressing_style = virtual``) rather than
        ``BUCKET.HOST/KEY`` (AWS itself).
    :ivar ca_bundle: the PEM file of the trusted authorities
        (``AWS_CA_BUNDLE``), or None for the system's.
    """

    url: str
    region: str
    path_style: bool
    ca_bundle: str | None = None

    def bucket_url(self, bucket: str) -> str:
        """The URL of the bucket itself (its listing, `S3Client.check`)."""
        if self._path_style_for(bucket):
            return f"{self.url}/{bucket}"
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{bucket}.{rest}"

    def object_url(self, bucket: str, key: str) -> str:
        """
        The URL of one object: the key percent-encoded as SigV4 expects
        (every byte but the unreserved ones and ``/``), which is also what
        the request carries, so the signed path is the sent one.
        """
        return f"{self.bucket_url(bucket)}/{quote(key, safe='/~')}"

    def _path_style_for(self, bucket: str) -> bool:
        if self.path_style or not _DNS_LABEL.fullmatch(bucket):
            return True
        # A dotted bucket name breaks the wildcard certificate under TLS.
        return "." in bucket and self.url.startswith("https")


def resolve_endpoint(session: Any) -> tuple[Endpoint, Any]:
    """
    The endpoint and botocore's credentials object, from the standard
    configuration of ``session`` (a ``botocore.session.Session``): the
    region from ``AWS_DEFAULT_REGION`` or the profile, else ``AWS_REGION``
    (which botocore alone does not read), else ``us-east-1``; the endpoint
    from ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or the profile
    (``endpoint_url``, a ``services`` section), else AWS's for the region;
    addressing as botocore decides it (path style for a configured endpoint,
    virtual host for AWS, unless the profile's ``s3 = addressing_style``
    says otherwise).

    Blocking: it reads the shared files and may ask the credential chain's
    network providers (container or instance metadata, SSO, STS); run it in
    a thread.
    """
    from botocore.configprovider import ConfiguredEndpointProvider

    region = (
        session.get_config_variable("region")
        or os.environ.get("AWS_REGION")
        or "us-east-1"
    )
    client = session.create_client("s3", region_name=region)
    s3_config = session.get_config_variable("s3") or {}
    style = s3_config.get("addressing_style")
    ignore = session.get_config_variable("ignore_configured_endpoint_urls")
    configured = (
        not ignore
        and ConfiguredEndpointProvider(
            full_config=session.full_config,
            scoped_config=session.get_scoped_config(),
            client_name="s3",
        ).provide()
    )
    path_style = style != "virtual" if configured else style == "path"
    endpoint = Endpoint(
        url=client.meta.endpoint_url.rstrip("/"),
        region=client.meta.region_name or region,
        path_style=path_style,
        ca_bundle=session.get_config_variable("ca_bundle"),
    )
    credentials = session.get_credentials()
    client.close()
    return endpoint, credentials
