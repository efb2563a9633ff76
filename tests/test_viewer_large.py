"""
The log page at any size (docs/PROTOCOL.md section 12) in headless
Chromium (`support.browser`), on small logs: it opens at the end reading
only the last lines, loads lines as they come into sight and lets go of
those far from it, opens at any ``#L`` line and highlights ranges, moves
by exact rows and pages with keys and the wheel on a log taller than the
browser allows (the page's height cap lowered by its test hook,
``window.httpfstreamViewerTesting``, on the same code path), folds the
sections build tools mark with their durations, shows each line's time,
searches the whole log through the server, and waits for a log that does
not exist yet.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from support.browser import HIGHLIGHTED, IN_SIGHT, ROW_IN_SIGHT, ROW_TEXT
from support.clients import appender, close, get
from twisted.internet import reactor
from twisted.internet.task import deferLater

V = "window.httpfstreamViewer"
BLOCK = 256  # lines in a block of the page (viewer.js)


def numbered(count: int, first: int = 1) -> bytes:
    return b"".join(b"line %d\n" % n for n in range(first, first + count))


async def post(server, name: str, data: bytes) -> None:
    status, _, _ = await get(server.url(name), method="POST", data=data)
    assert status == 200


def stamp(line: bytes) -> datetime:
    """The time a ``timestamps=1`` line starts with."""
    return datetime.strptime(line.split(b" ")[0].decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


async def until_shown(tab, n: int, text: str) -> None:
    """Line n is drawn with ``text`` and wholly in sight."""
    await tab.until(ROW_TEXT, [n, text])
    await tab.until(ROW_IN_SIGHT, n)


async def test_a_long_log_opens_at_its_end_reading_only_its_last_lines(
    chromium, server
):
    count = 20_000
    await post(server, "long.log", numbered(count))
    tab = await chromium.open(server.url("long.log"))
    await tab.until_state("finished")
    await until_shown(tab, count, f"line {count}")
    assert await tab.eval(f"{V}.lines") == count
    size = len(numbered(count))
    assert await tab.eval(f"{V}.bytes") == size
    assert await tab.eval("document.getElementById('size').textContent") == (
        f"{size / 1024:.1f} KiB · 20,000 lines"
    )
    # It holds the last blocks only, and asked for nothing but lines.
    assert 0 < await tab.eval(f"{V}.held") <= 3 * BLOCK
    assert await tab.eval(f"{V}.text(0)") is None
    asked = [parse_qs(urlsplit(url).query) for url in tab.requests[1:]]
    assert asked and all("lines" in query for query in asked), tab.requests
    follows = [q for q in asked if "follow" in q]
    assert follows[0]["lines"] == [str((count - 2 * BLOCK) // BLOCK * BLOCK + 1)]
    # The raw and download links: the bytes, saved under the log's name.
    raw = server.url("long.log", raw=1)
    assert await tab.eval("document.getElementById('raw').href") == raw
    assert await tab.eval("document.getElementById('download').href") == raw
    assert await tab.eval("document.getElementById('download').download") == "long.log"
    await tab.close()


async def test_lines_load_as_they_come_into_sight_and_far_ones_are_let_go(
    chromium, server
):
    count = 10_000
    await post(server, "scroll.log", numbered(count))
    tab = await chromium.open(server.url("scroll.log"), height=400)
    await tab.until_state("finished")
    await until_shown(tab, count, f"line {count}")
    tail = await tab.eval(f"{V}.blocks")
    read = min(tail) * BLOCK + 1  # the first line the page read
    # The wheel, up past what was read: lines come as they near the view.
    for _ in range(12):
        await tab.wheel(-2000)
    await tab.until(f"n => {V}.topLine < n", read - BLOCK)
    top = await tab.eval(f"{V}.topLine")
    await until_shown(tab, top, f"line {top}")
    await tab.until("() => !document.querySelector('.row.pending')")
    # Far away: the start of the log; the end is let go.
    await tab.press("Home")
    await until_shown(tab, 1, "line 1")
    await tab.until(
        "tail => !window.httpfstreamViewer.blocks.some(k => tail.includes(k))", tail
    )
    assert max(await tab.eval(f"{V}.blocks")) < 20
    assert await tab.eval(f"{V}.held") <= 20 * BLOCK
    # The bar dragged to the middle: the lines there.
    await tab.eval(
        "() => { const log = document.getElementById('log');"
        " log.scrollTop = (log.scrollHeight - log.clientHeight) / 2; }"
    )
    await tab.until("() => Math.abs(window.httpfstreamViewer.topLine - 5000) < 20")
    top = await tab.eval(f"{V}.topLine")
    await until_shown(tab, top, f"line {top}")
    assert 0 not in await tab.eval(f"{V}.blocks")
    # And back to the end, following again.
    await tab.press("End")
    await until_shown(tab, count, f"line {count}")
    assert await tab.eval(f"{V}.follow") is True
    await tab.close()


async def test_a_line_link_opens_there_and_ranges_are_highlighted(chromium, server):
    count = 50_000
    await post(server, "links.log", numbered(count))
    tab = await chromium.open(server.url("links.log") + "#L25000", height=400)
    await until_shown(tab, 25000, "line 25000")
    assert await tab.eval(f"() => {HIGHLIGHTED}") == "25000"
    assert await tab.eval(f"{V}.follow") is False
    # Only blocks near line 25000 (and the live stream's last lines).
    blocks = await tab.eval(f"{V}.blocks")
    assert all(abs(k - 25000 // BLOCK) <= 10 for k in blocks), blocks
    # A range.
    await tab.eval("location.hash = '#L100-L104'")
    await tab.until(f"() => {HIGHLIGHTED} === '100,101,102,103,104'")
    await tab.until(ROW_IN_SIGHT, 100)
    # A click on a number makes it the link; a shift-click a range from it.
    await tab.click('.ln[data-n="102"]')
    await tab.until("() => location.hash === '#L102'")
    await tab.click('.ln[data-n="106"]', modifiers=["Shift"])
    await tab.until("() => location.hash === '#L102-L106'")
    await tab.until(f"() => {HIGHLIGHTED} === '102,103,104,105,106'")
    # A line the log does not have yet is waited for.
    await tab.eval("location.hash = '#L50001'")
    await tab.until(f"() => !{V}.follow")
    await tab.close()


# The page's height cap, lowered: 3,000 px hold 166 rows of 18 px.
LOW_CAP = "window.httpfstreamViewerTesting = { maxHeight: 3000 };"


async def test_keys_and_wheel_move_by_rows_past_the_browsers_height_cap(
    chromium, server
):
    count = 5000  # 90,000 px of rows: thirty times the cap
    await post(server, "tall.log", numbered(count))
    tab = await chromium.open(server.url("tall.log"), height=400, init=LOW_CAP)
    await tab.until_state("finished")
    await until_shown(tab, count, f"line {count}")
    assert await tab.eval("document.getElementById('log').scrollHeight") <= 3000
    page = await tab.eval(
        "Math.floor(document.getElementById('log').clientHeight / 18)"
    )
    await tab.press("Home")
    await until_shown(tab, 1, "line 1")

    async def at(first: int) -> None:
        """The first line wholly in sight is ``first``, and those after it."""
        await tab.until(f"n => {V}.topLine === n", first)
        await tab.until(ROW_TEXT, [first + page - 2, f"line {first + page - 2}"])
        shown = await tab.eval(IN_SIGHT)
        assert shown == list(range(first, first + len(shown)))
        assert len(shown) >= page - 1

    # PageDown moves exactly one page, again and again; PageUp back.
    for n in range(1, 6):
        await tab.press("PageDown")
        await at(1 + n * page)
    await tab.press("PageUp")
    await at(1 + 4 * page)
    # Arrows a row; the wheel by its pixels (180 px: 10 rows of 18 px).
    await tab.press("ArrowDown")
    await tab.press("ArrowDown")
    await at(3 + 4 * page)
    await tab.wheel(180)
    await at(13 + 4 * page)
    await tab.press("ArrowUp")
    await at(12 + 4 * page)
    # Deep in the log too (far past what the bar's pixels could reach).
    await tab.eval(f"{V}.reveal(3000)")
    await tab.until(ROW_TEXT, [3000, "line 3000"])
    first = await tab.eval(f"{V}.topLine")
    await tab.press("PageDown")
    await at(first + page)
    # End: the last line at the bottom, following again.
    await tab.press("End")
    await until_shown(tab, count, f"line {count}")
    assert await tab.eval(f"{V}.follow") is True
    await tab.close()


# GitLab (one folded by its marker), GitHub, Buildkite (--- folded, +++ open).
SECTIONS = (
    b"Running with gitlab-runner\n"
    b"\x1b[0Ksection_start:1765000000:prepare[collapsed=true]\r\x1b[0K"
    b"\x1b[36;1mPreparing environment\x1b[0;m\n"
    + b"".join(b"prepare %d\n" % i for i in range(5))
    + b"\x1b[0Ksection_end:1765000012:prepare\r\x1b[0K\n"
    b"\x1b[0Ksection_start:1765000012:build\r\x1b[0KBuilding\n"
    + b"".join(b"cc file%d.c\n" % i for i in range(4))
    + b"\x1b[0Ksection_end:1765000095:build\r\x1b[0K\n"
    b"::group::Run tests\n"
    + b"".join(b"test %d ok\n" % i for i in range(3))
    + b"::endgroup::\n"
    b"--- :docker: Build image\n"
    + b"".join(b"step %d\n" % i for i in range(3))
    + b"+++ Run specs\n"
    + b"".join(b"spec %d \x1b[31mfailed\x1b[0m\n" % i for i in range(3))
    + b"done\n"
)

DRAWN = "Array.from(document.querySelectorAll('.row .ln'), a => Number(a.dataset.n))"


async def test_sections_fold_with_their_durations(chromium, server):
    await post(server, "sections.log", SECTIONS)
    tab = await chromium.open(server.url("sections.log"), height=600)
    await tab.until_state("finished")
    await tab.until(f"() => {V}.sections().length === 5")
    found = await tab.eval(f"{V}.sections()")
    keys = ("kind", "start", "end", "title", "folded")
    assert [tuple(s[key] for key in keys) for s in found] == [
        ("gitlab", 2, 8, "Preparing environment", True),
        ("gitlab", 9, 14, "Building", False),
        ("github", 15, 19, "Run tests", True),
        ("buildkite", 20, 23, ":docker: Build image", True),
        ("buildkite", 24, None, "Run specs", False),
    ]
    # GitLab's markers carry their times.
    assert [s["took"] for s in found[:2]] == ["12 s", "1 min 23 s"]
    # Folded bodies and the markers that end sections are not rows.
    rows = [1, 2, 9, 10, 11, 12, 13, 15, 20, 24, 25, 26, 27, 28]
    await tab.until(f"rows => JSON.stringify({DRAWN}) === JSON.stringify(rows)", rows)
    header = '.row.sec[data-line="2"]'
    assert await tab.eval(f"document.querySelector('{header} .title').textContent") == (
        "Preparing environment"
    )
    assert await tab.eval(f"document.querySelector('{header} .took').textContent") == (
        "12 s"
    )
    assert await tab.eval(f"document.querySelector('{header} .count').textContent") == (
        "5 lines"
    )
    # A click on a header opens it (its end marker stays hidden).
    await tab.click(f"{header} .title")
    rows = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 20, 24, 25, 26, 27, 28]
    await tab.until(f"rows => JSON.stringify({DRAWN}) === JSON.stringify(rows)", rows)
    # A link into a folded section opens it.
    await tab.eval("location.hash = '#L17'")
    await tab.until(ROW_IN_SIGHT, 17)
    assert await tab.eval(ROW_TEXT, [17, "test 1 ok"])
    assert 19 not in await tab.eval(DRAWN)  # ::endgroup::
    await tab.close()


async def test_a_sections_duration_comes_from_its_lines_times(chromium, server):
    a = await appender(server, "timed.log", ack=1)
    sent = 0

    async def send(data: bytes) -> None:
        nonlocal sent
        a.sendMessage(data)
        sent += len(data)
        await a.until_ack(sent)

    await send(b"::group::Slow step\nworking\n")
    tab = await chromium.open(server.url("timed.log"))
    await tab.until(f"() => {V}.sections().length === 1")
    # Still being written: open, no duration yet.
    assert (await tab.eval(f"{V}.sections()"))[0]["folded"] is False
    await deferLater(reactor, 0.3)  # the step takes its time
    await send(b"::endgroup::\n--- next\nmore\n")
    await tab.until(f"() => {V}.sections().length === 2")
    await tab.until(f"() => {V}.sections()[0].took !== ''")
    took = (await tab.eval(f"{V}.sections()"))[0]["took"]
    # From the group's line to its end marker, by the times the server keeps.
    _, _, stamped = await get(server.url("timed.log", lines="1-3", timestamps=1))
    first, _, end = (stamp(line) for line in stamped.splitlines())
    spent = (end - first).total_seconds()
    assert spent >= 0.3
    value, unit = re.fullmatch(r"([0-9.]+) (ms|s)", took).groups()
    assert abs(float(value) / (1000 if unit == "ms" else 1) - spent) <= 0.05, took
    assert (await tab.eval(f"{V}.sections()"))[0]["folded"] is True
    assert await close(a) == 1000
    await tab.until_state("finished")
    await tab.close()


async def test_sections_above_the_lines_read_come_from_the_servers_search(
    chromium, server
):
    content = (
        numbered(9)
        + b"::group::Early step\n"
        + numbered(1989, 11)
        + b"::endgroup::\n"
        + numbered(3000, 2001)
    )
    await post(server, "early.log", content)
    tab = await chromium.open(server.url("early.log"))
    await tab.until_state("finished")
    # Its start is in the log's first block, read at once; its end comes
    # from the search.
    await tab.until(f"() => {V}.sections().length === 1 && {V}.sections()[0].end")
    section = (await tab.eval(f"{V}.sections()"))[0]
    assert (section["start"], section["end"], section["folded"]) == (10, 2000, True)
    # Folded: lines 11 to 2000 are not rows.
    await tab.until(f"() => {V}.rows === 5000 - 1990")
    await tab.press("Home")
    await tab.until(ROW_IN_SIGHT, 2001)
    await tab.close()


async def test_each_lines_time_as_clock_time_or_since_the_log_began(chromium, server):
    a = await appender(server, "times.log", ack=1)
    a.sendMessage(b"first\n")
    await a.until_ack(6)
    await deferLater(reactor, 0.25)  # so that the two lines' times differ
    a.sendMessage(b"second\n")
    await a.until_ack(13)
    _, _, stamped = await get(server.url("times.log", lines="1-2", timestamps=1))
    moments = [stamp(line) for line in stamped.splitlines()]
    tab = await chromium.open(server.url("times.log"), timezone_id="UTC")
    await tab.until(ROW_TEXT, [2, "second"])
    shown = (
        "n => getComputedStyle(document.querySelector("
        "'.ln[data-n=\"' + n + '\"]'), '::after').content"
    )
    assert await tab.eval(shown, 1) == "none"
    await tab.click("#times")
    assert await tab.eval("document.getElementById('times').textContent") == (
        "times: clock"
    )
    clock = [f'"{m.strftime("%H:%M:%S.")}{m.microsecond // 1000:03d}"' for m in moments]
    await tab.until(f"([n, t]) => ({shown})(n) === t", [1, clock[0]])
    assert await tab.eval(shown, 2) == clock[1]
    await tab.click("#times")
    gap = round((moments[1] - moments[0]).total_seconds() * 1000)
    assert gap >= 250
    await tab.until(f"([n, t]) => ({shown})(n) === t", [1, '"+0:00.000"'])
    assert await tab.eval(shown, 2) == f'"+0:00.{gap:03d}"'
    await tab.click("#times")
    await tab.until(f"n => ({shown})(n) === 'none'", 1)
    assert await close(a) == 1000
    await tab.close()


async def test_search_finds_any_line_and_live_matches_keep_coming(chromium, server):
    needles = {5: b"a needle here", 12000: b"The NEEDLE again", 19990: b"needle last"}
    content = b"".join(needles.get(n, b"line %d" % n) + b"\n" for n in range(1, 20001))
    a = await appender(server, "search.log", ack=1)
    a.sendMessage(content)
    await a.until_ack(len(content))
    tab = await chromium.open(server.url("search.log"), height=400)
    await until_shown(tab, 20000, "line 20000")
    await tab.fill("#search", "needle")
    await tab.press("Enter")
    # From the end of the log: its first match, then on, round to the start.
    await until_shown(tab, 5, "a needle here")
    await tab.until("() => document.getElementById('hits').textContent === '1 of 3'")
    assert await tab.eval(
        "document.querySelector('.row.current mark').textContent"
    ) == ("needle")
    await tab.press("Enter")
    await until_shown(tab, 12000, "The NEEDLE again")
    assert await tab.eval(
        "document.querySelector('.row.current mark').textContent"
    ) == ("NEEDLE")
    await tab.press("Enter")
    await until_shown(tab, 19990, "needle last")
    await tab.press("Enter")
    await until_shown(tab, 5, "a needle here")
    await tab.press("Shift+Enter")
    await until_shown(tab, 19990, "needle last")
    # From where the reader is: the next match after what is in sight.
    await tab.eval(f"{V}.reveal(11000)")
    await until_shown(tab, 11000, "line 11000")
    await tab.press("Enter")
    await until_shown(tab, 12000, "The NEEDLE again")
    # Matches appended later come too.
    a.sendMessage(b"one more needle\n")
    await tab.until(f"() => {V}.search.count === 4")
    assert (await tab.eval(f"{V}.search"))["hits"] == [5, 12000, 19990, 20001]
    # Case, then a regular expression.
    await tab.click("#case")
    await tab.until(f"() => {V}.search.done && {V}.search.count === 3")
    await tab.click("#case")
    await tab.click("#regex")
    await tab.fill("#search", "needle (here|last)$")
    await tab.press("Enter")
    await tab.until(f"() => {V}.search.done && {V}.search.count === 2")
    assert await close(a) == 1000
    await tab.close()


async def test_a_link_opened_before_the_log_exists_waits_then_follows(chromium, server):
    tab = await chromium.open(server.url("ci/42/build.log"))
    assert tab.status == 404
    await tab.until_state("waiting")
    assert await tab.eval("document.getElementById('waiting').hidden") is False
    a = await appender(server, "ci/42/build.log", ack=1)
    a.sendMessage(b"\x1b[1mStarting job\x1b[0m\n")
    await tab.until_state("live")
    await tab.until_lines(1)
    assert await tab.eval("document.getElementById('waiting').hidden") is True
    a.sendMessage(b"step 1\n")
    await tab.until_lines(2)
    assert await close(a) == 1000
    await tab.until_state("finished")
    assert await tab.lines() == ["Starting job", "step 1"]
    await tab.close()


async def test_following_a_log_that_pours_in_holds_a_bounded_window(chromium, server):
    a = await appender(server, "pour.log", ack=1)
    a.sendMessage(b"start\n")
    await a.until_ack(6)
    tab = await chromium.open(server.url("pour.log"))
    await tab.until_state("live")
    sent = 6
    for k in range(50):
        chunk = numbered(2000, 2 + 2000 * k)
        a.sendMessage(chunk)
        sent += len(chunk)
    await a.until_ack(sent)
    last = 1 + 50 * 2000
    await tab.until_lines(last)
    await until_shown(tab, last, f"line {last}")
    # Followed live all along, and it kept only lines near the end.
    assert await tab.eval(f"{V}.follow") is True
    assert await tab.eval(f"{V}.held") <= 12 * BLOCK
    assert await tab.eval(f"{V}.text(0)") is None
    assert await tab.eval(f"{V}.bytes") == sent
    assert await close(a) == 1000
    await tab.until_state("finished")
    await tab.close()
