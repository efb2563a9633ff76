"""
Searching a resource's lines (PROTOCOL.md section 14): a GET with
``grep=``, whose answer is NDJSON, one object per matching line
(`Match`) and a last ``done`` object; with ``follow=1`` the search goes on
over lines appended later, until the appender ends.

One search may take several requests, each asking from a line on
(``lines=K``), so that no match is handed on twice:

- a page the server cut at ``max`` matches (``truncated``) is followed by
  the next, from the line after the last match, until the caller's
  ``max_matches`` (or every match: pages of `PAGE` matches);
- with ``retry``, a dropped connection or a server restart is resumed
  after the last match handed on, and a resource that is not complete
  (its appender was lost) is waited for as a follow waits, and searched
  on from the last line searched once a new appender comes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import treq
from twisted.logger import Logger
from twisted.web.client import ResponseFailed

from ..protocol import ACTIVE, COMPLETE_HEADER, FOLLOW, LINE, Param
from ._backoff import Backoff, retryable
from ._connections import Connections, as_dropped, discard_body, response_headers
from ._errors import (
    ACTIVE_YES,
    DROPPED,
    ConnectionLost,
    NotFound,
    SearchUnsupported,
    http_error,
)
from ._position import lines_param
from ._urls import YES, target

_log = Logger()

#: The most matches the server returns for one request (more is ``400``).
PAGE = 100_000
#: The content type of a search's answer.
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Match:
    """
    One matching line.

    :ivar line: its number (lines are numbered from 1).
    :ivar offset: the byte offset of its first byte in the resource.
    :ivar text: the line as text: decoded as UTF-8 (invalid bytes
        replaced), without escape sequences (ANSI colours) or its newline.
    """

    line: int
    offset: int
    text: str


@dataclass(frozen=True)
class SearchResult:
    """
    How a search ended.

    :ivar matches: how many matches were handed on.
    :ivar truncated: it stopped at ``max_matches`` and more matches were
        left (also said when a search was cut right after its last match,
        before the server could say whether more were left).
    :ivar lines: how many lines were searched.
    :ivar complete: the resource is complete (as for `FollowResult`): its
        appender finished, or it had; ``False`` if its appender was lost
        or interrupted and, with ``retry``, no new one finished it within
        ``give_up_after``.
    """

    matches: int
    truncated: bool
    lines: int
    complete: bool


@dataclass
class _Page:
    """What one request's answer said."""

    first: int | None
    live: bool
    complete: bool
    done: dict[str, Any] | None = None

    def says_complete(self) -> bool:
        """
        Whether the resource is complete: as the ``done`` object says (with
        ``follow=1``), else as the response's ``Httpfstream-Complete`` did.
        """
        if self.done is not None and "complete" in self.done:
            return bool(self.done["complete"])
        return self.complete


class _Search:
    """One search's progress across its requests."""

    def __init__(self, lines: int | None, max_matches: int | None) -> None:
        self._lines = lines
        self._max = max_matches
        # The line the next request starts at; ``None``: as asked.
        self.next: int | None = None
        self.first: int | None = None
        self.last_match = 0
        self.found = 0
        self.searched_to = 0
        #: The last request's answer (``None`` before the first).
        self.page: _Page | None = None

    def enough(self) -> bool:
        """Whether ``max_matches`` were handed on."""
        return self._max is not None and self.found >= self._max

    def params(self) -> dict[Param, object]:
        left = PAGE if self._max is None else min(PAGE, self._max - self.found)
        if self.next is not None:
            at: object = self.next
        elif self._lines is not None:
            at = lines_param(self._lines)
        else:
            at = None
        return {Param.LINES: at, Param.MAX: left}

    def page_first(self, headers: dict[str, str]) -> int | None:
        """The first line a response searches (``Httpfstream-Line``)."""
        given = headers.get(LINE.lower())
        if given is not None and given.isdigit():
            first = int(given)
        elif self.next is not None:
            first = self.next
        elif self._lines is None or self._lines > 0:
            first = self._lines or 1
        else:
            return None  # the N-th last line: the server did not say
        if self.first is None:
            self.first = first
        return first

    def matched(self, found: dict[str, Any]) -> Match | None:
        """A match, or ``None`` for one handed on already (see `_one_page`)."""
        match = Match(int(found["line"]), int(found["offset"]), str(found["text"]))
        if match.line <= self.last_match:
            return None
        self.last_match = match.line
        self.searched_to = max(self.searched_to, match.line)
        self.found += 1
        return match

    def ended(self, page: _Page) -> None:
        """A page ended with its ``done`` object: where the next one starts."""
        assert page.done is not None
        searched = int(page.done.get("lines", 0))
        if page.first is not None:
            self.searched_to = max(self.searched_to, page.first + searched - 1)
        if page.done.get("truncated"):
            # Stopped at ``max``: what follows the last match is unsearched.
            self.next = self.last_match + 1
        elif page.first is not None:
            # The last line searched again: it may have been cut short (a
            # last line without its newline) and go on later.
            self.next = max(self.last_match + 1, page.first + max(searched - 1, 0))
        else:
            self.next = self.last_match + 1 if self.last_match else None

    def cut(self, page: _Page | None) -> None:
        """A page ended without its ``done`` object: resume after the last match."""
        start = page.first if page is not None else None
        if self.last_match or start is not None:
            self.next = max(self.last_match + 1, start or 0)

    def result(self, complete: bool | None = None) -> SearchResult:
        """
        The search's result, after its last page (``complete`` as that
        page says, unless given).
        """
        page = self.page
        done = page.done if page is not None else None
        if complete is None:
            complete = page.says_complete() if page is not None else True
        truncated = bool(done.get("truncated")) if done else self.enough()
        lines = max(0, self.searched_to - (self.first or 1) + 1)
        return SearchResult(self.found, truncated and self.enough(), lines, complete)


class _Failed(Exception):
    """A request of the search failed; ``alive``: it handed matches on."""

    def __init__(self, error: BaseException, alive: bool) -> None:
        self.error, self.alive = error, alive


class _NotFinished(Exception):
    """The resource is not complete; the search waits for an appender."""


async def grep(
    connections: Connections,
    url: str,
    text: str,
    on_match: Callable[[Match], object],
    regex: bool,
    case: bool,
    lines: int | None,
    max_matches: int | None,
    follow: bool,
    retry: bool,
    give_up_after: float,
    wait: bool,
) -> SearchResult:
    """`Client.grep`, which documents the parameters."""
    search = _Search(lines, max_matches)
    asked: dict[Param, object] = {
        Param.GREP: text,
        Param.REGEX: YES if regex else None,
        Param.CASE: YES if case else None,
        Param.FOLLOW: YES if follow else None,
        Param.OFFSET: None,
    }
    backoff = Backoff(connections.reactor, give_up_after)
    while True:
        if search.enough():
            return search.result()
        before = search.found
        try:
            page = await _one_page(connections, url, asked, search, on_match)
        except _Failed as f:
            waiting = wait and isinstance(f.error, NotFound)
            if not waiting and (not retry or not retryable(f.error)):
                raise f.error from None
            if f.alive:
                backoff.reset()
            await backoff.wait(f.error)
            continue
        assert page.done is not None
        if page.done.get("truncated") and not search.enough():
            if search.found == before:
                # A whole page of repeats: the next would be the same.
                raise SearchUnsupported(
                    "the server does not search from the line asked for"
                    f" (lines={search.next}): no page would bring new matches"
                )
            backoff.reset()
            continue  # the next page
        if page.says_complete() or search.enough() or not (retry and follow):
            return search.result()
        # Not finished yet: wait for a new appender, and search on.
        if page.live:
            backoff.reset()
        try:
            await backoff.wait(_NotFinished(f"{url} is not complete"))
        except _NotFinished:
            _log.info(
                "no appender came back within {seconds}s: {url} is not complete",
                seconds=give_up_after,
                url=url,
            )
            return search.result(complete=False)


async def _one_page(
    connections: Connections,
    url: str,
    asked: dict[Param, object],
    search: _Search,
    on_match: Callable[[Match], object],
) -> _Page:
    """One request of the search: its matches handed on, its ``done`` read."""
    where = target(url, {**asked, **search.params()})
    try:
        response = await connections.get(where, FOLLOW, unbuffered=True)
    except Exception as e:
        raise _Failed(as_dropped(e), False) from None
    headers = response_headers(response)
    if response.code != 200:
        body = await treq.content(response)
        refusal = http_error(response.code, response.phrase.decode(), headers, body)
        raise _Failed(refusal, False)
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != NDJSON:
        discard_body(response)
        raise _Failed(
            SearchUnsupported(
                f"the server answered a search with {kind or 'no content type'},"
                f" not {NDJSON}: it does not search (PROTOCOL.md section 14)"
            ),
            False,
        )
    page = search.page = _Page(
        first=search.page_first(headers),
        live=headers.get(ACTIVE.lower()) == ACTIVE_YES,
        complete=headers.get(COMPLETE_HEADER.lower()) != "0",
    )
    found = search.found
    # The part of an object whose newline has not come yet.
    buffer = bytearray()

    def one(line: bytes) -> None:
        if not line.strip():
            return
        try:
            item = json.loads(line)
        except ValueError:
            raise SearchUnsupported(
                f"the server's answer to a search is not NDJSON: {line[:80]!r}"
            ) from None
        if item.get("done"):
            page.done = item
        elif page.done is None:
            # Matches come in order: one at or before the last handed on
            # is a repeat (from a server that searched from further back
            # than the ``lines=`` asked for), never handed on twice.
            match = search.matched(item)
            if match is not None:
                on_match(match)

    def received(data: bytes) -> None:
        at = 0
        while (newline := data.find(b"\n", at)) >= 0:
            buffer.extend(data[at:newline])
            line = bytes(buffer)
            buffer.clear()
            one(line)
            at = newline + 1
        buffer.extend(data[at:])

    def alive() -> bool:
        # It got somewhere: matches, or an appender followed for a while.
        return page.live or search.found > found

    try:
        await treq.collect(response, received)
        one(bytes(buffer))  # a last object without its newline
    except ResponseFailed as e:
        search.cut(page)
        raise _Failed(as_dropped(e), alive()) from None
    except SearchUnsupported as e:
        raise _Failed(e, False) from None
    if page.done is None:
        # The answer ended without its last object: cut off.
        search.cut(page)
        lost = ConnectionLost(DROPPED, "the search's answer ended before its end")
        raise _Failed(lost, alive())
    search.ended(page)
    return page
