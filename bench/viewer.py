"""
The browser view of a large log (docs/PERFORMANCE.md, "The browser view at
any size"): ``python bench/viewer.py [--gb 1] [--code CHECKOUT]``.

Writes a CI-like coloured log of ``--gb`` GiB (timestamps, GitLab section
markers, compiler lines, test results, progress bars redrawn with carriage
returns, 256-colour and truecolor bits, UTF-8 marks; one line with
``needle`` near its start), cached under ``--cache``; appends it through
``twistd httpfstream`` (as logs arrive, so the server's line index is
built as it goes) and opens its page in headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright, 1280x800).  ``--code`` runs
the server (and so the page it serves) from another checkout, for a
before/after comparison.  Measured, for a finished log:

- the time from navigation until the last line is drawn in sight, and the
  bytes the page received until then (Chromium's network events, HTTP and
  WebSocket);
- the JavaScript heap after opening (``performance.memory`` after a
  garbage collection);
- ``PageDown``: the lines it moved and the lines in sight;
- the time to the first search match near the start (the search box,
  Enter);
- ``#L`` at the middle line: the time until it is drawn in sight; then
  the view stepped through 1,000,000 lines, 2,000 at a time, each drawn,
  and the heap after;

and for a live log appended at ``--rate`` MB/s (``--live-seconds`` of it
before the page opens, then as long again while it follows): the time
until it shows the line that was last when it opened, the bytes until
then, the heap, and how far the page's bytes trail the server's (sampled
every half second).  Then a page opened before its log exists: the time
from the first appended line until it is drawn.

``--shot FILE`` instead takes the README's screenshot of a live build
log; ``--shots DIR`` the screenshots of each feature of the page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--enable-precise-memory-info",
]

RESET = "\x1b[0m"
STEPS = ["checkout", "configure", "compile", "test", "package", "upload"]
MODULES = ["core", "net", "store", "http", "ws", "auth", "cli", "tap", "fmt"]
NEEDLE = "needle"
NEEDLE_LINE = 1000
SECTION = 2000  # lines per GitLab section


def ci_lines(seed: int = 1) -> Iterator[str]:
    """
    Endless lines of what CI jobs print: timestamps, step headers in GitLab
    sections, compiler lines with warnings, test results in green and red,
    a progress bar redrawn with carriage returns, 256-colour and truecolor
    bits, UTF-8 marks, the odd long command line; line `NEEDLE_LINE` holds
    `NEEDLE`.
    """
    rnd = random.Random(seed)
    n = 0
    clock = 0.0
    epoch = 1765000000
    while True:
        n += 1
        clock += rnd.random() * 0.05
        hms = time.strftime("%H:%M:%S", time.gmtime(clock))
        stamp = f"\x1b[90m{hms}.{int(clock * 1000) % 1000:03d}{RESET} "
        kind = rnd.random()
        mod = rnd.choice(MODULES)
        at = n % SECTION
        if n == NEEDLE_LINE:
            warning = "\x1b[33mwarning:\x1b[0m"
            line = f"{stamp}{warning} flaky test found a {NEEDLE}, retried"
        elif at == 1:
            step = STEPS[(n // SECTION) % len(STEPS)]
            folded = "[collapsed=true]" if n // SECTION % 4 == 1 else ""
            line = (
                f"\x1b[0Ksection_start:{epoch + int(clock)}:step_{n}{folded}"
                f"\r\x1b[0K\x1b[1;34m==>\x1b[0m \x1b[1mRunning step {step}\x1b[0m"
            )
        elif at == 0:
            name = f"step_{n - SECTION + 1}"
            line = f"\x1b[0Ksection_end:{epoch + int(clock)}:{name}\r\x1b[0K"
        elif kind < 0.35:
            line = (
                f"{stamp}[{n % 100:3d}%] \x1b[32mBuilding C object\x1b[0m "
                f"src/{mod}/CMakeFiles/{mod}.dir/{mod}_{n % 97}.c.o"
            )
        elif kind < 0.45:
            line = (
                f"{stamp}src/{mod}/{mod}_{n % 97}.c:{n % 900 + 1}:{n % 40 + 1}: "
                f"\x1b[1;35mwarning:\x1b[0m unused variable "
                f"\x1b[1m'tmp{n % 13}'\x1b[0m [\x1b[35m-Wunused-variable\x1b[0m]"
            )
        elif kind < 0.75:
            ok = rnd.random() > 0.03
            mark = "\x1b[32m✓ PASSED\x1b[0m" if ok else "\x1b[1;31m✗ FAILED\x1b[0m"
            line = (
                f"{stamp}tests/test_{mod}.py::test_case_{n % 500} {mark} "
                f"\x1b[2m({rnd.random():.3f}s)\x1b[0m"
            )
        elif kind < 0.80:
            line = "".join(
                f"{stamp}Downloading {mod}-deps.tar.gz "
                f"\x1b[38;5;{39 + p // 25}m{'█' * (p // 10)}{' ' * (10 - p // 10)}"
                f"\x1b[0m {p:3d}%\r"
                for p in range(0, 101, 20)
            ).rstrip("\r")
        elif kind < 0.83:
            r, g, b = rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)
            colour = f"\x1b[38;2;{r};{g};{b}m"
            line = f"{stamp}{colour}truecolor note\x1b[0m from {mod}: done"
        elif kind < 0.84:
            flags = " ".join(f"-I/usr/include/{m} -D{m.upper()}=1" for m in MODULES)
            line = f"{stamp}\x1b[2m+ cc -O2 -Wall {flags} -c src/{mod}/x.c\x1b[0m"
        else:
            count, took = rnd.randrange(10**6), rnd.random()
            line = f"{stamp}{mod}: processed {count} records in {took:.2f}s"
        yield line + "\n"


def chunks(seed: int = 1, size: int = 1 << 20) -> Iterator[tuple[bytes, int]]:
    """`ci_lines` in pieces of about ``size`` bytes, with their line counts."""
    lines = ci_lines(seed)
    while True:
        part = []
        total = 0
        while total < size:
            line = next(lines)
            part.append(line)
            total += len(line)
        yield "".join(part).encode(), len(part)


def cached_log(cache: Path, size: int) -> tuple[Path, int]:
    """A log of about ``size`` bytes (and its line count), made once."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"ci-{size}.log"
    count_file = path.with_suffix(".lines")
    if path.exists() and count_file.exists():
        return path, int(count_file.read_text())
    written = lines = 0
    with open(path, "wb") as out:
        for data, n in chunks():
            out.write(data)
            written += len(data)
            lines += n
            if written >= size:
                break
    count_file.write_text(str(lines))
    return path, lines


class Twistd:
    """``twistd httpfstream`` on an ephemeral port, from ``code`` if given."""

    def __init__(self, root: Path, code: Path | None = None) -> None:
        env = dict(os.environ)
        if code is not None:
            env["PYTHONPATH"] = str(code)
        self.process = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                "httpfstream",
                f"--root={root}",
                "--port=tcp:0:interface=127.0.0.1",
                "--max-resource-size=0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(root),
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = re.search(rb"Site starting on (\d+)", line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            raise RuntimeError("twistd did not start")
        # Keep reading its log so a full pipe never blocks it.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def head(self, name: str, **query: str) -> dict[str, str]:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        request = urllib.request.Request(
            self.url(name) + ("?" + qs if qs else ""), method="HEAD"
        )
        with urllib.request.urlopen(request) as response:
            return {k.lower(): v for k, v in response.headers.items()}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def append_file(url: str, path: Path) -> None:
    """Append a file through the server, as an appender would."""
    with open(path, "rb") as source:
        subprocess.run([str(BIN / "httpfstream-append"), url], stdin=source, check=True)


class Feeder:
    """An appender fed CI lines at ``rate`` bytes a second, until stopped."""

    def __init__(self, url: str, rate: float, seed: int = 2) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "httpfstream-append"), url], stdin=subprocess.PIPE
        )
        self.rate = rate
        self.sent = 0
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, args=(seed,), daemon=True)
        self._thread.start()

    def _feed(self, seed: int) -> None:
        assert self.process.stdin is not None
        start = time.monotonic()
        for data, n in chunks(seed, 16 << 10):
            if self._stop.is_set():
                break
            due = start + (self.sent + len(data)) / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.process.stdin.write(data)
            self.process.stdin.flush()
            self.sent += len(data)
            self.lines += n

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


# Installed before the page's script: nothing; the page is watched from
# outside (Chromium's network events) and through what it draws.

#: performance.now() once line n is drawn (not a placeholder) and wholly in
#: sight; false before.
DRAWN_IN_SIGHT = """n => {
  const number = document.querySelector('.ln[data-n="' + n + '"]');
  if (!number || number.parentElement.classList.contains('pending')) return false;
  const row = number.parentElement.getBoundingClientRect();
  const view = document.getElementById("log").getBoundingClientRect();
  if (row.top < view.top - 1 || row.bottom > view.bottom + 1) return false;
  return performance.now();
}"""

#: The line numbers wholly in sight.
IN_SIGHT = """() => {
  const view = document.getElementById("log").getBoundingClientRect();
  const shown = [];
  for (const number of document.querySelectorAll('.row .ln')) {
    const row = number.parentElement.getBoundingClientRect();
    if (row.top >= view.top - 1 && row.bottom <= view.bottom + 1)
      shown.push(Number(number.dataset.n));
  }
  return shown.sort((a, b) => a - b);
}"""

#: The last line drawn (not a placeholder) in sight, if any.
LAST_DRAWN = """() => {
  const view = document.getElementById("log").getBoundingClientRect();
  let last = 0;
  for (const number of document.querySelectorAll('.row .ln')) {
    if (number.parentElement.classList.contains('pending')) continue;
    const row = number.parentElement.getBoundingClientRect();
    if (row.top >= view.top - 1 && row.bottom <= view.bottom + 1)
      last = Math.max(last, Number(number.dataset.n));
  }
  return last;
}"""

#: Step the view through lines from..to, `by` at a time, each drawn; the
#: time it took (ms), or -n if line n was not drawn within `timeout` ms.
SCROLL_THROUGH = """async ([from, to, by, timeout]) => {
  const v = window.httpfstreamViewer;
  const t0 = performance.now();
  for (let n = from; n <= to; n += by) {
    v.reveal(n);
    const start = performance.now();
    for (;;) {
      await new Promise(r => requestAnimationFrame(r));
      const number = document.querySelector('.ln[data-n="' + n + '"]');
      if (number && !number.parentElement.classList.contains('pending')) break;
      if (performance.now() - start > timeout) return -n;  // not drawn
    }
  }
  return performance.now() - t0;
}"""


class Probe:
    """A page in its own context, and the bytes Chromium received for it."""

    def __init__(self, browser: Any, **options: Any) -> None:
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 800}, **options
        )
        self.page = self.context.new_page()
        self.cdp = self.context.new_cdp_session(self.page)
        self.received: dict[str, list[int]] = {}
        self.ws = 0
        self.cdp.on("Network.dataReceived", self._data)
        self.cdp.on("Network.loadingFinished", self._finished)
        self.cdp.on("Network.webSocketFrameReceived", self._frame)
        self.cdp.send("Network.enable")

    def _data(self, event: dict[str, Any]) -> None:
        got = self.received.setdefault(event["requestId"], [0, 0, 0])
        got[0] += event.get("encodedDataLength", 0)
        got[1] += event.get("dataLength", 0)

    def _finished(self, event: dict[str, Any]) -> None:
        got = self.received.setdefault(event["requestId"], [0, 0, 0])
        got[2] = event.get("encodedDataLength", 0)

    def _frame(self, event: dict[str, Any]) -> None:
        response = event["response"]
        data = response.get("payloadData", "")
        # Binary frames come base64-encoded.
        self.ws += len(data) * 3 // 4 if response.get("opcode") == 2 else len(data)

    @property
    def bytes(self) -> int:
        return self.ws + sum(max(got) for got in self.received.values())

    def heap(self) -> float:
        """The JavaScript heap in MB, after a garbage collection."""
        self.cdp.send("HeapProfiler.collectGarbage")
        used = self.page.evaluate("performance.memory.usedJSHeapSize")
        return used / 1e6

    def close(self) -> None:
        self.context.close()


def until_drawn(page: Any, n: int, timeout: float) -> float | None:
    """The page's clock (ms) once line n is drawn in sight; None on timeout."""
    try:
        handle = page.wait_for_function(
            DRAWN_IN_SIGHT, arg=n, timeout=timeout * 1000, polling="raf"
        )
    except Exception:
        return None
    return float(handle.json_value())


def measure_finished(
    browser: Any, url: str, lines: int, timeout: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    probe = Probe(browser)
    page = probe.page
    page.goto(url)
    shown = until_drawn(page, lines, timeout)
    out["last_line_s"] = None if shown is None else shown / 1000
    out["bytes_to_show_mb"] = probe.bytes / 1e6
    if shown is None:
        probe.close()
        return out
    out["heap_mb"] = probe.heap()
    # PageDown: how many lines it moves, with how many in sight.
    page.evaluate("document.getElementById('log').focus()")
    before = page.evaluate(IN_SIGHT)
    page.keyboard.press("PageUp")
    time.sleep(0.6)  # the browser's own scroll may animate
    page.keyboard.press("PageDown")
    time.sleep(0.6)
    page.keyboard.press("PageUp")
    time.sleep(0.6)
    up = page.evaluate(IN_SIGHT)
    page.keyboard.press("PageDown")
    time.sleep(0.6)
    down = page.evaluate(IN_SIGHT)
    out["in_sight"] = len(before)
    out["pagedown_moves"] = down[0] - up[0] if up and down else None
    # The search box: a match near the start, from the end.
    if page.query_selector("#search") is not None:
        page.fill("#search", NEEDLE)
        t0 = page.evaluate("performance.now()")
        page.press("#search", "Enter")
        hit = until_drawn(page, NEEDLE_LINE, timeout)
        out["search_first_hit_s"] = None if hit is None else (hit - t0) / 1000
    else:
        out["search_first_hit_s"] = "none"
    probe.close()
    return out


def measure_jump(
    browser: Any, url: str, line: int, lines: int, timeout: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    probe = Probe(browser)
    page = probe.page
    page.goto(f"{url}#L{line}")
    shown = until_drawn(page, line, timeout)
    out["jump_s"] = None if shown is None else shown / 1000
    out["jump_bytes_mb"] = probe.bytes / 1e6
    if shown is None:
        probe.close()
        return out
    last = min(line + 1_000_000, lines)
    took = page.evaluate(SCROLL_THROUGH, [line, last, 2000, timeout * 1000])
    out["scrolled_lines"] = last - line
    if took < 0:
        out["scroll_s"] = None
        out["scroll_stuck_at"] = -took
    else:
        out["scroll_s"] = took / 1000
    out["heap_after_scroll_mb"] = probe.heap()
    out["bytes_after_scroll_mb"] = probe.bytes / 1e6
    probe.close()
    return out


def measure_live(
    browser: Any, server: Twistd, rate: float, seconds: float, timeout: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    feeder = Feeder(server.url("live.log"), rate)
    try:
        time.sleep(seconds)
        probe = Probe(browser)
        page = probe.page
        last = int(server.head("live.log", lines="-0")["httpfstream-line"]) - 1
        out["size_at_open_mb"] = feeder.sent / 1e6
        page.goto(server.url("live.log"))
        try:
            handle = page.wait_for_function(
                "n => { const last = (" + LAST_DRAWN + ")(); "
                "return last >= n ? performance.now() : false; }",
                arg=last,
                timeout=timeout * 1000,
                polling="raf",
            )
            out["last_line_s"] = float(handle.json_value()) / 1000
        except Exception:
            out["last_line_s"] = None
        out["bytes_to_show_mb"] = probe.bytes / 1e6
        out["heap_mb"] = probe.heap()
        # How far the page trails the server, while it follows.
        lags = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            size = int(server.head("live.log")["httpfstream-size"])
            seen = page.evaluate("window.httpfstreamViewer.bytes")
            lags.append(max(0, size - seen))
            time.sleep(0.5)
        out["lag_p50_mb"] = statistics.median(lags) / 1e6
        out["lag_max_mb"] = max(lags) / 1e6
        out["lag_p50_s"] = statistics.median(lags) / rate
        out["lag_max_s"] = max(lags) / rate
        out["heap_after_following_mb"] = probe.heap()
        out["appended_mb"] = feeder.sent / 1e6
        probe.close()
    finally:
        feeder.stop()
    return out


def measure_waiting(browser: Any, server: Twistd, timeout: float) -> dict[str, Any]:
    probe = Probe(browser)
    page = probe.page
    page.goto(server.url("later/build.log"))
    # A page with the viewer says what it does; a page without is text.
    page.wait_for_function(
        "() => !window.httpfstreamViewer || "
        "!['connecting'].includes(window.httpfstreamViewer.state)"
    )
    state = page.evaluate(
        "window.httpfstreamViewer ? window.httpfstreamViewer.state"
        " : document.body.innerText.trim()"
    )
    appender = subprocess.Popen(
        [str(BIN / "httpfstream-append"), server.url("later/build.log")],
        stdin=subprocess.PIPE,
    )
    assert appender.stdin is not None
    try:
        appender.stdin.write(b"\x1b[1mJob started\x1b[0m\n")
        appender.stdin.flush()
        # From the moment the server has the line (the appender's own
        # start-up is not the page's).
        while True:
            try:
                if int(server.head("later/build.log")["httpfstream-size"]) > 0:
                    break
            except urllib.error.HTTPError:
                pass
            time.sleep(0.005)
        t0 = time.monotonic()
        shown = until_drawn(page, 1, timeout)
        took = time.monotonic() - t0
    finally:
        appender.stdin.close()
        appender.wait(30)
        probe.close()
    return {"state_before": state, "first_line_s": None if shown is None else took}


def say(step: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {step}", file=sys.stderr, flush=True)


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def bench(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    code = Path(args.code).resolve() if args.code else None
    results: dict[str, Any] = {"code": str(code or "this checkout")}
    root = Path(tempfile.mkdtemp(prefix="httpfstream-viewer-"))
    server = Twistd(root, code)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            results["chromium"] = browser.version
            if args.only in (None, "finished"):
                say("log")
                path, lines = cached_log(Path(args.cache), int(args.gb * (1 << 30)))
                say("appending")
                t0 = time.monotonic()
                append_file(server.url("finished.log"), path)
                results["log"] = {
                    "bytes": path.stat().st_size,
                    "lines": lines,
                    "append_s": time.monotonic() - t0,
                }
                url = server.url("finished.log")
                say("finished")
                results["finished"] = measure_finished(
                    browser, url, lines, args.timeout
                )
                say("jump")
                results["jump"] = measure_jump(
                    browser, url, lines // 2, lines, args.timeout
                )
            if args.only in (None, "live"):
                say("live")
                results["live"] = measure_live(
                    browser, server, args.rate * 1e6, args.live_seconds, args.timeout
                )
            if args.only in (None, "waiting"):
                say("waiting")
                results["waiting"] = measure_waiting(browser, server, 10)
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(root)
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


# -- screenshots ------------------------------------------------------------------

# The end of the screenshot's log: a failure, and an upload in progress.
SHOT_END = (
    "\x1b[90m00:00:04.210\x1b[0m tests/test_ws.py::test_case_31 "
    "\x1b[1;31m✗ FAILED\x1b[0m \x1b[2m(1.204s)\x1b[0m\n"
    "\x1b[90m00:00:04.212\x1b[0m \x1b[31mE   AssertionError: "
    "expected 1000, got 4000\x1b[0m\n"
    "\x1b[90m00:00:04.530\x1b[0m \x1b[31m=== \x1b[1m1 failed\x1b[0;31m, "
    "\x1b[32m30 passed\x1b[31m in 4.41s ===\x1b[0m\n"
    "\x1b[90m00:00:04.531\x1b[0m \x1b[1;34m==>\x1b[0m \x1b[1mRunning step "
    "upload\x1b[0m\n"
    "\x1b[90m00:00:04.600\x1b[0m Uploading logs.tar.gz \x1b[38;5;39m██\x1b[0m 20%\r"
    "\x1b[90m00:00:04.700\x1b[0m Uploading logs.tar.gz \x1b[38;5;39m███████\x1b[0m 70%"
).encode()


def plain_lines(count: int, seed: int) -> bytes:
    """``count`` CI lines without section markers."""
    out = []
    for line in ci_lines(seed):
        if "section_" not in line:
            out.append(line)
        if len(out) == count:
            return "".join(out).encode()
    raise AssertionError


def gitlab_job() -> list[bytes]:
    """A GitLab-like job in sections, as batches to append some time apart."""
    t = 1765000000
    steps = [
        # name, title, start (s), lines, seconds, folded
        ("prepare", "Preparing the docker executor", 0, plain_lines(9, 3), 14, True),
        ("get_sources", "Getting source from Git", 14, plain_lines(6, 4), 3, True),
        ("restore_cache", "Restoring cache", 17, plain_lines(4, 5), 41, True),
        ("step_script", 'Executing "step_script" stage', 58,
         plain_lines(14, 6) + SHOT_END.split(b"\n")[0] + b"\n", 272, False),
    ]  # fmt: skip
    batches = [b"\x1b[32;1mRunning with gitlab-runner 17.6.0\x1b[0;m\n"]
    for name, title, at, body, took, folded in steps:
        option = "[collapsed=true]" if folded else ""
        start = f"\x1b[0Ksection_start:{t + at}:{name}{option}\r\x1b[0K"
        batches.append(f"{start}\x1b[36;1m{title}\x1b[0;m\n".encode() + body)
        batches.append(f"\x1b[0Ksection_end:{t + at + took}:{name}\r\x1b[0K\n".encode())
    start = f"\x1b[0Ksection_start:{t + 330}:upload_artifacts\r\x1b[0K"
    batches.append(f"{start}\x1b[36;1mUploading artifacts\x1b[0;m\n".encode())
    batches.append(b"Uploading artifacts for failed job\n")
    return batches


class Shot:
    """A server, an appender and a page, for one screenshot."""

    def __init__(self, browser: Any, name: str, width: int = 1000, height: int = 440):
        self.root = Path(tempfile.mkdtemp(prefix="httpfstream-shot-"))
        self.server = Twistd(self.root)
        self.url = self.server.url(name)
        self.appender: subprocess.Popen[bytes] | None = None
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, timezone_id="UTC"
        )
        self.page = self.context.new_page()

    def append(self, data: bytes) -> None:
        if self.appender is None:
            self.appender = subprocess.Popen(
                [str(BIN / "httpfstream-append"), self.url], stdin=subprocess.PIPE
            )
        assert self.appender.stdin is not None
        self.appender.stdin.write(data)
        self.appender.stdin.flush()

    def open(self, fragment: str = "") -> Any:
        self.page.goto(self.url + fragment)
        return self.page

    def close(self) -> None:
        self.context.close()
        if self.appender is not None:
            assert self.appender.stdin is not None
            self.appender.stdin.close()
            self.appender.wait(30)
        self.server.stop()
        shutil.rmtree(self.root)


def screenshot(path: str) -> None:
    """The README's first screenshot: the page following a live build log."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        shot = Shot(browser, "ci/1234/build.log", 900, 420)
        try:
            shot.append(plain_lines(22, 7) + SHOT_END)
            page = shot.open()
            page.wait_for_function(
                "() => window.httpfstreamViewer.state === 'live' &&"
                " document.querySelector('.ln[data-n=\"27\"]') !== null"
            )
            page.screenshot(path=path)
        finally:
            shot.close()
            browser.close()


def screenshots(folder: str) -> None:
    """A screenshot of each feature: sections, times, search, a range, waiting."""
    from playwright.sync_api import sync_playwright

    out = Path(folder)
    with sync_playwright() as p:
        browser = launch(p)
        # Sections, folded, with durations; times since the job began.
        shot = Shot(browser, "ci/1235/job.log")
        try:
            for batch in gitlab_job():
                shot.append(batch)
                time.sleep(0.15)
            page = shot.open()
            page.wait_for_function(
                "() => window.httpfstreamViewer.sections().length === 5"
            )
            page.screenshot(path=str(out / "viewer-sections.png"))
            page.click("#times")
            page.click("#times")
            page.wait_for_function("() => window.httpfstreamViewer.times === 'elapsed'")
            page.click('.row.sec:has-text("Getting source") .title')
            time.sleep(0.3)
            page.screenshot(path=str(out / "viewer-times.png"))
        finally:
            shot.close()
        # Search: matches counted and marked, the current one in sight.
        shot = Shot(browser, "ci/1236/build.log")
        try:
            shot.append(plain_lines(3000, 8) + SHOT_END)
            page = shot.open()
            page.wait_for_function("() => window.httpfstreamViewer.state === 'live'")
            page.fill("#search", "FAILED")
            page.press("#search", "Enter")
            page.wait_for_function("() => window.httpfstreamViewer.search.current >= 0")
            page.press("#search", "Enter")
            time.sleep(0.3)
            page.screenshot(path=str(out / "viewer-search.png"))
        finally:
            shot.close()
        # A range of lines, highlighted from a link.
        shot = Shot(browser, "ci/1237/build.log")
        try:
            shot.append(plain_lines(400, 9))
            page = shot.open("#L212-L216")
            page.wait_for_function(
                "() => document.querySelectorAll('.row.hl:not(.pending)').length === 5"
            )
            page.screenshot(path=str(out / "viewer-range.png"))
        finally:
            shot.close()
        # A link opened before its log exists.
        shot = Shot(browser, "ci/1238/build.log", height=260)
        try:
            page = shot.open()
            page.wait_for_function("() => window.httpfstreamViewer.state === 'waiting'")
            page.screenshot(path=str(out / "viewer-waiting.png"))
        finally:
            shot.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1, help="log size in GiB")
    parser.add_argument("--code", help="run the server from this checkout")
    parser.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "httpfstream-bench"),
        help="where the generated logs are kept",
    )
    parser.add_argument("--only", choices=["finished", "live", "waiting"])
    parser.add_argument("--rate", type=float, default=5, help="live MB/s")
    parser.add_argument("--live-seconds", type=float, default=15)
    parser.add_argument("--timeout", type=float, default=60, help="per wait, seconds")
    parser.add_argument("--out", help="also write the results (JSON) here")
    parser.add_argument("--shot", help="take the README's screenshot into this PNG")
    parser.add_argument("--shots", help="take each feature's screenshot here")
    args = parser.parse_args()
    if args.shot:
        screenshot(args.shot)
    elif args.shots:
        screenshots(args.shots)
    else:
        bench(args)


if __name__ == "__main__":
    main()
