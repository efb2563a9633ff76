"""
Reading the storage root's layout, for `store.FileStore` (in its worker
threads): whether a path stays inside the root, where a resource's
completion marker lives, what a name can reach in a folder, a folder's
listing (`Listing` of `Entry`) and the scan for resources to expire.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .names import STATE_FOLDER, Name

__all__ = [
    "Entry",
    "Listing",
    "inside",
    "is_complete",
    "list_folder",
    "marker",
    "older_than",
]


@dataclass(frozen=True)
class Entry:
    """One resource in a folder listing."""

    name: str
    size: int
    complete: bool
    #: When its bytes last changed, in seconds since the epoch.
    modified: float


@dataclass(frozen=True)
class Listing:
    """What a folder holds that a name can reach, each sorted by name."""

    resources: list[Entry]
    #: Sub-folders' names, each ending in ``/``.
    folders: list[str]


def inside(root: str, path: str) -> bool:
    """Whether ``path``, links followed, is ``root`` or under it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def marker(root: str, name: Name) -> str:
    """The path of the marker that says ``name`` is incomplete."""
    return os.path.join(root, STATE_FOLDER, "incomplete", *name)


def is_complete(root: str, name: Name) -> bool:
    """Whether the last append session of ``name`` ended well."""
    return not os.path.lexists(marker(root, name))


def _reachable(root: str, folder: Name, entry: os.DirEntry[str]) -> str | None:
    """
    ``"file"`` or ``"folder"`` if a name can reach ``entry`` (inside the
    root, symbolic links included; not the state folder; a name that
    `names.parse_name` takes), else ``None``.
    """
    if not folder and entry.name == STATE_FOLDER:
        return None
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if entry.is_symlink() and not inside(root, entry.path):
        return None
    try:
        if entry.is_file():
            return "file"
        if entry.is_dir():
            return "folder"
    except OSError:
        pass
    return None


def list_folder(root: str, folder: Name) -> Listing | None:
    """What ``folder`` holds, or ``None`` if there is no such folder."""
    path = os.path.join(root, *folder)
    if not inside(root, path) or not os.path.isdir(path):
        return None
    resources: list[Entry] = []
    folders: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            kind = _reachable(root, folder, entry)
            if kind == "folder":
                folders.append(entry.name + "/")
            elif kind == "file":
                try:
                    info = entry.stat()
                except OSError:
                    continue
                complete = is_complete(root, (*folder, entry.name))
                resources.append(
                    Entry(entry.name, info.st_size, complete, info.st_mtime)
                )
    resources.sort(key=lambda e: e.name)
    folders.sort()
    return Listing(resources, folders)


def older_than(root: str, seconds_since_epoch: float) -> list[Name]:
    """Every resource whose bytes last changed before that time."""
    found: list[Name] = []

    def walk(folder: Name) -> None:
        path = os.path.join(root, *folder)
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in entries:
            if entry.is_symlink():
                continue  # the link's target is not ours to expire
            kind = _reachable(root, folder, entry)
            if kind == "folder":
                walk((*folder, entry.name))
            elif kind == "file":
                try:
                    if entry.stat().st_mtime < seconds_since_epoch:
                        found.append((*folder, entry.name))
                except OSError:
                    continue

    walk(())
    return found
