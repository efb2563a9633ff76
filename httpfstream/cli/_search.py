"""
``httpfstream-follow --grep``: the server's search of a resource's lines
(PROTOCOL.md section 14), each matching line printed as ``N:text`` (its
number, a colon and its text, as ``grep -n``), live while the resource is;
and ``--lines``, how a line to start at is read from the command line.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from .. import client
from ._exits import (
    EXIT_INCOMPLETE,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_PAST_END,
    EXIT_USAGE,
    Exit,
)

_log = Logger(namespace="httpfstream.cli")

_COUNT = re.compile(r"([+-]?)([0-9]{1,18})")


def lines_count(text: str) -> int:
    """
    ``--lines`` as ``tail -n`` reads it (an ``argparse`` type): ``N`` (or
    ``-N``), the last N lines, as the client API's ``lines=-N``; ``+N``,
    from line N (``+0`` is line 1, as for ``tail``).
    """
    found = _COUNT.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"not a number of lines: {text!r} (N for the last N lines, +N to"
            " start at line N)"
        )
    sign, digits = found.groups()
    n = int(digits)
    return max(n, 1) if sign == "+" else -n


def positive(text: str) -> int:
    """A whole number of at least 1 (an ``argparse`` type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """``--grep`` and the options that shape it."""
    search = parser.add_argument_group(
        "search",
        "The server searches the resource's lines (their text: decoded as\n"
        "UTF-8, without colour escapes or newline) and sends the matching\n"
        "ones, live while an appender holds the resource; from --lines on,\n"
        "if given.",
    )
    search.add_argument(
        "--grep",
        metavar="TEXT",
        help="print only the lines that hold TEXT (in any case), each as"
        " N:text (its line number, a colon, its text, as grep -n); exit 0 if"
        " a line matched, 10 if none did",
    )
    search.add_argument(
        "--regex",
        action="store_true",
        help="TEXT is a regular expression (RE2 syntax: no backreferences)",
    )
    search.add_argument("--case", action="store_true", help="match case-sensitively")
    search.add_argument(
        "--max",
        type=positive,
        metavar="N",
        help="stop after N matching lines (default: print every one)",
    )


def check_search_options(parser: argparse.ArgumentParser, args: Any) -> None:
    """What does not combine with ``--grep``, or needs it: usage errors."""
    if args.grep is None:
        alone = [o for o in ("regex", "case", "max") if getattr(args, o)]
        if alone:
            parser.error(f"--{alone[0]} shapes a search: give --grep TEXT too")
        return
    if not args.grep:
        parser.error("--grep: an empty TEXT would match every line")
    if args.offset is not None:
        parser.error(
            "--grep does not combine with --offset: a search starts at a line"
            " (use --lines)"
        )
    if args.timestamps:
        parser.error(
            "--grep does not combine with --timestamps: a match is printed as N:text"
        )


async def search(
    hfs: client.Client,
    args: Any,
    write: Callable[[bytes], None],
    printed: list[int],
) -> int:
    """
    Run ``--grep``: each match to ``write``, counted in ``printed[0]``;
    the exit status.
    """

    def matched(match: client.Match) -> None:
        printed[0] += 1
        write(f"{match.line}:{match.text}\n".encode("utf-8", "replace"))

    try:
        result = await hfs.grep(
            args.url,
            args.grep,
            matched,
            regex=args.regex,
            case=args.case,
            lines=args.lines,
            max_matches=args.max,
            retry=args.retry,
            give_up_after=args.retry_for,
            wait=args.wait,
        )
    except client.HTTPError as e:
        said = f": {e.reason}" if e.reason else ""
        if e.status == 416:
            raise Exit(EXIT_PAST_END, f"--lines is past the end (416){said}") from None
        if e.status != 400:
            raise
        raise Exit(
            EXIT_USAGE, f"the server refused the search ({e.status}){said}"
        ) from None
    _log.info(
        "searched {lines} lines: {matches} matched",
        lines=result.lines,
        matches=result.matches,
    )
    if args.max is not None and result.matches >= args.max:
        return EXIT_OK  # as many as asked for: the rest does not matter
    if not result.complete:
        waited = (
            f"; no new appender finished it within --retry-for {args.retry_for:g}s"
            if args.retry
            else ""
        )
        raise Exit(
            EXIT_INCOMPLETE,
            f"incomplete: the appender was lost or interrupted{waited};"
            f" every persisted line was searched, {result.matches} matched",
        )
    return EXIT_OK if result.matches else EXIT_NO_MATCH
