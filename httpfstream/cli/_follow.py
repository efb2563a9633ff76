"""
``httpfstream-follow``: a resource's bytes written to standard output as
they are appended (`follow_main`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from ._common import make_client, tool_parser
from ._exits import EXIT_INCOMPLETE, EXIT_OK, FOLLOW_EXIT_CODES, Exit
from ._progress import human_size
from ._run import Run, run_main


def follow_main(argv: list[str] | None = None) -> NoReturn:
    """``httpfstream-follow [-v] [--offset N] [--retry] URL`` > data"""
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
    parser.add_argument(
        "--offset",
        type=int,
        default=0,
        help="start at byte N (negative: the last -N bytes)",
    )
    args = parser.parse_args(argv)
    out = sys.stdout.buffer

    async def main(reactor: Any, run: Run) -> int:
        received = [0]
        run.show_progress(
            args.progress,
            lambda: f"received {human_size(received[0])}",
            lambda: received[0],
            sys.stdout,
        )
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

        result = await make_client(reactor, args).follow(
            args.url,
            write,
            args.offset,
            retry=args.retry,
            wait=args.wait,
            give_up_after=args.retry_for,
        )
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
