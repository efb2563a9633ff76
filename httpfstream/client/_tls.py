"""
TLS settings for whatever host a URL names, for both ``https://`` (through
the client's Agent) and ``wss://`` (through `._websocket.connect`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeAlias

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

#: TLS settings given whole: used as they are, whatever the host.
#: (`CertificateOptions` is accepted for compatibility, as Twisted does.)
TLSSettings: TypeAlias = "IOpenSSLClientConnectionCreator | CertificateOptions"
#: A certificate authority: a PEM file's path, or the certificate.
TrustRoot: TypeAlias = "str | os.PathLike[str] | Certificate"


def load_trust_root(trust_root: TrustRoot) -> Certificate:
    """
    The certificate of a certificate authority.

    :param trust_root: a `Certificate`, or the path of a PEM file (its first
        certificate is used).
    :raises OSError: the file cannot be read.
    """
    if isinstance(trust_root, Certificate):
        return trust_root
    return Certificate.loadPEM(Path(trust_root).read_bytes())


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """
    The TLS settings for each host: ``tls`` for all of them if given, else
    `optionsForClientTLS` for the host, trusting ``trust_root`` (or, without
    one, the platform's authorities), built once per host.

    :param tls: settings to use whatever the host.
    :param trust_root: the certificate authority to trust.
    :raises ValueError: both were given.
    """

    def __init__(
        self, tls: TLSSettings | None = None, trust_root: Certificate | None = None
    ) -> None:
        if tls is not None and trust_root is not None:
            raise ValueError("give tls= or trust_root=, not both")
        self._tls = tls
        self._trust_root = trust_root
        self._by_host: dict[str, IOpenSSLClientConnectionCreator] = {}

    def for_host(self, host: str) -> TLSSettings:
        """
        The settings for connecting to ``host``.

        :param host: the host name (or address) the URL names, which the
            server's certificate must match.
        """
        if self._tls is not None:
            return self._tls
        creator = self._by_host.get(host)
        if creator is None:
            creator = optionsForClientTLS(host, trustRoot=self._trust_root)
            self._by_host[host] = creator
        return creator

    def creatorForNetloc(self, hostname: bytes, port: int) -> TLSSettings:
        """`IPolicyForHTTPS`, for the Agent: `for_host` of ``hostname``."""
        return self.for_host(hostname.decode("ascii"))
