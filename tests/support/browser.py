"""
A real browser for the log page's tests (docs/PROTOCOL.md section 12):
Debian's headless Chromium driven by Playwright (`Chromium`), and one page
in it (`Tab`).

Playwright's sync API runs in one thread of its own, so the reactor, which
runs the in-process server and the test's appenders, never waits on the
browser; every wait is on a condition in the page (``wait_for_function``),
never a sleep.  The scripts below read what the page shows (rows, their
styles, what is in sight).
"""

from __future__ import annotations

import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# Installed in every page before its own script: what the page's CSP
# refused, if anything.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


class Chromium:
    """
    Headless Chromium, driven through Playwright's sync API from one
    dedicated thread (Playwright objects belong to the thread that made
    them); `call` runs a function there and gives a Deferred.
    """

    def __init__(self) -> None:
        self._pool = ThreadPool(1, 1, "playwright")
        self._pool.start()
        self._playwright: Any = None
        self.browser: Any = None

    def call(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, self._pool, f, *args, **kwargs)

    def launch(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )

    def quit(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self._playwright is not None:
            self._playwright.stop()

    def stop(self) -> None:
        self._pool.stop()

    async def open(
        self,
        url: str,
        width: int = 900,
        height: int = 400,
        init: str = "",
        **options: Any,
    ) -> Tab:
        """
        A new page (in a context of its own) at ``url``; ``init`` is a
        script run before the page's own (the page's test hooks).
        """

        def make() -> Any:
            context = self.browser.new_context(
                viewport={"width": width, "height": height}, **options
            )
            page = context.new_page()
            page.add_init_script(WATCH + init)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            response = page.goto(url)
            return page, errors, requests, response.status

        page, errors, requests, status = await self.call(make)
        return Tab(self, page, errors, requests, status)


class Tab:
    """One page; every method gives a Deferred."""

    def __init__(
        self,
        chromium: Chromium,
        page: Any,
        errors: list[str],
        requests: list[str],
        status: int,
    ) -> None:
        self._chromium = chromium
        self.page = page
        self.errors = errors
        #: Every URL the page asked for, in order (the page itself first).
        self.requests = requests
        #: The status the page itself was served with.
        self.status = status

    def eval(self, script: str, arg: Any = None) -> Deferred[Any]:
        return self._chromium.call(self.page.evaluate, script, arg)

    def until(self, script: str, arg: Any = None, timeout: float = 10) -> Deferred[Any]:
        """Fire once ``script`` (a function of ``arg``) is truthy in the page."""

        def wait() -> Any:
            handle = self.page.wait_for_function(
                script, arg=arg, timeout=timeout * 1000
            )
            return handle.json_value()

        return self._chromium.call(wait)

    def until_state(self, state: str, timeout: float = 10) -> Deferred[Any]:
        return self.until("s => window.httpfstreamViewer.state === s", state, timeout)

    def until_lines(self, n: int, timeout: float = 10) -> Deferred[Any]:
        return self.until("n => window.httpfstreamViewer.lines === n", n, timeout)

    def click(self, selector: str, **options: Any) -> Deferred[Any]:
        return self._chromium.call(self.page.click, selector, **options)

    def press(self, key: str) -> Deferred[Any]:
        return self._chromium.call(self.page.keyboard.press, key)

    def fill(self, selector: str, text: str) -> Deferred[Any]:
        return self._chromium.call(self.page.fill, selector, text)

    def wheel(self, dy: int) -> Deferred[Any]:
        def scroll() -> None:
            self.page.mouse.move(300, 200)
            self.page.mouse.wheel(0, dy)

        return self._chromium.call(scroll)

    async def lines(self) -> list[str]:
        """Every line the page holds, as shown (ANSI and CRs applied)."""
        return list(
            await self.eval(
                "() => { const v = window.httpfstreamViewer;"
                " return Array.from({length: v.lines}, (_, i) => v.text(i)); }"
            )
        )

    async def close(self) -> None:
        """Check that nothing went wrong in the page, and close it."""
        violations = await self.eval("window.__violations")
        assert violations == []
        assert self.errors == []
        await self._chromium.call(self.page.context.close)


# -- what a row shows ----------------------------------------------------------

# The row of line n (1-based) if it is drawn and in sight, else null.
ROW_IN_SIGHT = """n => {
  const number = document.querySelector('.ln[data-n="' + n + '"]');
  if (!number) return null;
  const row = number.parentElement.getBoundingClientRect();
  const view = document.getElementById("log").getBoundingClientRect();
  return row.top >= view.top - 1 && row.bottom <= view.bottom + 1;
}"""

# The drawn spans of line n: [text, colour, weight, style, decoration].
STYLES = """n => {
  const number = document.querySelector('.ln[data-n="' + n + '"]');
  return Array.from(number.nextElementSibling.childNodes, node => {
    const s = getComputedStyle(node.nodeType === 1 ? node : node.parentElement);
    return [node.textContent, s.color, s.fontWeight, s.fontStyle,
            s.textDecorationLine, s.backgroundColor];
  });
}"""

#: Whether row ``n`` is drawn with ``text`` (the argument is ``[n, text]``).
ROW_TEXT = """([n, text]) => {
  const number = document.querySelector('.ln[data-n="' + n + '"]');
  return number !== null && number.nextElementSibling.textContent === text;
}"""

#: The numbers of the lines wholly in sight, top to bottom.
IN_SIGHT = """() => {
  const view = document.getElementById("log").getBoundingClientRect();
  const shown = [];
  for (const number of document.querySelectorAll('.row .ln')) {
    const row = number.parentElement.getBoundingClientRect();
    if (row.top >= view.top - 1 && row.bottom <= view.bottom + 1)
      shown.push([row.top, Number(number.dataset.n)]);
  }
  return shown.sort((a, b) => a[0] - b[0]).map(x => x[1]);
}"""

#: The line numbers of the highlighted rows, joined with commas.
HIGHLIGHTED = (
    "Array.from(document.querySelectorAll('.row.hl .ln'), a => a.dataset.n).join()"
)
