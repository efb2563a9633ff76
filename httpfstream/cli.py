"""
The command-line clients, ``httpfstream-append`` and ``httpfstream-follow``.

Both print nothing but errors unless given ``-v``, and exit with a status
that says how things ended (see `EXIT_CODES`, also in the README).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, FirstError
from twisted.internet.protocol import Protocol
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from . import client
from .protocol import GOING_AWAY

_log = Logger()

EXIT_OK = 0
EXIT_ERROR = 1  # anything else: an unexpected status, a refused write...
EXIT_USAGE = 2  # bad arguments (argparse)
EXIT_NOT_FOUND = 3  # 404
EXIT_CONFLICT = 4  # 409: another appender holds the resource
EXIT_OFFSET = 5  # 412: the resource does not hold --offset bytes
EXIT_INCOMPLETE = 6  # not all there: the appender was lost or interrupted
# (and no new one finished the resource), or our connection was lost
EXIT_UNREACHABLE = 7  # could not connect to the server
EXIT_DENIED = 8  # 401 or 403: no valid token, or not one for this
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES = {
    EXIT_OK: "done: the appender finished / every byte was persisted",
    EXIT_ERROR: "another error (the message says which)",
    EXIT_USAGE: "bad arguments",
    EXIT_NOT_FOUND: "404: no such resource",
    EXIT_CONFLICT: "409: another appender holds the resource",
    EXIT_OFFSET: "412: the resource does not hold --offset bytes",
    EXIT_INCOMPLETE: "incomplete: the appender was lost or interrupted and no new"
    " one finished the resource, or the connection was lost",
    EXIT_UNREACHABLE: "the server could not be reached",
    EXIT_DENIED: "401/403: no valid token (--token), or not one for this",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class _Exit(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _explain(e: BaseException) -> _Exit:
    """The exit status and message for an error from the client API."""
    while isinstance(e, FirstError) and e.subFailure.value is not None:
        e = e.subFailure.value  # from a DeferredList: what failed
    if isinstance(e, _Exit):
        return e
    if isinstance(e, client.AccessDenied):
        return _Exit(
            EXIT_DENIED, f"access denied ({e.status}): give a --token that allows it"
        )
    if isinstance(e, client.NotFound):
        return _Exit(EXIT_NOT_FOUND, "no such resource (404)")
    if isinstance(e, client.AppenderConflict):
        return _Exit(EXIT_CONFLICT, "another appender holds the resource (409)")
    if isinstance(e, client.OffsetMismatch):
        if e.why:
            return _Exit(EXIT_OFFSET, f"cannot resume (412): {e.why}")
        size = "" if e.size is None else f": it holds {e.size} bytes"
        return _Exit(EXIT_OFFSET, f"offset does not match the resource (412){size}")
    if isinstance(e, client.HTTPError):
        return _Exit(EXIT_ERROR, f"the server refused: {e}")
    if isinstance(e, client.AppendFailed) and e.code == GOING_AWAY:
        return _Exit(EXIT_INCOMPLETE, f"the server went away: {e}")
    if isinstance(e, client.AppendFailed):
        return _Exit(EXIT_ERROR, f"the server ended the append: {e}")
    if isinstance(e, client.ConnectionLost):
        return _Exit(EXIT_INCOMPLETE, f"connection lost: {e}")
    if isinstance(e, net_error.ConnectError | net_error.DNSLookupError):
        return _Exit(EXIT_UNREACHABLE, f"cannot reach the server: {e}")
    if isinstance(e, ValueError):
        return _Exit(EXIT_USAGE, str(e))
    return _Exit(EXIT_ERROR, f"{type(e).__name__}: {e}")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="exit status: "
        + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    parser.add_argument("url", help="the resource, e.g. http://localhost:8080/a.log")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    parser.add_argument(
        "--token",
        default=os.environ.get("HTTPFSTREAM_TOKEN"),
        help="bearer token for a server with access control"
        " (default: $HTTPFSTREAM_TOKEN)",
    )
    parser.add_argument(
        "--cafile",
        help="PEM file of the certificate authority to trust for https:// URLs",
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="reconnect and resume after a dropped connection or a server restart",
    )
    parser.add_argument(
        "--retry-for",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="how long --retry (and --wait) keep trying before giving up"
        " (default: 300)",
    )
    return parser


def _seconds(text: str) -> float:
    """A positive number of seconds (an ``argparse`` type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _client(reactor: Any, args: argparse.Namespace) -> client.Client:
    """
    The one `client.Client` of a run: ``--token``, and ``--cafile`` as the
    authority it trusts for whatever host the URL names.
    """
    return client.Client(reactor, token=args.token, trust_root=args.cafile or None)


def _run(
    prog: str,
    verbose: bool,
    main: Callable[[Any, Callable[[int], None]], Awaitable[int]],
) -> NoReturn:
    """
    Run ``main(reactor, stop)`` and exit with the status it returns, or
    the one it passes to ``stop``.  If the reactor stops first (Ctrl-C,
    SIGTERM), the shutdown triggers `main` registered have run and the
    status is `EXIT_INTERRUPTED`.
    """
    from twisted.internet import reactor

    if verbose:
        observer = FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
        )
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    status = [EXIT_INTERRUPTED]
    # Set once the reactor begins to stop; if that happens before `main`
    # ends, we were interrupted, whatever `main` then says.
    stopping: list[bool] = []
    reactor.addSystemEventTrigger("before", "shutdown", stopping.append, True)

    def stop(code: int) -> None:
        if not stopping:
            status[0] = code
        with contextlib.suppress(net_error.ReactorNotRunning):
            reactor.stop()

    async def body() -> None:
        try:
            code = await main(reactor, stop)
            if not stopping:
                status[0] = code
        except Exception as e:
            if not stopping:
                failure = _explain(e)
                status[0] = failure.status
                if failure.message:
                    print(f"{prog}: {failure.message}", file=sys.stderr)
        finally:
            with contextlib.suppress(net_error.ReactorNotRunning):
                reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(body()))
    reactor.run()
    sys.stdout.flush()
    sys.exit(status[0])


# -- httpfstream-append -----------------------------------------------------


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
    """``httpfstream-append [-v] [--offset N] [--retry] URL`` < data"""
    parser = _parser(
        "httpfstream-append",
        "Append standard input to a resource as it is read; exit once every"
        " byte is persisted.",
    )
    parser.add_argument(
        "--offset",
        type=int,
        help="require the resource to hold exactly N bytes now (resuming)",
    )
    args = parser.parse_args(argv)
    if args.offset is not None and args.offset < 0:
        parser.error("--offset must not be negative")

    async def main(reactor: Any, stop: Callable[[int], None]) -> int:
        from twisted.internet.stdio import StandardIO

        appender = await _client(reactor, args).open_append(
            args.url, args.offset, retry=args.retry, give_up_after=args.retry_for
        )
        start = appender.size
        _log.info(
            "appending to {url}, which holds {size} bytes",
            url=args.url,
            size=start,
        )
        stdin = _StdinToAppender(appender)

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
            raise _Exit(EXIT_ERROR, str(e)) from None
        except Exception:
            pass  # the session ended, or is ending: close() says how
        size = await appender.close()
        if size - start != stdin.bytes_read:
            raise _Exit(
                EXIT_ERROR,
                f"read {stdin.bytes_read} bytes but the resource grew by"
                f" {size - start} (from {start} to {size})",
            )
        _log.info("done: {url} holds {size} bytes", url=args.url, size=size)
        return EXIT_OK

    _run("httpfstream-append", args.verbose, main)


# -- httpfstream-follow -----------------------------------------------------


def follow_main(argv: list[str] | None = None) -> NoReturn:
    """``httpfstream-follow [-v] [--offset N] [--retry] URL`` > data"""
    parser = _parser(
        "httpfstream-follow",
        "Write a resource's bytes to standard output as they are appended;"
        " exit 0 when its appender finishes.",
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

    async def main(reactor: Any, stop: Callable[[int], None]) -> int:
        def write(data: bytes) -> None:
            try:
                out.write(data)
                out.flush()
            except BrokenPipeError:
                # The reader went away (``| head``): nothing left to do.
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
                stop(EXIT_OK)

        result = await _client(reactor, args).follow(
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
            raise _Exit(
                EXIT_INCOMPLETE,
                f"incomplete: the appender was lost or interrupted"
                f" ({result.code}: {result.reason or 'no reason'}){waited};"
                f" you have every persisted byte up to offset {result.offset}",
            )
        return EXIT_OK

    _run("httpfstream-follow", args.verbose, main)
