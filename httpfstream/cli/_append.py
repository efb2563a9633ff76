"""
``httpfstream-append``: standard input appended to a resource as it is read
(`append_main`).
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import client
from ._common import make_client, tool_parser
from ._exits import APPEND_EXIT_CODES, EXIT_ERROR, EXIT_OFFSET, EXIT_OK, Exit
from ._progress import human_size
from ._run import Run, run_main

# (The namespace of the module this was before ``cli`` became a package.)
_log = Logger(namespace="httpfstream.cli")


class _InputFailed(Exception):
    """Standard input ended otherwise than at its end (a read error)."""


class _StdinToAppender(Protocol):
    """
    Standard input into an `client.Appender`, paused while it is full.

    ``ended`` fires on a real end of input (EOF), and fails if reading or
    appending what was read failed: input never ends silently.  Give
    `StandardIO` a ``stdout`` of its own (``/dev/null``): this protocol is
    not half-closeable, so that a read error reaches `connectionLost` with
    its reason instead of looking like an end of input.

    :ivar bytes_read: how many bytes were read (and handed to the appender).
    """

    def __init__(self, appender: client.Appender) -> None:
        self.appender = appender
        self.ended: Deferred[None] = Deferred()
        self.bytes_read = 0
        self._stopped = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.appender.register_producer(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return
        self.bytes_read += len(data)
        try:
            self.appender.write(data)
        except Exception as e:
            # Never let it escape: Twisted would log it and drop standard
            # input, which would look like its end.
            self._end(Failure(e))

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._stopped:
            return
        if reason is None or reason.check(net_error.ConnectionDone):
            self._end(None)
        elif self.appender.done:
            self._end(None)  # the session's end stopped us; it says why
        else:
            self._end(
                Failure(_InputFailed(f"reading standard input failed: {reason.value}"))
            )

    def stop(self) -> None:
        """Read no more (an interruption): what comes later is not appended."""
        if self._stopped:
            return
        self._stopped = True
        self.appender.unregister_producer()
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _end(self, failure: Failure | None) -> None:
        if self.ended.called:
            return
        if failure is not None:
            self.stop()
            self.ended.errback(failure)
        else:
            self._stopped = True
            self.ended.callback(None)


def _first(*ds: Deferred[Any]) -> Deferred[None]:
    """
    Fire as the first of ``ds`` does (its failure unwrapped, unlike a
    `DeferredList`'s `FirstError`); the others' failures are consumed.
    """
    first: Deferred[None] = Deferred()

    def succeeded(_: object) -> None:
        if not first.called:
            first.callback(None)

    def failed(failure: Failure) -> None:
        if not first.called:
            first.errback(failure)

    for d in ds:
        d.addCallbacks(succeeded, failed)
    return first


def append_main(argv: list[str] | None = None) -> NoReturn:
    """``httpfstream-append [-v] [--offset N | --new] [--retry] URL`` < data"""
    parser = tool_parser(
        "httpfstream-append",
        "Append standard input to a resource as it is read; exit once every"
        " byte is persisted.",
        APPEND_EXIT_CODES,
        data="stdin",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--offset",
        type=int,
        metavar="N",
        help="require the resource to hold exactly N bytes now (resuming)",
    )
    where.add_argument(
        "--new",
        action="store_true",
        help="refuse unless the resource is empty or absent (exit 5), instead of"
        " appending after the bytes it holds (say, a re-run job's log URL)",
    )
    args = parser.parse_args(argv)
    if args.offset is not None and args.offset < 0:
        parser.error("--offset must not be negative")
    # --new is the offset=0 precondition: 412 if the resource holds bytes.
    offset = 0 if args.new else args.offset

    async def main(reactor: Any, run: Run) -> int:
        from twisted.internet.stdio import StandardIO

        try:
            appender = await make_client(reactor, args).open_append(
                args.url, offset, retry=args.retry, give_up_after=args.retry_for
            )
        except client.OffsetMismatch as e:
            if not args.new or e.why:
                raise
            held = "" if e.size is None else f", it holds {e.size} bytes"
            raise Exit(
                EXIT_OFFSET,
                f"--new: the resource is not new{held} (412); append to another"
                " URL, or leave out --new to append after them",
            ) from None
        start = appender.size
        _log.info(
            "appending to {url}, which holds {size} bytes",
            url=args.url,
            size=start,
        )
        if start and offset is None:
            # Not asked for (--offset, --new): a re-run reusing a URL, say.
            print(
                f"httpfstream-append: the resource already holds {start} bytes;"
                " appending after them (--new refuses a resource that is not empty)",
                file=sys.stderr,
            )
        stdin = _StdinToAppender(appender)
        run.show_progress(
            args.progress,
            lambda: (
                f"sent {human_size(stdin.bytes_read)},"
                f" acknowledged {human_size(appender.size - start)}"
            ),
            lambda: appender.size - start,
            sys.stdin,
        )

        def on_shutdown() -> Deferred[object] | None:
            # Ctrl-C, SIGTERM: end the session as interrupted (not
            # complete); what was sent is persisted.
            stdin.stop()
            if appender.done:
                return None

            def unconfirmed(failure: Failure) -> None:
                print(
                    f"httpfstream-append: interrupted: {failure.getErrorMessage()}",
                    file=sys.stderr,
                )

            return appender.interrupt().addErrback(unconfirmed)

        reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
        devnull = os.open(os.devnull, os.O_WRONLY)
        # (mypy reads the Windows StandardIO's signature, without stdout.)
        StandardIO(stdin, stdout=devnull, reactor=reactor)  # type: ignore[call-arg]
        # Until standard input really ends, or the session does (an error).
        try:
            await _first(stdin.ended, appender.wait())
        except _InputFailed as e:
            # Not the end of the input: the resource must not look complete.
            await appender.interrupt().addErrback(lambda f: None)
            raise Exit(EXIT_ERROR, str(e)) from None
        except Exception:
            pass  # the session ended, or is ending: close() says how
        size = await appender.close()
        if size - start != stdin.bytes_read:
            raise Exit(
                EXIT_ERROR,
                f"read {stdin.bytes_read} bytes but the resource grew by"
                f" {size - start} (from {start} to {size})",
            )
        _log.info("done: {url} holds {size} bytes", url=args.url, size=size)
        return EXIT_OK

    run_main("httpfstream-append", args.verbose, main)
