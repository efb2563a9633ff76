"""
The progress line: `Progress`, and `human_size`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall


def human_size(n: float) -> str:
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

    When the tool's output goes to the same terminal (``shares``), the line
    is cleared before each write of output (`before_output`) and not drawn
    while that output has left the cursor in the middle of a line
    (`after_output`), so output never lands after it nor under it.

    :param stream: where to write (standard error).
    :param status: the words, e.g. ``received 1.5 MiB``.
    :param count: the bytes whose rate is shown.
    :param shares: the tool's output is on a terminal too.
    """

    #: Seconds between updates.
    INTERVAL = 0.25
    #: Seconds over which the rate is measured.
    WINDOW = 3.0

    def __init__(
        self,
        stream: Any,
        status: Callable[[], str],
        count: Callable[[], int],
        shares: bool = False,
    ) -> None:
        self._stream = stream
        self._status = status
        self._count = count
        self._samples: list[tuple[float, int]] = []
        self._loop = LoopingCall(self.show)
        self._width = 0
        self._shares = shares
        # Output left the cursor in the middle of a line: do not draw.
        self._held = False

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
        if self._held:
            return
        line = f"{self._status()}, {human_size(self.rate())}/s"
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self._write(f"\r{line}{' ' * pad}")

    def clear(self) -> None:
        """Take the line away (before another message)."""
        if self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0

    def before_output(self) -> None:
        """Output is about to be written: clear the line if it shares ours."""
        if self._shares:
            self.clear()

    def after_output(self, data: bytes) -> None:
        """``data`` was written: hold the line while it ends mid-line."""
        if self._shares and data:
            self._held = not data.endswith(b"\n")

    def stop(self) -> None:
        """Show the last figures, and end the line."""
        if self._loop.running:
            self._loop.stop()
            if self._held:
                self._write("\n")  # below the output's last line, not on it
                self._held = False
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


def start_progress(
    asked: bool | None,
    status: Callable[[], str],
    count: Callable[[], int],
    data: Any,
) -> Progress | None:
    """
    A started `Progress` on standard error if ``asked`` (``--progress``),
    or by default (``None``) when standard error is a terminal and ``data``
    is not: the stream the tool's data passes through (the follower's
    standard output, the appender's standard input), which on a terminal
    would mix with the line (the followed text, the typist's echo).
    """
    on_terminal = _isatty(data)
    wanted = asked if asked is not None else _isatty(sys.stderr) and not on_terminal
    if not wanted:
        return None
    progress = Progress(
        sys.stderr, status, count, shares=on_terminal and _isatty(sys.stderr)
    )
    progress.start()
    return progress
