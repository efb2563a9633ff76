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
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, FirstError
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from . import __version__, client
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
EXIT_UNREACHABLE = 7  # could not connect to the server (or not as the URL says)
EXIT_DENIED = 8  # 401 or 403: no valid token, or not one for this
EXIT_PAST_END = 9  # 416: --offset is past the end of the resource
EXIT_INTERRUPTED = 130  # Ctrl-C

#: What each status means from ``httpfstream-append``; only these.
APPEND_EXIT_CODES = {
    EXIT_OK: "done: every byte read was persisted and the session ended"
    " cleanly (the resource is complete)",
    EXIT_ERROR: "another error (the message says which): the server refused"
    " (with its reason) or closed the appender (1009: too big, 1011: a write"
    " failed), or reading standard input failed",
    EXIT_USAGE: "bad arguments",
    EXIT_CONFLICT: "409: another appender holds the resource",
    EXIT_OFFSET: "412: the resource does not hold --offset bytes, or a resuming"
    " appender found bytes there that are not its own",
    EXIT_INCOMPLETE: "the server went away or the connection was lost (the"
    " resource is incomplete)",
    EXIT_UNREACHABLE: "the server could not be reached (within --retry-for with"
    " --retry), or not as the URL says: https:// to a plain-HTTP port, http:// to"
    " a TLS port, a certificate not trusted (--cafile)",
    EXIT_DENIED: "401/403: no valid token (--token), or not one for this",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM): what was sent is persisted,"
    " the resource is incomplete",
}

#: What each status means from ``httpfstream-follow``; only these.
FOLLOW_EXIT_CODES = {
    EXIT_OK: "done: the appender finished cleanly (or had), every byte received",
    EXIT_ERROR: "another error (the message says which, with the server's reason)",
    EXIT_USAGE: "bad arguments",
    EXIT_NOT_FOUND: "404: no such resource (--wait waits for it)",
    EXIT_INCOMPLETE: "incomplete: the appender was lost or interrupted and no new"
    " one finished the resource (within --retry-for), or the connection was lost",
    EXIT_UNREACHABLE: APPEND_EXIT_CODES[EXIT_UNREACHABLE],
    EXIT_DENIED: APPEND_EXIT_CODES[EXIT_DENIED],
    EXIT_PAST_END: "416: --offset is past the end of the resource",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM)",
}

#: Every status either tool may return.
EXIT_CODES = {**APPEND_EXIT_CODES, **FOLLOW_EXIT_CODES}


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
    if isinstance(e, client.HTTPError):
        return _refused(e)
    if isinstance(e, client.NotTLS):
        return _Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: use http:// for this port",
        )
    if isinstance(e, client.TLSExpected):
        return _Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: use https:// for this port",
        )
    if isinstance(e, client.UntrustedCertificate) and e.wrong_host:
        return _Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: name a host the certificate is for in the URL",
        )
    if isinstance(e, client.UntrustedCertificate):
        return _Exit(
            EXIT_UNREACHABLE,
            f"{e.message}: give --cafile the PEM file of the authority that signed it",
        )
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


def _refused(e: client.HTTPError) -> _Exit:
    """A refusal: its status, and the server's reason when it gave one."""
    said = f": {e.reason}" if e.reason else ""
    if isinstance(e, client.AccessDenied):
        return _Exit(
            EXIT_DENIED,
            f"access denied ({e.status}){said}; give a --token that allows it",
        )
    if isinstance(e, client.NotFound):
        return _Exit(EXIT_NOT_FOUND, f"no such resource (404){said}")
    if isinstance(e, client.AppenderConflict):
        return _Exit(EXIT_CONFLICT, f"another appender holds the resource (409){said}")
    if isinstance(e, client.OffsetMismatch):
        if e.why:
            return _Exit(EXIT_OFFSET, f"cannot resume (412): {e.why}")
        if e.reason:
            return _Exit(EXIT_OFFSET, f"offset does not match the resource (412){said}")
        size = "" if e.size is None else f": it holds {e.size} bytes"
        return _Exit(EXIT_OFFSET, f"offset does not match the resource (412){size}")
    if e.status == 416:
        return _Exit(EXIT_PAST_END, f"--offset is past the end (416){said}")
    return _Exit(EXIT_ERROR, f"the server refused: {e}")


def _epilog(codes: dict[int, str]) -> str:
    """The exit statuses, one a line (for a `RawDescriptionHelpFormatter`)."""
    lines = ["exit status:"]
    for code, text in codes.items():
        wrapped = textwrap.wrap(text, 70)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines.extend(f"       {more}" for more in wrapped[1:])
    return "\n".join(lines)


def _parser(
    prog: str, description: str, codes: dict[int, str]
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=_epilog(codes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the resource, e.g. http://localhost:8080/a.log")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show the progress line on stderr even when it is not a terminal",
    )
    shown.add_argument(
        "-q",
        "--quiet",
        dest="progress",
        action="store_false",
        help="no progress line (shown by default when stderr is a terminal)",
    )
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
        help="keep trying while the server cannot be reached at start-up, and"
        " reconnect and resume after a dropped connection or a server restart",
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


def _size(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """
    A one-line status on standard error, rewritten in place (``\\r``) at
    most `INTERVAL` times a second: what ``status()`` says, and the rate of
    ``count()`` over the last few seconds.

    :param stream: where to write (standard error).
    :param status: the words, e.g. ``received 1.5 MiB``.
    :param count: the bytes whose rate is shown.
    """

    #: Seconds between updates.
    INTERVAL = 0.25
    #: Seconds over which the rate is measured.
    WINDOW = 3.0

    def __init__(
        self, stream: Any, status: Callable[[], str], count: Callable[[], int]
    ) -> None:
        self._stream = stream
        self._status = status
        self._count = count
        self._samples: list[tuple[float, int]] = []
        self._loop = LoopingCall(self.show)
        self._width = 0
        self._tty = _isatty(stream)

    def start(self) -> None:
        self._loop.start(self.INTERVAL, now=True)

    def rate(self) -> float:
        """Bytes a second, over the last `WINDOW` seconds."""
        now, n = time.monotonic(), self._count()
        self._samples.append((now, n))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
            self._samples.pop(0)
        then, before = self._samples[0]
        return (n - before) / (now - then) if now > then else 0.0

    def show(self) -> None:
        line = f"{self._status()}, {_size(self.rate())}/s"
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self._write(f"\r{line}{' ' * pad}")

    def clear(self) -> None:
        """Take the line away (before another message)."""
        if self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def stop(self) -> None:
        """Show the last figures, and end the line."""
        if self._loop.running:
            self._loop.stop()
            self.show()
            self._write("\n")
            self._width = 0

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(text)
            self._stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _progress(
    args: argparse.Namespace, status: Callable[[], str], count: Callable[[], int]
) -> Progress | None:
    """A started `Progress`, if ``--progress``, or by default on a terminal."""
    wanted = args.progress if args.progress is not None else _isatty(sys.stderr)
    if not wanted:
        return None
    progress = Progress(sys.stderr, status, count)
    _shown.append(progress)
    progress.start()
    return progress


#: The progress line of this run, if one is shown (at most one).
_shown: list[Progress] = []


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
        text = textFileLogObserver(sys.stderr)

        def log(event: dict[str, Any]) -> None:
            for progress in _shown:
                progress.clear()  # a log line of its own, not after the status
            text(event)

        observer = FilteringLogObserver(
            cast(ILogObserver, log),
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
            for progress in _shown:
                progress.stop()
            if not stopping:
                failure = _explain(e)
                status[0] = failure.status
                if failure.message:
                    print(f"{prog}: {failure.message}", file=sys.stderr)
        finally:
            for progress in _shown:
                progress.stop()
            with contextlib.suppress(net_error.ReactorNotRunning):
                reactor.stop()

    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(body()))
    reactor.run()
    for progress in _shown:
        progress.stop()
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
        APPEND_EXIT_CODES,
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
        _progress(
            args,
            lambda: (
                f"sent {_size(stdin.bytes_read)},"
                f" acknowledged {_size(appender.size - start)}"
            ),
            lambda: appender.size - start,
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
        FOLLOW_EXIT_CODES,
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
        received = [0]
        _progress(args, lambda: f"received {_size(received[0])}", lambda: received[0])

        def write(data: bytes) -> None:
            received[0] += len(data)
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
