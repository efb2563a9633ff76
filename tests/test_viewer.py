"""
The browser view (docs/PROTOCOL.md section 12) in a real browser: Debian's
headless Chromium driven by Playwright (`support.browser`), against a
server on 127.0.0.1: what a log looks like and how the page follows it.
What a page does with a log of any size (opening at its end, loading and
letting go of lines, keys and wheel, line links, sections, times, search,
waiting for a log) is in ``test_viewer_large.py``.
"""

from __future__ import annotations

import random
import re
import socket

from support.browser import HIGHLIGHTED, ROW_IN_SIGHT, ROW_TEXT, STYLES
from support.clients import appender, close, get
from support.processes import Twistd
from support.proxies import Proxy
from twisted.internet.threads import deferToThread

from httpfstream import client
from httpfstream.web.auth import Tokens

RED = "rgb(255, 123, 114)"  # --c1 in viewer.css
GREEN = "rgb(63, 185, 80)"  # --c2
DEFAULT = "rgb(208, 215, 222)"  # --fg


async def test_coloured_lines_appear_styled(chromium, server):
    a = await appender(server, "ci/build.log", ack=1)
    a.sendMessage(b"plain\n")
    await a.until_ack(6)
    # Under the /logs/ mount point; the page follows its own URL.
    tab = await chromium.open(server.url("ci/build.log"))
    await tab.until_lines(1)
    assert await tab.eval("window.httpfstreamViewer.state") == "live"
    sent = [
        b"\x1b[31mred\x1b[0m and \x1b[1mbold\x1b[0m\n",
        b"\x1b[38;5;208m256\x1b[0m \x1b[38;2;1;2;3;48;2;250;251;252mtrue\x1b[0m\n",
        b"\x1b[3;4mslanted\x1b[0m \x1b[2Kgone\x1b]0;title\x07 \x1b[?25lok\n",
        # A UTF-8 sequence and an escape sequence each cut across messages.
        b"\xe2",
        b"\x9c\x93 \x1b[3",
        b"2mgreen\x1b[0m\n",
    ]
    for chunk in sent:
        a.sendMessage(chunk)
        size = sum(map(len, sent[: sent.index(chunk) + 1])) + 6
        await a.until_ack(size)
    await tab.until_lines(5)
    assert await tab.lines() == [
        "plain",
        "red and bold",
        "256 true",
        "slanted gone ok",
        "✓ green",
    ]
    await tab.until(ROW_IN_SIGHT, 5)
    # The model has the lines; the rows are drawn at most every 50 ms.
    await tab.until(ROW_TEXT, [5, "✓ green"])
    red, _and, bold = await tab.eval(STYLES, 2)
    assert red[:2] == ["red", RED]
    assert bold[:3] == ["bold", DEFAULT, "700"]
    orange, _, true = await tab.eval(STYLES, 3)
    assert orange[:2] == ["256", "rgb(255, 135, 0)"]
    assert true[0] == "true"
    assert (true[1], true[5]) == ("rgb(1, 2, 3)", "rgb(250, 251, 252)")
    slanted = (await tab.eval(STYLES, 4))[0]
    assert slanted[0] == "slanted"
    assert (slanted[3], slanted[4]) == ("italic", "underline")
    green = (await tab.eval(STYLES, 5))[1]
    assert green[:2] == ["green", GREEN]
    total = 6 + sum(map(len, sent))
    size = await tab.eval("document.getElementById('size').textContent")
    assert size == f"{total} B · 5 lines"
    assert await tab.eval("window.httpfstreamViewer.bytes") == total
    assert await close(a) == 1000
    await tab.until_state("finished")
    await tab.close()


async def test_carriage_returns_overwrite(chromium, server):
    a = await appender(server, "progress.log", ack=1)
    a.sendMessage(b"fetching 10%\r")
    await a.until_ack(13)
    tab = await chromium.open(server.url("progress.log"))
    # A line not ended yet that ends in CR shows what it has so far.
    await tab.until("() => window.httpfstreamViewer.text(0) === 'fetching 10%'")
    a.sendMessage(b"fetching 50%\r\x1b[32mfetching 100%\x1b[0m\r\n")
    a.sendMessage(b"windows line\r\nnext\n")
    await tab.until_lines(3)
    assert await tab.lines() == ["fetching 100%", "windows line", "next"]
    # The model has the lines; the rows are drawn at most every 50 ms.
    await tab.until(ROW_TEXT, [1, "fetching 100%"])
    assert (await tab.eval(STYLES, 1))[0][:2] == ["fetching 100%", GREEN]
    assert await close(a) == 1000
    await tab.until_state("finished")
    await tab.close()


async def test_auto_scroll_pauses_when_scrolled_up(chromium, server):
    a = await appender(server, "scroll.log", ack=1)
    first = b"".join(b"line %d\n" % n for n in range(1, 101))
    a.sendMessage(first)
    await a.until_ack(len(first))
    tab = await chromium.open(server.url("scroll.log"), height=300)
    await tab.until(ROW_IN_SIGHT, 100)
    assert await tab.eval("window.httpfstreamViewer.follow") is True
    assert await tab.eval("document.getElementById('end').hidden") is True
    # The reader scrolls up: following pauses, the button shows.
    await tab.wheel(-400)
    await tab.until("() => !window.httpfstreamViewer.follow")
    await tab.until("() => !document.getElementById('end').hidden")
    top = await tab.eval("document.getElementById('log').scrollTop")
    more = b"".join(b"line %d\n" % n for n in range(101, 151))
    a.sendMessage(more)
    await tab.until_lines(150)
    # New lines came and are drawn (the log grew taller); the view stayed
    # where the reader put it.
    await tab.until("() => document.getElementById('log').scrollHeight >= 150 * 18")
    assert await tab.eval("document.getElementById('log').scrollTop") == top
    assert not await tab.eval(ROW_IN_SIGHT, 150)
    assert await tab.eval("document.getElementById('end').hidden") is False
    # Jump to the end: following again, and it keeps up.
    await tab.click("#end")
    await tab.until(ROW_IN_SIGHT, 150)
    await tab.until("() => window.httpfstreamViewer.follow")
    a.sendMessage(b"line 151\n")
    await tab.until(ROW_IN_SIGHT, 151)
    assert await close(a) == 1000
    await tab.close()


async def test_line_links(chromium, server):
    content = b"".join(b"line %d\n" % n for n in range(1, 201))
    await get(server.url("links.log"), method="POST", data=content)
    tab = await chromium.open(server.url("links.log") + "#L150", height=300)
    await tab.until_state("finished")
    # Line 150 is in sight, highlighted; the page did not run to the end.
    await tab.until(ROW_IN_SIGHT, 150)
    assert await tab.eval(f"() => {HIGHLIGHTED}") == "150"
    assert not await tab.eval(ROW_IN_SIGHT, 200)
    assert await tab.eval("window.httpfstreamViewer.follow") is False
    # A click on a number makes it the link.
    await tab.click('.ln[data-n="152"]')
    await tab.until("() => location.hash === '#L152'")
    await tab.until(f"() => {HIGHLIGHTED} === '152'")
    # The raw link gives the bytes as they are.
    raw = await tab.eval("document.getElementById('raw').href")
    assert raw == server.url("links.log", raw=1)
    status, _, body = await get(raw, headers={"Accept": "text/html"})
    assert (status, body) == (200, content)
    await tab.close()


async def test_a_dropped_connection_resumes(chromium, server):
    proxy = Proxy(server)
    a = await appender(server, "drop.log", ack=1)
    a.sendMessage(b"one\n")
    await a.until_ack(4)
    tab = await chromium.open(proxy.url("drop.log"))
    await tab.until_lines(1)
    a.sendMessage(b"tw\xc3")  # the rest of this line, and its last letter, later
    await tab.until("() => window.httpfstreamViewer.bytes === 7")
    proxy.cut()
    await tab.until_state("reconnecting")
    a.sendMessage(b"\xb6\nthree\n")
    await tab.until_state("live")
    await tab.until_lines(3)
    assert await close(a) == 1000
    await tab.until_state("finished")
    assert await tab.lines() == ["one", "twö", "three"]
    await tab.close()
    await proxy.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_server_restart_resumes_without_loss_or_duplication(chromium, tmp_path):
    port = _free_port()
    root = tmp_path / "root"
    root.mkdir()
    server = await deferToThread(Twistd.start, root, port=f"tcp:{port}")
    try:
        url = server.url("restart.log")
        writer = await client.open_append(url, retry=True)
        before = b"".join(b"before %d\n" % n for n in range(1, 51))
        writer.write(before)
        tab = await chromium.open(url)
        await tab.until_lines(50)
        # A UTF-8 sequence cut by the restart.
        writer.write(b"last \xe2")
        await tab.until("n => window.httpfstreamViewer.bytes === n", len(before) + 6)
        await deferToThread(server.stop)
        await tab.until_state("reconnecting")
        server = await deferToThread(Twistd.start, root, port=f"tcp:{port}")
        writer.write(b"\x9c\x93\n" + b"".join(b"after %d\n" % n for n in range(1, 51)))
        assert await writer.close() == (root / "restart.log").stat().st_size
        await tab.until_state("finished", timeout=20)
        expected = [f"before {n}" for n in range(1, 51)]
        expected += ["last ✓"] + [f"after {n}" for n in range(1, 51)]
        assert await tab.lines() == expected
        size = (root / "restart.log").stat().st_size
        assert await tab.eval("window.httpfstreamViewer.bytes") == size
        await tab.close()
    finally:
        await deferToThread(server.stop)


async def test_content_is_text_never_html(chromium, server):
    hostile = (
        b"<script>window.pwned = 1</script>\n"
        b'<img src=x onerror="window.pwned = 2"><b>not bold</b>\n'
        b"\x1b]8;;javascript:window.pwned=3\x1b\\a link\x1b]8;;\x1b\\ &amp; &lt;\n"
    )
    await get(server.url("{script}.log"), method="POST", data=hostile)
    tab = await chromium.open(server.url("{script}.log"))
    await tab.until_state("finished")
    assert await tab.lines() == [
        "<script>window.pwned = 1</script>",
        '<img src=x onerror="window.pwned = 2"><b>not bold</b>',
        "a link &amp; &lt;",
    ]
    assert await tab.eval("window.pwned === undefined")
    assert (
        await tab.eval(
            "document.querySelectorAll('#log script, #log img, #log b').length"
        )
        == 0
    )
    # The name is shown as text too (not replaced by a page part).
    assert await tab.eval("document.querySelector('header .name').textContent") == (
        "{script}.log"
    )
    await tab.close()


async def test_tokens(chromium, make_server):
    server = make_server(
        tokens=Tokens.parse(
            "reader-0123456789abcdef follow ci/\nwriter-0123456789abcdef append ci/\n"
        )
    )
    a = await appender(
        server, "ci/secret.log", ack=1, access_token="writer-0123456789abcdef"
    )
    a.sendMessage(b"one\n")
    await a.until_ack(4)
    tab = await chromium.open(
        server.url("ci/secret.log", access_token="reader-0123456789abcdef")
    )
    await tab.until_lines(1)
    assert await tab.eval("window.httpfstreamViewer.state") == "live"
    a.sendMessage(b"two\n")
    await tab.until_lines(2)
    raw = await tab.eval("document.getElementById('raw').href")
    assert (await get(raw))[2] == b"one\ntwo\n"
    assert await close(a) == 1000
    await tab.until_state("finished")
    assert await tab.lines() == ["one", "two"]
    await tab.close()


async def test_a_log_taller_than_the_browser_allows(chromium, server):
    # A million lines are 18 million pixels: more than the sizer is given,
    # so the scroll bar maps onto the lines.
    count = 1_000_000
    content = b"".join(b"%d\n" % n for n in range(1, count + 1))
    await get(server.url("tall.log"), method="POST", data=content)
    tab = await chromium.open(server.url("tall.log"))
    await tab.until_state("finished", timeout=20)
    await tab.until(ROW_IN_SIGHT, count)
    assert await tab.eval("window.httpfstreamViewer.lines") == count
    await tab.eval("window.httpfstreamViewer.reveal(500000)")
    await tab.until(ROW_IN_SIGHT, 500000)
    await tab.eval("document.getElementById('log').scrollTop = 0")
    await tab.until(ROW_IN_SIGHT, 1)
    await tab.close()


# -- the SGR state machine and the line model, in the page ---------------------

# [input, [[text, className, color, background], ...]]
SGR_CASES: list[tuple[str, list[list[str]]]] = [
    ("\x1b[31mred\x1b[0m plain", [["red", "f1", "", ""], [" plain", "", "", ""]]),
    ("\x1b[1;3;4mx", [["x", "sb si su", "", ""]]),
    ("\x1b[2;9mx", [["x", "sd ss", "", ""]]),
    ("\x1b[38;5;208mx", [["x", "", "rgb(255, 135, 0)", ""]]),
    ("\x1b[38;5;3mx", [["x", "f3", "", ""]]),
    ("\x1b[38;2;1;2;3mx", [["x", "", "rgb(1, 2, 3)", ""]]),
    ("\x1b[38:2::1:2:3mx", [["x", "", "rgb(1, 2, 3)", ""]]),
    ("\x1b[38:2:1:2:3mx", [["x", "", "rgb(1, 2, 3)", ""]]),
    ("\x1b[38:5:21mx", [["x", "", "rgb(0, 0, 255)", ""]]),
    ("\x1b[48;5;232mx", [["x", "", "", "rgb(8, 8, 8)"]]),
    ("\x1b[48;5;255mx", [["x", "", "", "rgb(238, 238, 238)"]]),
    ("\x1b[91;102mx", [["x", "f9 b10", "", ""]]),
    ("\x1b[7mx", [["x", "fi bi", "", ""]]),
    ("\x1b[31;7mx", [["x", "fi b1", "", ""]]),
    ("\x1b[7;27mx", [["x", "", "", ""]]),
    ("\x1b[1mA\x1b[22mB", [["A", "sb", "", ""], ["B", "", "", ""]]),
    (
        "\x1b[1;31mA\x1b[39mB\x1b[mC",
        [["A", "f1 sb", "", ""], ["B", "sb", "", ""], ["C", "", "", ""]],
    ),
    ("\x1b[4:3mx\x1b[4:0my", [["x", "su", "", ""], ["y", "", "", ""]]),
    ("\x1b[8mx", [["x", "sh", "transparent", ""]]),
    ("\x1b[38;5mx", [["x", "", "", ""]]),
    ("\x1b[38;5;300mx", [["x", "", "", ""]]),
    ("\x1b[5;53;73mx", [["x", "", "", ""]]),
    ("\x1b[01;031mx", [["x", "f1 sb", "", ""]]),
    ("\x1b[>4;2mx", [["x", "", "", ""]]),
    ("a\x1b[2Kb\x1b]0;t\x07c\x1b[?25ld\x1b(Be\x1b7f", [["abcdef", "", "", ""]]),
    ("a\x1bP1$r\x1b\\b\x1b_x\x1b\\c\x1b]8;;u\x1b\\d", [["abcd", "", "", ""]]),
    ("a\x07b\x08c\x00d\x7fe\x9bf\tg", [["abcdef\tg", "", "", ""]]),
    ("a\x1b\x01b\x1b\x1bc", [["ab", "", "", ""]]),  # ESC c is a sequence
    ("open \x1b[31", [["open ", "", "", ""]]),
    ("open \x1b]0;never closed", [["open ", "", "", ""]]),
    ("10%\r\x1b[32m20%\r", [["20%", "f2", "", ""]]),
    ("abc\r", [["abc", "", "", ""]]),
    ("abc\r\x1b[31m\r", [["abc", "", "", ""]]),
]

CHECK_SGR = """cases => {
  const Ansi = window.httpfstreamViewer.Ansi;
  const wrong = [];
  for (const [input, expected] of cases) {
    const parts = Ansi.segments(input, Ansi.PLAIN);
    const got = [];
    for (let k = 0; k < parts.length; k += 2) {
      const style = parts[k + 1];
      got.push([parts[k], style.className, style.color, style.background]);
    }
    if (JSON.stringify(got) !== JSON.stringify(expected)) wrong.push([input, got]);
  }
  return wrong;
}"""


async def test_sgr_state_machine(chromium, server):
    await get(server.url("empty.log"), method="POST", data=b"")
    tab = await chromium.open(server.url("empty.log"))
    await tab.until_state("finished")
    assert await tab.eval(CHECK_SGR, SGR_CASES) == []
    await tab.close()


# What the page must show, by a simpler road: the same grammar, in Python.
_SEQUENCE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*(?:[@-~]|$)|\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|[PX^_][^\x1b]*(?:\x1b\\)?|[ -/]*(?:[0-~]|$))"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _shown(line: str) -> str:
    out, cr, i = "", False, 0
    while i < len(line):
        c = line[i]
        if c == "\x1b":
            m = _SEQUENCE.match(line, i)
            i = m.end() if m else i + 1
        elif c == "\r":
            cr, i = True, i + 1
        elif _CONTROL.match(c):
            i += 1
        else:
            if cr:
                out, cr = "", False
            out += c
            i += 1
    return out


def _expected_lines(data: bytes) -> list[str]:
    lines = data.decode("utf-8", "replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [_shown(line) for line in lines]


_PIECES = [
    "word", " ", "ü", "✓", "😀", "\t", "\x1b[31m", "\x1b[1;38;5;208m",
    "\x1b[38:2::1:2:3m", "\x1b[0m", "\x1b[m", "\x1b[7m", "\x1b[2K", "\x1b[?25l",
    "\x1b]0;title\x07", "\x1b]8;;http://x\x1b\\", "\x1bP1$r\x1b\\", "\x1b(B",
    "\x1b7", "\x1b", "\x1b[", "\x1b[31", "\x07", "\x08", "\x00", "\x7f", "\u009b",
    "\r", "\n", "\r\n", "\n\n",
]  # fmt: skip
_BYTES = [b"\xff", b"\xe2\x9c", b"\xc3"]


def _random_log(rnd: random.Random) -> bytes:
    parts: list[bytes] = []
    for _ in range(rnd.randrange(1, 60)):
        roll = rnd.random()
        if roll < 0.01:
            parts.append(b"x" * 5000 + b"\r")  # a long progress line
        elif roll < 0.06:
            parts.append(rnd.choice(_BYTES))
        else:
            parts.append(rnd.choice(_PIECES).encode())
    return b"".join(parts)


CHECK_MODEL = """cases => {
  const v = window.httpfstreamViewer;
  const wrong = [];
  // Each line as drawn: [text, style, text, style, ...].
  function lines(model) {
    const out = [];
    for (let i = 0; i < model.count; i++) {
      out.push(v.Ansi.segments(model.line(i), model.start(i)));
    }
    return out;
  }
  function same(x, y) {
    return x.length === y.length && x.every((item, k) => item === y[k]);
  }
  for (const [bytes, cuts, expected] of cases) {
    const data = Uint8Array.from(bytes, c => c.charCodeAt(0));
    const whole = new v.LogModel();
    whole.push(data);
    whole.end();
    const parts = new v.LogModel();
    let at = 0;
    for (const cut of cuts.concat([data.length])) {
      parts.push(data.subarray(at, cut));
      at = cut;
    }
    parts.end();
    const a = lines(whole), b = lines(parts);
    const texts = a.map(x => x.filter((_, k) => k % 2 === 0).join(""));
    let why = null;
    if (JSON.stringify(texts) !== JSON.stringify(expected)) why = ["text", texts];
    else if (a.length !== b.length || a.some((x, i) => !same(x, b[i])))
      why = ["chunked", b.map(x => x.filter((_, k) => k % 2 === 0).join(""))];
    else {
      // Drawn as the raw lines would be, walked one after the other from
      // the start (no fast path, nothing overwritten taken out).
      const raw = new TextDecoder().decode(data).split("\\n");
      if (raw[raw.length - 1] === "") raw.pop();
      let style = v.Ansi.PLAIN;
      for (let i = 0; i < raw.length; i++) {
        if (!same(v.Ansi.segments(raw[i], style), b[i])) {
          why = ["style", i];
          break;
        }
        style = v.Ansi.scan(raw[i], style, null).style;
      }
    }
    if (why) wrong.push([bytes, cuts, why]);
  }
  return wrong.slice(0, 3);
}"""


async def test_lines_are_the_same_however_the_bytes_arrive(chromium, server):
    """
    Random logs of escapes, controls, CRs, multi-byte and broken UTF-8, fed
    whole and cut at random places: the same lines and styles either way,
    and the text a plain Python reading of the same grammar expects.
    """
    rnd = random.Random(11)
    cases = []
    for _ in range(400):
        data = _random_log(rnd)
        cuts = sorted(rnd.randrange(len(data) + 1) for _ in range(rnd.randrange(6)))
        cases.append([data.decode("latin-1"), cuts, _expected_lines(data)])
    await get(server.url("empty.log"), method="POST", data=b"")
    tab = await chromium.open(server.url("empty.log"))
    await tab.until_state("finished")
    assert await tab.eval(CHECK_MODEL, cases) == []
    await tab.close()
