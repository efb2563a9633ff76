"""
Resource names: from the path segments twisted.web hands us to a safe
relative path under the storage root (docs/PROTOCOL.md section 1).

This module does no I/O.  It refuses every name that could point outside
the root *syntactically*; whether a symbolic link on disk leads outside is
checked by the store, in its own thread, when it opens the file.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "STATE_FOLDER",
    "InvalidName",
    "Name",
    "names_folder",
    "parse_folder",
    "parse_name",
]

#: The folder under the storage root where the server keeps its own state
#: (section 9); no resource name may reach it.
STATE_FOLDER = ".httpfstream"

#: A validated resource name: its path segments, each non-empty and neither
#: ``.`` nor ``..``, with no ``/`` or NUL inside.
Name = tuple[str, ...]


class InvalidName(ValueError):
    """
    The URL path does not name a resource.  Writes answer ``400``, reads
    ``404``.
    """


def parse_name(segments: Sequence[bytes]) -> Name:
    """
    Turn twisted.web's ``request.postpath`` into a resource name.

    twisted.web has already percent-decoded each segment (and never
    normalises), so a segment may hold a ``/`` that came from ``%2F``; the
    name is the decoded path, so such a slash separates segments too.

    :param segments: the path below the mount point, one item per segment.
    :raises InvalidName: the name is empty, ends in ``/``, holds a NUL byte,
        an empty, ``.`` or ``..`` segment, is not UTF-8, or leads into the
        server's own state folder.
    """
    raw = b"/".join(segments)
    if not raw:
        raise InvalidName("empty resource name")
    if raw.endswith(b"/"):
        raise InvalidName("resource name ends in '/'")
    if b"\0" in raw:
        raise InvalidName("resource name contains a NUL byte")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName("resource name is not valid UTF-8") from None
    parts = tuple(text.split("/"))
    for part in parts:
        if part == "":
            raise InvalidName("resource name has an empty segment")
        if part in (".", ".."):
            raise InvalidName(f"resource name has a {part!r} segment")
    if parts[0] == STATE_FOLDER:
        raise InvalidName(f"{STATE_FOLDER}/ holds the server's own state")
    return parts


def names_folder(segments: Sequence[bytes]) -> bool:
    """
    Whether the path names a folder: it ends in ``/``, or is the mount
    point itself.
    """
    return not segments or segments[-1] == b""


def parse_folder(segments: Sequence[bytes]) -> Name:
    """
    Turn the path of a folder (`names_folder`) into its name: the segments
    before the trailing ``/``; ``()`` for the mount point itself.

    :raises InvalidName: as `parse_name` would for the same path without
        its trailing ``/``.
    """
    inside = list(segments[:-1]) if segments else []
    if not inside or inside == [b""]:
        return ()
    return parse_name(inside)
