"""
Search (docs/PROTOCOL.md section 14): the lines of a resource whose text
matches a pattern, found in its bytes as a cursor reads them.  No HTTP and
no I/O: `Scanner.feed` takes the bytes in order, in pieces cut anywhere,
and answers what matched.

**A line** is the bytes up to and including a ``\\n``; a last line without
one is a line too.  Only its first `MAX_LINE` bytes are searched (and
returned): a resource that is one endless line costs a bounded buffer.

**Its text** is those bytes decoded as UTF-8 (an invalid sequence becomes
U+FFFD), with every escape sequence removed (`ESCAPE`, the grammar the log
page in the browser reads), then the final ``\\n`` and one ``\\r`` just
before it (CRLF endings).  Other carriage returns stay: what a progress
bar overwrote is still in the log, and a search finds it.

**A match** (`Pattern`): the text holds the pattern as a substring,
ignoring case by default (Unicode simple case folding, as RE2's ``(?i)``:
``é`` finds ``É``, ``ß`` finds ``ẞ``, but not ``ss``); or, with
``regex``, RE2 finds the pattern in the text (time linear in the text,
whatever the pattern; Python's backtracking ``re`` never sees a pattern
from a client).

**How it is fast, and still exact.**  Matching line by line in Python
costs microseconds a line; a block of whole lines is searched instead by
one RE2 call (which releases the GIL) over the block, and only the lines
it points at are decoded and matched one by one, exactly as defined above.
What the block search looks for is never narrower than the per-line match,
so it can point at lines that do not match (they are checked and passed)
but never skip one that does:

- a substring is searched in the raw bytes with any escape sequences
  allowed between its characters (``E`` in the source), so no block is
  rewritten at all; a block holding invalid UTF-8 inside the kind of
  sequence with a free-form payload (OSC and the strings) is made valid
  first (the block search cannot cross an invalid byte);
- a regular expression is searched in the block's texts joined by
  ``\\n`` (decoded, escapes removed, CRLF made LF: three passes in C),
  with ``(?m)`` so that ``^`` and ``$`` are a line's ends; a pattern that
  speaks of the ends of the whole text (``\\A``, ``\\z``, or turning
  ``m`` off) is matched on every line instead (slower, same answers).

Each hit's line is the one the hit starts in; the block search then goes
on from the next line, so a hit that spans lines (``\\s`` matches
``\\n``) costs one check, never a miss.  ``tests/test_search.py`` proves
the equality with a plain per-line reading on random bytes cut at random
places (hypothesis).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import re2

__all__ = [
    "DEFAULT_MATCHES",
    "ESCAPE",
    "MAX_LINE",
    "MAX_MATCHES",
    "Found",
    "Pattern",
    "PatternError",
    "Scanner",
]

#: The most bytes of one line that are searched and returned.
MAX_LINE = 1 << 20
#: How many matches a search returns unless told (``max``), and the most.
DEFAULT_MATCHES = 1_000
MAX_MATCHES = 100_000

#: An escape sequence, as the log page reads them (ECMA-48): a CSI
#: (``ESC [``, parameters, intermediates, final byte); an OSC (``ESC ]``)
#: up to BEL or ST (``ESC \\``); a DCS, SOS, PM or APC string up to ST;
#: any other ``ESC``, intermediates and final byte; each may be cut off by
#: the end of its line.  An ESC that starts none of these is removed
#: alone, so a text never holds an ESC.  Our own fixed pattern, linear
#: (every repetition stops at a byte the next part cannot start with); it
#: never crosses a ``\\n``.
ESCAPE = re.compile(
    rb"\x1b(?:"
    rb"\[[0-?]*[ -/]*(?:[@-~]|(?=\n)|\Z)"
    rb"|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    rb"|[PX^_][^\x1b\n]*(?:\x1b\\)?"
    rb"|[ -/]*(?:[0-~]|(?=\n)|\Z)"
    rb"|)"
)

# Escape sequences as the block search of a substring lets them stand
# between its characters: every sequence `ESCAPE` removes, and more (the
# cut-off forms are simply optional here).  Case never matters in them.
_E = (
    r"(?-i:\x1b(?:\[[0-?]*[ -/]*[@-~]?"
    r"|\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|[PX^_][^\x1b\n]*(?:\x1b\\)?"
    r"|[ -/]*[0-~]?))*"
)
# The introducers of the sequences with a free-form payload (OSC, DCS,
# SOS, PM, APC), which may hold bytes that are not UTF-8.  (RE2: without
# the GIL, and faster than five `in`s over bytes full of ESCs.)
_PAYLOADS = re2.compile(r"\x1b[\]PX^_]")
# The block search of a substring looks for at most this many of its
# characters (any text holding the whole holds them; the check does the
# rest): a bounded program, whatever the length asked.
_PREFIX = 64

_VALID = re2.compile(r"(?s).*")


class PatternError(ValueError):
    """The pattern cannot be searched for; the message says why."""


class Found(NamedTuple):
    """A matching line: its number, the offset of its first byte, its text."""

    line: int
    offset: int
    text: str


def _options(case: bool, literal: bool = False) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case
    options.literal = literal
    # Patterns come from clients: a bad one is their 400, not our log line.
    options.log_errors = False
    return options


def _speaks_of_text_ends(pattern: str) -> bool:
    """
    Whether ``pattern`` may use an anchor that means the end of the whole
    text even under ``(?m)``: ``\\A``, ``\\z``, or a flag group that turns
    ``m`` off.  Errs on the side of yes (then every line is matched alone).
    """
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            escaped = pattern[i + 1 : i + 2]
            if escaped in ("A", "z"):
                return True
            if escaped == "Q":  # literal text up to \E
                end = pattern.find("\\E", i + 2)
                if end < 0:
                    return False
                i = end + 2
                continue
            i += 2
            continue
        if pattern.startswith("(?", i):
            j = i + 2
            while j < n and pattern[j] in "imsU-":
                j += 1
            flags = pattern[i + 2 : j]
            if "-" in flags and "m" in flags[flags.index("-") :]:
                return True
            i = j
            continue
        i += 1
    return False


class Pattern:
    """
    What a search looks for (see the module docstring).

    :param text: the substring, or with ``regex`` the RE2 expression.
    :param regex: ``text`` is a regular expression.
    :param case: case matters.
    :raises PatternError: ``text`` is empty, or not a valid expression.
    """

    def __init__(self, text: str, *, regex: bool = False, case: bool = False) -> None:
        if not text:
            raise PatternError("the search text is empty")
        self.text, self.regex, self.case = text, regex, case
        try:
            self._line = re2.compile(text, _options(case, literal=not regex))
        except re2.error as e:
            raise PatternError(f"invalid regular expression: {_why(e)}") from None
        # A text never holds a newline or an ESC: such a substring matches
        # no line at all.
        self._never = not regex and ("\n" in text or "\x1b" in text)
        self._replace_invalid = "\ufffd" in text
        self._block: Any = None
        try:
            if regex:
                if not _speaks_of_text_ends(text):
                    self._block = re2.compile("(?m)" + text, _options(case))
            else:
                pieces = [re2.escape(c) for c in text[:_PREFIX]]
                self._block = re2.compile(_E.join(pieces), _options(case))
        except re2.error:
            self._block = None  # too big a program, say: every line alone

    def __repr__(self) -> str:
        kind = "regex" if self.regex else "substring"
        return f"<Pattern {kind} {self.text!r} case={self.case}>"

    def matches(self, text: str) -> bool:
        """Whether a line whose text is ``text`` matches."""
        return not self._never and self._line.search(text.encode()) is not None

    # -- what Scanner uses --------------------------------------------------

    def searched(self, block: bytes) -> bytes:
        """
        ``block`` (whole lines) as the block search reads it: valid UTF-8
        (invalid sequences made U+FFFD) where that matters, and for a
        regular expression the lines' texts joined by ``\\n``.  The number
        and order of the lines never change.
        """
        if self.regex:
            if not block.isascii() and _VALID.fullmatch(block) is None:
                block = block.decode("utf-8", "replace").encode()
            if b"\x1b" in block:
                block = ESCAPE.sub(b"", block)
            if b"\r\n" in block:
                block = block.replace(b"\r\n", b"\n")
            return block
        if (
            not block.isascii()
            and (self._replace_invalid or _PAYLOADS.search(block) is not None)
            and _VALID.fullmatch(block) is None
        ):
            return block.decode("utf-8", "replace").encode()
        return block

    def candidate(self, searched: bytes, pos: int) -> int:
        """
        Where in ``searched`` (from `searched`), at or after ``pos``, the
        next line that may match has a hit; -1 if none.
        """
        if self._never:
            return -1
        if self._block is None:
            return pos
        found = self._block.search(searched, pos)
        return -1 if found is None else found.start()

    def check(self, line: bytes) -> str | None:
        """
        The text of ``line`` (one line of `searched`: with its ``\\n``, if
        it has one) if it matches, else ``None``.
        """
        if self.regex:
            # Already a text, but for its newline.
            text = line[:-1] if line.endswith(b"\n") else line
        else:
            if not line.isascii():
                # Searched as it is unless that could hide a match: decode.
                line = line.decode("utf-8", "replace").encode()
            text = _text(line)
        if self._line.search(text) is None:
            return None
        return text.decode()


def _text(line: bytes) -> bytes:
    """The text of one line of valid UTF-8 (with its newline), as UTF-8."""
    if b"\x1b" in line:
        line = ESCAPE.sub(b"", line)
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    return line


def _why(error: Exception) -> str:
    message = error.args[0] if error.args else str(error)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return str(message)


class Scanner:
    """
    One search over bytes given in order (`feed`, then `close`).

    :param pattern: what to look for.
    :param line: the number of the first line it is given.
    :param offset: the offset (in the resource) of the first byte it is
        given, which starts that line.
    :param last: the number of the last line to search (``None``: all).
    :param most: the most matches to answer; one more ends the search
        with `truncated`.
    :param max_line: the most bytes of one line that are searched.

    :ivar matches: how many matched so far.
    :ivar truncated: whether a match past `most` was found (and left out).
    :ivar finished: whether it has searched all it will (``most`` passed,
        or ``last`` searched): later bytes are ignored.
    """

    def __init__(
        self,
        pattern: Pattern,
        *,
        line: int = 1,
        offset: int = 0,
        last: int | None = None,
        most: int = DEFAULT_MATCHES,
        max_line: int = MAX_LINE,
    ) -> None:
        self.pattern = pattern
        self.first = line
        self.last = last
        self.most = most
        self.max_line = max_line
        self.matches = 0
        self.truncated = False
        self.finished = last is not None and last < line
        # The number of the next line to search, and where it starts.
        self._line = line
        self._line_at = offset
        # The offset of the next byte fed.
        self._at = offset
        # The line being read, not whole yet.
        self._carry: list[bytes] = []
        self._carried = 0
        # In a line past max_line, already searched: skip to its end.
        self._skipping = False

    @property
    def lines(self) -> int:
        """How many lines were searched."""
        return self._line - self.first

    def feed(self, data: bytes) -> list[Found]:
        """Search ``data``, the next bytes; the lines that matched."""
        found: list[Found] = []
        at, n, pos = self._at, len(data), 0
        self._at += n
        while pos < n and not self.finished:
            if self._skipping:
                end = data.find(b"\n", pos)
                if end < 0:
                    break
                pos = end + 1
                self._skipping = False
                self._line_at = at + pos
                continue
            window = pos + self.max_line - self._carried
            if self._carried:
                end = data.find(b"\n", pos, window)
                if end >= 0 or window <= n:
                    # The carried line ends here, or passes max_line.
                    stop = end + 1 if end >= 0 else window
                    self._carry.append(data[pos:stop])
                    line = b"".join(self._carry)
                    self._carry, self._carried = [], 0
                    self._scan(line, self._line_at, found)
                    self._skipping = end < 0
                    pos = stop
                    self._line_at = at + pos
                else:
                    self._carry.append(data[pos:])
                    self._carried += n - pos
                    pos = n
                continue
            end = data.rfind(b"\n", pos, window)
            if end >= 0 or window <= n:
                # Whole lines (or the first max_line bytes of one).
                stop = end + 1 if end >= 0 else window
                self._scan(data[pos:stop], at + pos, found)
                self._skipping = end < 0
                pos = stop
                self._line_at = at + pos
            else:
                self._carry.append(data[pos:])
                self._carried = n - pos
                pos = n
        return found

    def close(self) -> list[Found]:
        """No more bytes: search the last line if it has no ``\\n``."""
        found: list[Found] = []
        if self._carried and not self.finished:
            line = b"".join(self._carry)
            self._scan(line, self._line_at, found)
        self._carry, self._carried = [], 0
        self.finished = True
        return found

    def _scan(self, block: bytes, at: int, found: list[Found]) -> None:
        """
        Search ``block``, whole lines starting at offset ``at`` (its last
        line without a newline only if it is cut at max_line or is the
        resource's last).
        """
        first = self._line
        if self.last is not None:
            count = block.count(b"\n") + (not block.endswith(b"\n"))
            if first + count - 1 >= self.last:
                count = self.last - first + 1
                block = block[: _after_lines(block, 0, count)]
                self.finished = True
        pattern = self.pattern
        searched = pattern.searched(block)
        same = searched is block
        size = len(searched)
        # The last place a line holds: its newline, or the end of the last
        # line if it has none (which may be empty: a line of escapes).
        limit = size - 1 if searched.endswith(b"\n") else size
        pos, line, line_pos = 0, first, 0
        raw_pos, raw_line = 0, first
        while pos <= limit:
            hit = pattern.candidate(searched, pos)
            if hit < 0 or hit > limit:
                break
            start = searched.rfind(b"\n", 0, hit) + 1
            end = searched.find(b"\n", hit) + 1 or size + 1
            line += searched.count(b"\n", line_pos, start)
            line_pos = start
            text = pattern.check(searched[start:end])
            if text is not None:
                if self.matches == self.most:
                    self.truncated = self.finished = True
                    self._line = line + 1
                    return
                self.matches += 1
                if same:
                    offset = start
                else:
                    raw_pos = _after_lines(block, raw_pos, line - raw_line)
                    raw_line, offset = line, raw_pos
                found.append(Found(line, at + offset, text))
            pos = end
        # The lines up to the last hit are counted: count the rest (the
        # number of lines is the same in ``searched`` as in ``block``).
        rest = searched.count(b"\n", line_pos) + (not searched.endswith(b"\n"))
        self._line = line + rest


def _after_lines(data: bytes, pos: int, count: int) -> int:
    """Where the line ``count`` lines after the one at ``pos`` starts."""
    for _ in range(count):
        pos = data.find(b"\n", pos) + 1
        if pos == 0:
            return len(data)
    return pos
