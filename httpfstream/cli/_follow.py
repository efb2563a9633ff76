"""
``httpfstream-follow``: a resource's bytes written to standard output as
they are appended (`follow_main`): from a byte, or a line (``--lines``),
with each line's time (``--timestamps``), or only the lines a search
matches (``--grep``, `._search`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from .. import client
from ._common import make_client, tool_parser
from ._exits import EXIT_INCOMPLETE, EXIT_OK, EXIT_PAST_END, FOLLOW_EXIT_CODES, Exit
from ._progress import human_size
from ._run import Run, run_main
from ._search import add_search_options, check_search_options, lines_count, search


def follow_main(argv: list[str] | None = None) -> NoReturn:
    """
    ``httpfstream-follow [-v] [--offset N | --lines N] [--timestamps]
    [--grep TEXT [--regex] [--case] [--max N]] [--retry] URL`` > data
    """
    parser = tool_parser(
        "httpfstream-follow",
        "Write a resource's bytes to standard output as they are appended;"
        " exit 0 when its appender finishes.",
        FOLLOW_EXIT_CODES,
        data="stdout",
        waits=True,
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if the resource does not exist yet, wait for it (up to --retry-for)",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--offset",
        type=int,
        metavar="N",
        help="start at byte N (negative: the last -N bytes)",
    )
    start.add_argument(
        "--lines",
        type=lines_count,
        metavar="N",
        help="start at the N-th last line, as tail -n N (0: at the end);"
        " +N: at line N, as tail -n +N. Only the start: --retry resumes at the"
        " byte it reached",
    )
    parser.add_argument(
        "--timestamps",
        action="store_true",
        help="print each line after the time its first byte was persisted"
        " (2026-12-07T10:15:02.125Z make: ..., UTC); not with --offset (start"
        " with --lines); --retry resumes at the line it was in, and prints"
        " each line once, stamped once",
    )
    add_search_options(parser)
    args = parser.parse_args(argv)
    if args.timestamps and args.offset is not None:
        parser.error(
            "--timestamps does not combine with --offset: the stamped lines"
            " are not the resource's bytes, so the server starts them at a"
            " line (use --lines)"
        )
    check_search_options(parser, args)
    out = sys.stdout.buffer

    async def main(reactor: Any, run: Run) -> int:
        received = [0]
        matches = [0]

        def status() -> str:
            if args.grep is None:
                return f"received {human_size(received[0])}"
            return f"{matches[0]} matching lines, {human_size(received[0])}"

        run.show_progress(args.progress, status, lambda: received[0], sys.stdout)
        progress = run.progress

        def write(data: bytes) -> None:
            received[0] += len(data)
            try:
                if progress is not None:
                    progress.before_output()
                out.write(data)
                out.flush()
                if progress is not None:
                    progress.after_output(data)
            except BrokenPipeError:
                # The reader went away (``| head``): nothing left to do.
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
                run.stop(EXIT_OK)

        hfs = make_client(reactor, args)
        if args.grep is not None:
            return await search(hfs, args, write, matches)
        try:
            result = await hfs.follow(
                args.url,
                write,
                args.offset or 0,
                retry=args.retry,
                wait=args.wait,
                give_up_after=args.retry_for,
                lines=args.lines,
                timestamps=args.timestamps,
            )
        except client.HTTPError as e:
            if e.status != 416 or args.lines is None:
                raise
            said = f": {e.reason}" if e.reason else ""
            raise Exit(EXIT_PAST_END, f"--lines is past the end (416){said}") from None
        if not result.complete:
            waited = (
                f"; no new appender finished it within --retry-for {args.retry_for:g}s"
                if args.retry
                else ""
            )
            raise Exit(
                EXIT_INCOMPLETE,
                f"incomplete: the appender was lost or interrupted"
                f" ({result.code}: {result.reason or 'no reason'}){waited};"
                f" you have every persisted byte up to offset {result.offset}",
            )
        return EXIT_OK

    run_main("httpfstream-follow", args.verbose, main)
