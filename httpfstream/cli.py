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
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from . import client

_log = Logger()

EXIT_OK = 0
EXIT_ERROR = 1  # anything else: an unexpected status, a refused write...
EXIT_USAGE = 2  # bad arguments (argparse)
EXIT_NOT_FOUND = 3  # 404
EXIT_CONFLICT = 4  # 409: another appender holds the resource
EXIT_OFFSET = 5  # 412: the resource does not hold --offset bytes
EXIT_LOST = 6  # the appender was lost (4000), or our connection was
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
    EXIT_LOST: "the appender (or the connection) was lost",
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
        size = "" if e.size is None else f": it holds {e.size} bytes"
        return _Exit(EXIT_OFFSET, f"offset does not match the resource (412){size}")
    if isinstance(e, client.HTTPError):
        return _Exit(EXIT_ERROR, f"the server refused: {e}")
    if isinstance(e, client.AppendFailed):
        return _Exit(EXIT_ERROR, f"the server ended the append: {e}")
    if isinstance(e, client.ConnectionLost):
        return _Exit(EXIT_LOST, f"connection lost: {e}")
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
    return parser


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


@implementer(IHalfCloseableProtocol)
class _StdinToAppender(Protocol):
    """Standard input into an `client.Appender`, paused while it is full."""

    def __init__(self, appender: client.Appender) -> None:
        self.appender = appender
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.appender.register_producer(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        self.appender.write(data)

    def readConnectionLost(self) -> None:
        if not self.ended.called:
            self.ended.callback(None)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: object = None) -> None:
        self.readConnectionLost()


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
            args.url, args.offset, retry=args.retry
        )
        _log.info(
            "appending to {url}, which holds {size} bytes",
            url=args.url,
            size=appender.size,
        )
        stdin = _StdinToAppender(appender)

        def on_shutdown() -> Deferred[object] | None:
            # Ctrl-C: end the session cleanly, so what was sent persists.
            if appender.done:
                return None
            return appender.close().addErrback(lambda f: None)

        reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
        StandardIO(stdin, reactor=reactor)
        # Until standard input ends, or the session does (an error).
        ends: list[Deferred[Any]] = [stdin.ended, appender.wait()]
        await DeferredList(
            ends, fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True
        )
        size = await appender.close()
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
        help="if the resource does not exist yet, wait for it (up to 5 minutes)",
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
            args.url, write, args.offset, retry=args.retry, wait=args.wait
        )
        if not result.complete:
            raise _Exit(
                EXIT_LOST,
                f"the appender was lost ({result.code}); you have every"
                f" persisted byte up to offset {result.offset}",
            )
        return EXIT_OK

    _run("httpfstream-follow", args.verbose, main)
