"""
The browser view of a large log (docs/PERFORMANCE.md, "The browser view"):
``python bench/viewer.py [--mb 50] [--shot docs/viewer.png]``.

Writes a realistic coloured build log of ``--mb`` MiB, serves it with
``twistd httpfstream`` and opens its page in headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright), twice: once finished (no
appender: the page fetches it over ``GET ?follow=1``) and once live (an
``httpfstream-append`` holds it: the page follows over a WebSocket).  For
each it prints the time from navigation until the last line is drawn, the
longest task on the page's main thread (``PerformanceObserver`` long
tasks), the longest gap between two frames, the JavaScript heap, and the
time to scroll to the top and back.

``--shot FILE`` instead takes the README's screenshot: the page following a
short live build log.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

RESET = "\x1b[0m"
STEPS = ["checkout", "configure", "compile", "test", "package", "upload"]
MODULES = ["core", "net", "store", "http", "ws", "auth", "cli", "tap", "fmt"]


def build_log(size: int, seed: int = 1) -> bytes:
    """
    ``size`` bytes (about) of what CI jobs print: timestamps, step headers,
    compiler lines with warnings, test results in green and red, a progress
    bar redrawn with carriage returns, 256-colour and truecolor bits, UTF-8
    marks and the odd long command line.
    """
    rnd = random.Random(seed)
    out: list[str] = []
    total = 0
    n = 0
    clock = 0.0
    while total < size:
        n += 1
        clock += rnd.random() * 0.05
        hms = time.strftime("%H:%M:%S", time.gmtime(clock))
        stamp = f"\x1b[90m{hms}.{int(clock * 1000) % 1000:03d}{RESET} "
        kind = rnd.random()
        mod = rnd.choice(MODULES)
        if n % 2000 == 1:
            step = STEPS[(n // 2000) % len(STEPS)]
            line = f"\x1b[1;34m==>\x1b[0m \x1b[1mRunning step {step}\x1b[0m"
        elif kind < 0.35:
            pct = n % 100
            line = (
                f"[{pct:3d}%] \x1b[32mBuilding C object\x1b[0m "
                f"src/{mod}/CMakeFiles/{mod}.dir/{mod}_{n % 97}.c.o"
            )
        elif kind < 0.45:
            line = (
                f"src/{mod}/{mod}_{n % 97}.c:{n % 900 + 1}:{n % 40 + 1}: "
                f"\x1b[1;35mwarning:\x1b[0m unused variable "
                f"\x1b[1m'tmp{n % 13}'\x1b[0m [\x1b[35m-Wunused-variable\x1b[0m]"
            )
        elif kind < 0.75:
            ok = rnd.random() > 0.03
            mark = "\x1b[32m✓ PASSED\x1b[0m" if ok else "\x1b[1;31m✗ FAILED\x1b[0m"
            line = (
                f"tests/test_{mod}.py::test_case_{n % 500} {mark} "
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
            line = f"\x1b[38;2;{r};{g};{b}mtruecolor note\x1b[0m from {mod}: done"
        elif kind < 0.85:
            flags = " ".join(f"-I/usr/include/{m} -D{m.upper()}=1" for m in MODULES)
            line = f"\x1b[2m+ cc -O2 -Wall {flags} {flags} -c src/{mod}/x.c\x1b[0m"
        else:
            count, took = rnd.randrange(10**6), rnd.random()
            line = f"{mod}: processed {count} records in {took:.2f}s"
        text = ("" if line.startswith(stamp) else stamp) + line + "\n"
        out.append(text)
        total += len(text.encode())
    return "".join(out).encode()


class Twistd:
    """``twistd httpfstream`` on an ephemeral port of 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.process = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                "httpfstream",
                f"--root={root}",
                "--port=tcp:0:interface=127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
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

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


# Installed before the page's own script: long tasks and frame gaps.
OBSERVE = """
window.__perf = { longest: 0, longTasks: 0, longTotal: 0, maxGap: 0 };
new PerformanceObserver(function (list) {
  for (const e of list.getEntries()) {
    __perf.longTasks++;
    __perf.longTotal += e.duration;
    __perf.longest = Math.max(__perf.longest, e.duration);
  }
}).observe({ type: "longtask", buffered: true });
let __last = 0;
function __tick(t) {
  if (__last) __perf.maxGap = Math.max(__perf.maxGap, t - __last);
  __last = t;
  requestAnimationFrame(__tick);
}
requestAnimationFrame(__tick);
"""

LAST_LINE_DRAWN = """(size) => {
  const v = window.httpfstreamViewer;
  if (!v || v.bytes !== size) return false;
  return document.querySelector('.ln[data-n="' + v.lines + '"]') !== null;
}"""


def measure(page: Any, url: str, size: int) -> dict[str, float]:
    page.add_init_script(OBSERVE)
    page.goto(url)
    page.wait_for_function(LAST_LINE_DRAWN, arg=size, timeout=120_000, polling="raf")
    shown = page.evaluate("performance.now()")
    # Scroll to the top and back to the end: how long until each is drawn.
    top = page.evaluate(
        """() => new Promise(resolve => {
          const log = document.getElementById("log");
          const t0 = performance.now();
          log.scrollTop = 0;
          function check() {
            if (document.querySelector('.ln[data-n="1"]')) {
              const t1 = performance.now();
              document.getElementById("end").click();
              const last = String(window.httpfstreamViewer.lines);
              function back() {
                if (document.querySelector('.ln[data-n="' + last + '"]'))
                  resolve([t1 - t0, performance.now() - t1]);
                else requestAnimationFrame(back);
              }
              requestAnimationFrame(back);
            } else requestAnimationFrame(check);
          }
          requestAnimationFrame(check);
        })"""
    )
    perf = page.evaluate("window.__perf")
    heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0")
    lines = page.evaluate("window.httpfstreamViewer.lines")
    return {
        "shown_s": shown / 1000,
        "longest_task_ms": perf["longest"],
        "long_tasks": perf["longTasks"],
        "long_task_total_ms": perf["longTotal"],
        "max_frame_gap_ms": perf["maxGap"],
        "heap_mb": heap / 1e6,
        "lines": lines,
        "to_top_ms": top[0],
        "to_end_ms": top[1],
    }


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def bench(mb: float) -> None:
    from playwright.sync_api import sync_playwright

    content = build_log(int(mb * 1024 * 1024))
    root = Path(tempfile.mkdtemp(prefix="httpfstream-viewer-"))
    (root / "finished.log").write_bytes(content)
    server = Twistd(root)
    appender = subprocess.Popen(
        [str(BIN / "httpfstream-append"), server.url("live.log")],
        stdin=subprocess.PIPE,
    )
    try:
        assert appender.stdin is not None
        appender.stdin.write(content)
        appender.stdin.flush()
        deadline = time.monotonic() + 120
        while not (root / "live.log").exists() or (
            root / "live.log"
        ).stat().st_size < len(content):
            if time.monotonic() > deadline:
                raise TimeoutError("the appender did not finish")
            time.sleep(0.1)
        results = {}
        with sync_playwright() as p:
            browser = launch(p)
            for name in ("finished.log", "live.log"):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                results[name] = measure(page, server.url(name), len(content))
                page.close()
            version = browser.version
            browser.close()
        print(f"{len(content) / 1e6:.1f} MB, Chromium {version}")
        print(json.dumps(results, indent=1))
    finally:
        if appender.stdin:
            appender.stdin.close()
        appender.wait(30)
        server.stop()
        shutil.rmtree(root)


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


def screenshot(path: str) -> None:
    from playwright.sync_api import sync_playwright

    head = b"\n".join(build_log(6000, seed=7).split(b"\n")[:22]) + b"\n"
    root = Path(tempfile.mkdtemp(prefix="httpfstream-shot-"))
    server = Twistd(root)
    url = server.url("ci/1234/build.log")
    appender = subprocess.Popen(
        [str(BIN / "httpfstream-append"), url], stdin=subprocess.PIPE
    )
    assert appender.stdin is not None
    try:
        appender.stdin.write(head + SHOT_END)
        appender.stdin.flush()
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 900, "height": 420})
            page.goto(url)
            page.wait_for_function(
                "() => window.httpfstreamViewer.state === 'live' &&"
                " document.querySelector('.ln[data-n=\"27\"]') !== null"
            )
            page.screenshot(path=path)
            browser.close()
    finally:
        appender.stdin.close()
        appender.wait(30)
        server.stop()
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50, help="log size in MiB")
    parser.add_argument("--shot", help="take the README's screenshot into this PNG")
    args = parser.parse_args()
    if args.shot:
        screenshot(args.shot)
    else:
        bench(args.mb)


if __name__ == "__main__":
    main()
