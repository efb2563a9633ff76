"""
Running a tool's main on the reactor, with `twisted.internet.task.react`
(`run_main`), and what the main may ask of its run (`Run`).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from ._exits import EXIT_ERROR, EXIT_INTERRUPTED, explain
from ._progress import Progress, start_progress


class Run:
    """
    One run of a tool: the status it ends with, decided once (by `stop`,
    by what its main returns or raises, or by an interruption), and its
    progress line.

    :ivar prog: the tool's name, before its error messages.
    :ivar progress: the progress line of this run, if one is shown (at most
        one).
    """

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.progress: Progress | None = None
        # Fired with the exit status, once: what comes later is ignored.
        self._status: Deferred[int] = Deferred()

    def show_progress(
        self,
        asked: bool | None,
        status: Callable[[], str],
        count: Callable[[], int],
        data: Any,
    ) -> None:
        """
        Show the progress line if ``asked``, or by default where it cannot
        mix with ``data`` (see `start_progress`).
        """
        self.progress = start_progress(asked, status, count, data)

    def stop(self, status: int) -> None:
        """
        End the run with ``status`` (the reactor stops), unless it has one
        already: the first status decided is the one the process exits with.
        """
        if not self._status.called:
            self._status.callback(status)

    def _failed(self, e: Exception) -> None:
        """The main raised ``e``: say why, unless the run has its status."""
        self._stop_progress()
        if self._status.called:
            return
        failure = explain(e)
        if failure.message:
            print(f"{self.prog}: {failure.message}", file=sys.stderr)
        self.stop(failure.status)

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    async def _main(
        self, reactor: Any, main: Callable[[Any, Run], Awaitable[int]]
    ) -> NoReturn:
        """
        The main `task.react` runs: ``main``'s status, as a `SystemExit`
        (which `task.react` exits with).
        """
        # Registered before anything else (and before `task.react`'s own):
        # if the reactor begins to stop before `main` ends, we were
        # interrupted, whatever `main` then says.  The shutdown triggers
        # `main` registers still run before the reactor stops, and
        # `task.react` exits with the SystemExit's code whether or not its
        # own trigger has run.
        reactor.addSystemEventTrigger("before", "shutdown", self.stop, EXIT_INTERRUPTED)
        reactor.addSystemEventTrigger("after", "shutdown", self._stopped)
        Deferred.fromCoroutine(self._body(reactor, main))
        raise SystemExit(await self._status)

    async def _body(
        self, reactor: Any, main: Callable[[Any, Run], Awaitable[int]]
    ) -> None:
        try:
            self.stop(await main(reactor, self))
        except Exception as e:
            self._failed(e)
        finally:
            self._stop_progress()
            self.stop(EXIT_ERROR)  # (a BaseException: end all the same)

    def _stopped(self) -> None:
        """The reactor has stopped: the progress line ends, output is flushed."""
        self._stop_progress()
        sys.stdout.flush()


def run_main(
    prog: str,
    verbose: bool,
    main: Callable[[Any, Run], Awaitable[int]],
) -> NoReturn:
    """
    Run ``main(reactor, run)`` and exit with the status it returns, or
    the one it passes to ``run.stop``.  If the reactor stops first (Ctrl-C,
    SIGTERM), the shutdown triggers `main` registered have run and the
    status is `EXIT_INTERRUPTED`.  An error ``main`` raises is explained
    (`explain`) on standard error, with its status.
    """
    run = Run(prog)
    if verbose:
        _log_to_stderr(run)
    task.react(run._main, (main,))


#: What Twisted's factories log as each starts and stops (`Factory.noisy`):
#: Autobahn's WebSocket factory, treq's pool.  Nothing a user needs.
_FACTORY_NOISE = frozenset(
    {"Starting factory {factory!r}", "Stopping factory {factory!r}"}
)


def _log_to_stderr(run: Run) -> None:
    """
    Log (``-v``) to standard error, each line on a line of its own, but for
    factories starting and stopping (`_FACTORY_NOISE`).
    """
    text = textFileLogObserver(sys.stderr)

    def log(event: dict[str, Any]) -> None:
        if event.get("log_format") in _FACTORY_NOISE:
            return
        if run.progress is not None:
            run.progress.clear()  # a log line of its own, not after the status
        text(event)

    observer = FilteringLogObserver(
        cast(ILogObserver, log),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
