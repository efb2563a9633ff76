"""
How the client trusts an ``https`` endpoint: the system's authorities, or
those of ``AWS_CA_BUNDLE`` (the profile's ``ca_bundle``), as the AWS tools
do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["policy_for"]

_PEM = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


@implementer(IPolicyForHTTPS)
class _Bundle:
    """Trusts the certificates of one PEM bundle, checking host names."""

    def __init__(self, path: str) -> None:
        pems = _PEM.findall(Path(path).read_bytes())
        if not pems:
            raise ValueError(f"{path}: no PEM certificate in the CA bundle")
        self._trust = trustRootFromCertificates(
            [Certificate.loadPEM(pem) for pem in pems]
        )

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust)


def policy_for(ca_bundle: str | None) -> IPolicyForHTTPS:
    """The TLS policy for an endpoint, given the configured CA bundle."""
    if ca_bundle:
        return _Bundle(ca_bundle)
    return BrowserLikePolicyForHTTPS()
