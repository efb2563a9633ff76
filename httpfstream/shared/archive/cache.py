"""
`Cache`: what the archive knows of the resource files on local disk, kept
in the reactor, with no I/O: their sizes, which are *safe* (the bucket
holds exactly them: `local.Local.safe`), which are open (*pinned*), and
the order they were last used in.  `victims` chooses what to evict to keep
the files within the budget (``--cache-size``): least recently used first,
never a file that is open or not yet safely in the bucket.  So the budget
bounds what the archive can take back; pending and open files can go past
it, and `unevictable` says by how much.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from ...core.names import Name

__all__ = ["Cache"]


@dataclass
class _Entry:
    size: int
    safe: bool


class Cache:
    """
    :param budget: the most bytes of resource files kept on local disk
        once evicting can bring them there (0: no limit).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        # Least recently used first.
        self._entries: OrderedDict[Name, _Entry] = OrderedDict()
        self._pins: Counter[Name] = Counter()
        self._used = 0

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def used(self) -> int:
        """Bytes of the resource files known on local disk."""
        return self._used

    @property
    def unevictable(self) -> int:
        """Bytes of files that cannot be evicted now (open or pending)."""
        return sum(
            e.size for n, e in self._entries.items() if not e.safe or self._pins[n]
        )

    def size(self, name: Name) -> int | None:
        entry = self._entries.get(name)
        return None if entry is None else entry.size

    def safe(self, name: Name) -> bool:
        entry = self._entries.get(name)
        return entry is not None and entry.safe

    def names(self) -> list[Name]:
        """Every name, least recently used first."""
        return list(self._entries)

    def add(self, name: Name, size: int, safe: bool) -> None:
        """``name`` is on local disk (most recently used now)."""
        self.drop(name)
        self._entries[name] = _Entry(size, safe)
        self._used += size

    def touch(self, name: Name) -> None:
        """``name`` was used now."""
        if name in self._entries:
            self._entries.move_to_end(name)

    def grew(self, name: Name, added: int) -> None:
        """``added`` bytes were appended to ``name``: it is pending now."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.size += added
            entry.safe = False
            self._used += added

    def pending(self, name: Name) -> None:
        """``name`` may differ from what the bucket holds (a session began)."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.safe = False

    def archived(self, name: Name, size: int) -> None:
        """The bucket holds ``name``'s first ``size`` bytes: safe if that is all."""
        entry = self._entries.get(name)
        if entry is not None and entry.size == size:
            entry.safe = True

    def drop(self, name: Name) -> None:
        """``name`` is not on local disk any more (or is being removed)."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._used -= entry.size

    def pin(self, name: Name) -> None:
        """``name``'s file is open: never evicted until the matching `unpin`."""
        self._pins[name] += 1

    def unpin(self, name: Name) -> None:
        self._pins[name] -= 1
        if self._pins[name] <= 0:
            del self._pins[name]

    def pinned(self, name: Name) -> bool:
        return self._pins[name] > 0

    def victims(self, room: int = 0) -> list[Name]:
        """
        What to evict, least recently used first, so that the files and
        ``room`` more bytes fit the budget (as near as the safe, unpinned
        files allow).
        """
        if not self.budget:
            return []
        over = self._used + room - self.budget
        chosen: list[Name] = []
        for name, entry in self._entries.items():
            if over <= 0:
                break
            if entry.safe and not self._pins[name]:
                chosen.append(name)
                over -= entry.size
        return chosen
