"""
Access control with bearer tokens (docs/PROTOCOL.md section 8).

A token file holds one grant per line::

    # token             rights          path prefix (optional)
    ci-7f3a9c2e1b       append,follow   builds/
    viewer-52aa01e9     follow

*rights* is ``append`` (APPEND and POST), ``follow`` (FOLLOW, GET and
HEAD) or both, comma-separated; a prefix limits the grant to names whose
leading segments are the prefix's (``builds/`` covers ``builds/42.log``,
not ``builds-old/x``).  Blank lines and ``#`` comments are ignored.

Tokens are kept only as SHA-256 digests and looked up by digest, so neither
the lookup's timing nor a memory dump gives a token away.  (twisted.cred
was considered: its HTTP wrapper speaks Basic and Digest, not bearer tokens
in a header or a query parameter, and a portal/realm/avatar for a
yes-or-no per request and path would be ceremony without a use.)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

from ..core.names import Name

__all__ = ["Access", "Grant", "Right", "TokenError", "Tokens", "mask_token"]


class Right(Enum):
    APPEND = "append"
    FOLLOW = "follow"


class Access(Enum):
    """The outcome of a check: allowed, 401 or 403."""

    ALLOWED = 200
    UNAUTHORIZED = 401
    FORBIDDEN = 403


class TokenError(ValueError):
    """The token file is not valid; the message says where."""


@dataclass(frozen=True)
class Grant:
    rights: frozenset[Right]
    prefix: Name = ()

    def covers(self, right: Right, name: Name | None) -> bool:
        if right not in self.rights:
            return False
        if not self.prefix:
            return True
        return name is not None and name[: len(self.prefix)] == self.prefix


def _digest(token: str | bytes) -> bytes:
    if isinstance(token, str):
        token = token.encode()
    return hashlib.sha256(token).digest()


class Tokens:
    """The grants of a token file."""

    def __init__(self, grants: dict[bytes, Grant]) -> None:
        self._grants = grants

    def __len__(self) -> int:
        return len(self._grants)

    @classmethod
    def parse(cls, text: str) -> Tokens:
        grants: dict[bytes, Grant] = {}
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) not in (2, 3):
                raise TokenError(f"line {number}: expected TOKEN RIGHTS [PREFIX]")
            token, rights_text = fields[0], fields[1]
            if len(token) < 16:
                raise TokenError(f"line {number}: tokens must be 16 characters or more")
            try:
                rights = frozenset(Right(r) for r in rights_text.lower().split(","))
            except ValueError:
                raise TokenError(
                    f"line {number}: rights are append, follow or append,follow"
                ) from None
            prefix: Name = ()
            if len(fields) == 3:
                prefix = tuple(p for p in fields[2].split("/") if p)
                if any(p in (".", "..") for p in prefix):
                    raise TokenError(f"line {number}: bad prefix {fields[2]!r}")
            digest = _digest(token)
            if digest in grants:
                raise TokenError(f"line {number}: the token appears twice")
            grants[digest] = Grant(rights, prefix)
        if not grants:
            raise TokenError("no tokens: an empty token file would refuse everything")
        return cls(grants)

    @classmethod
    def load(cls, path: str) -> Tokens:
        with open(path, encoding="utf-8") as f:
            return cls.parse(f.read())

    def check(self, token: bytes | None, right: Right, name: Name | None) -> Access:
        """
        Whether ``token`` grants ``right`` on ``name`` (``None``: a name
        that is not valid, which only an unrestricted grant covers).
        """
        if not token:
            return Access.UNAUTHORIZED
        grant = self._grants.get(_digest(token))
        if grant is None:
            return Access.UNAUTHORIZED
        return Access.ALLOWED if grant.covers(right, name) else Access.FORBIDDEN


_QUERY_TOKEN = re.compile(rb"(?<=[?&]access_token=)[^&#]*")


def mask_token(uri: bytes) -> bytes:
    """``uri`` with the value of any ``access_token`` parameter hidden."""
    return _QUERY_TOKEN.sub(b"***", uri)
