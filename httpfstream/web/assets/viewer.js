"use strict";
// The page that shows one log (docs/PROTOCOL.md section 12), at any size.
//
// It opens at the end: HEAD ?lines=-0 says how many lines there are, and
// the log is followed from a few hundred lines before its end (over a
// WebSocket while an appender holds it, else GET ?follow=1), every line
// stamped with its time.  Lines further up come when they are about to
// be seen, a block at a time (lines=A-B), and blocks far from sight are
// let go (Lines.Store): what the page holds does not grow with the log.
//
// Scrolling is by rows, not pixels: `top` (a row number, fractional) is
// the truth, the scroll bar only shows it (the browser caps an element's
// height, so on a long log a pixel of the bar is many rows).  Keys and
// the wheel move `top` by rows and pages, never by the bar's pixels.
// Rows are the lines shown: a folded section's lines and the markers
// that end sections are not rows (Sections).
//
// Search, times and sections: see their parts below.
(function () {
  const testing = window.httpfstreamViewerTesting || {};
  const BLOCK = testing.block || 256;        // lines per block
  const TAIL = 2 * BLOCK;                    // lines read before the end at first
  const RING = 4096;                         // last live lines kept whatever is in sight
  const KEEP = 8;                            // blocks held beyond those wanted, each side
  const MARGIN = 40;                         // rows drawn beyond the view
  const AHEAD = 200;                         // rows fetched beyond the view
  const FETCHES = 3;                         // snapshots of lines in flight
  const RUN = 4;                             // blocks one snapshot may bring
  const LIMIT = 20000;                       // characters drawn of one line
  const MAX_HEIGHT = testing.maxHeight || 15000000;  // px: under every browser's cap
  const HITS = 10000;                        // search matches asked at a time

  const scroller = document.getElementById("log");
  const sizer = document.getElementById("sizer");
  const rowsEl = document.getElementById("rows");
  const stateEl = document.getElementById("state");
  const sizeEl = document.getElementById("size");
  const endButton = document.getElementById("end");
  const waitingEl = document.getElementById("waiting");
  const searchEl = document.getElementById("search");
  const caseEl = document.getElementById("case");
  const regexEl = document.getElementById("regex");
  const hitsEl = document.getElementById("hits");
  const timesEl = document.getElementById("times");
  const lineHeight = parseFloat(getComputedStyle(document.documentElement)
    .getPropertyValue("--line-height")) || 18;

  document.getElementById("raw").href = Net.url({ raw: "1" });
  const download = document.getElementById("download");
  download.href = Net.url({ raw: "1" });

  // ---- what the page holds -------------------------------------------------

  const store = new Lines.Store(BLOCK, RING);
  const sections = new Sections.Sections();
  const model = new Lines.LogModel({
    stamped: true,
    onLine: function (n, text, start, time, end, raw) {
      store.live(n, text, start, time, end);
      sections.see(n, raw);
    },
  });

  let state = "connecting";
  let started = false;      // the follow's first line is known
  let done = false;         // finished: nothing more will come
  let headLines = 0;        // lines the first HEAD counted
  let headSize = 0;
  let byteBase = 0;         // where the current stream's first line starts
  let total = 0;            // lines in the log, as far as the page knows
  let rowCount = 0;
  let top = 0;              // the row at the top of the view (fractional)
  let viewRows = 1;
  let follow = true;        // keep the end in sight
  let paint = 0;            // bumped when every row must be drawn again
  let shownAt = null;       // performance.now() when the finished log's end was drawn
  let hlFrom = 0, hlTo = 0; // the #L lines
  let pendingTarget = 0;    // a #L line not there yet
  let timesMode = "off";    // "off", "clock", "elapsed"

  function setState(next, detail) {
    state = next;
    stateEl.textContent = next;
    stateEl.className = "state " + next;
    stateEl.title = detail || "";
    document.body.dataset.state = next;
  }

  function totalNow() {
    if (!started) return headLines;
    const known = model.next - 1 + (model.tail === "" ? 0 : 1);
    return Math.max(known, headLines);
  }

  // Lines a snapshot may be asked for: every line ended before the live
  // stream's last one (that one is the stream's to bring).
  function complete() {
    if (!started) return 0;
    return done ? totalNow() : model.next - 1;
  }

  // [text, start style, time] of line n, or null if it is not here yet.
  function lineOf(n) {
    if (started && n === model.next && model.tail !== "") {
      return [model.partial, model.tailStart, model.partialTime];
    }
    return store.get(n);
  }

  // ---- times -----------------------------------------------------------------

  // Times of lines not held (section durations, the log's first line):
  // asked one line at a time, kept in a small cache.
  const times = new Map();
  const timeQueue = [];
  let timeBusy = false;
  function timeAt(n) {
    const held = lineOf(n);
    if (held !== null && !isNaN(held[2])) return held[2];
    const known = times.get(n);
    if (known !== undefined) return known;
    if (started && n <= complete() && timeQueue.indexOf(n) < 0) {
      timeQueue.push(n);
      askTimes();
    }
    return NaN;
  }
  async function askTimes() {
    if (timeBusy) return;
    timeBusy = true;
    while (timeQueue.length) {
      const n = timeQueue.shift();
      const got = await Net.lines(n, n);
      if (times.size > 4096) times.clear();
      times.set(n, got && got.status === 200 && got.times.length ? got.times[0] : NaN);
      paint++;
      schedule();
    }
    timeBusy = false;
  }

  function pad(n, width) {
    return String(n).padStart(width, "0");
  }
  function clock(ms) {
    const d = new Date(ms);
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) +
      "." + pad(d.getMilliseconds(), 3);
  }
  function elapsed(ms) {
    const sign = ms < 0 ? "-" : "+";
    ms = Math.abs(Math.round(ms));
    const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60;
    const s = Math.floor(ms / 1000) % 60;
    return sign + (h ? h + ":" + pad(m, 2) : String(m)) + ":" + pad(s, 2) + "." + pad(ms % 1000, 3);
  }
  function duration(ms) {
    if (!(ms >= 0)) return "";
    if (ms < 1000) return Math.round(ms) + " ms";
    const s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + pad(Math.floor(s % 60), 2) + " s";
    return Math.floor(m / 60) + " h " + pad(m % 60, 2) + " min";
  }
  function timeText(time) {
    if (timesMode === "off" || isNaN(time)) return "";
    if (timesMode === "clock") return clock(time);
    const base = timeAt(1);
    return isNaN(base) ? "" : elapsed(time - base);
  }
  const TIMES = { off: "clock", clock: "elapsed", elapsed: "off" };
  const TIMES_LABEL = { off: "times: off", clock: "times: clock", elapsed: "times: since start" };
  timesEl.addEventListener("click", function () {
    timesMode = TIMES[timesMode];
    timesEl.textContent = TIMES_LABEL[timesMode];
    timesEl.setAttribute("aria-pressed", timesMode === "off" ? "false" : "true");
    document.body.dataset.times = timesMode;
    paint++;
    schedule();
  });

  // How long section s took: by its markers' times (GitLab), else by the
  // times of its first line and of the line after it.
  function took(s) {
    if (s.end === null) return "";
    if (!isNaN(s.t0) && !isNaN(s.t1)) return duration(s.t1 - s.t0);
    const after = s.kind === "buildkite" ? s.end + 1 : s.end;
    const t0 = timeAt(s.start), t1 = timeAt(Math.min(after, totalNow()));
    return isNaN(t0) || isNaN(t1) ? "" : duration(t1 - t0);
  }

  // ---- search ----------------------------------------------------------------

  const search = {
    text: "", regex: false, caseSensitive: false,
    hits: [], current: -1, done: false, truncated: false, error: null,
    controller: null, wanted: 0, fromStart: false, matcher: null, version: 0,
  };

  function hitIndex(n) {
    const hits = search.hits;
    let lo = 0, hi = hits.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (hits[mid] < n) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  function isHit(n) {
    const i = hitIndex(n);
    return i < search.hits.length && search.hits[i] === n;
  }

  // What to mark in a row's shown text: [from, to) ranges.
  function makeMatcher() {
    const text = search.text;
    if (search.regex) {
      let re;
      try {
        re = new RegExp(text, search.caseSensitive ? "g" : "gi");
      } catch (e) {
        return null;  // RE2 syntax this browser does not read: rows are still marked
      }
      return function (shown) {
        const out = [];
        re.lastIndex = 0;
        let m;
        while ((m = re.exec(shown)) !== null && out.length < 100) {
          if (m[0] === "") { re.lastIndex++; continue; }
          out.push([m.index, m.index + m[0].length]);
        }
        return out;
      };
    }
    const needle = search.caseSensitive ? text : text.toLowerCase();
    return function (shown) {
      const hay = search.caseSensitive ? shown : shown.toLowerCase();
      const out = [];
      let at = 0;
      while (out.length < 100 && (at = hay.indexOf(needle, at)) >= 0) {
        out.push([at, at + needle.length]);
        at += needle.length;
      }
      return out;
    };
  }

  function startSearch() {
    if (search.controller) search.controller.abort();
    search.text = searchEl.value;
    search.regex = regexEl.getAttribute("aria-pressed") === "true";
    search.caseSensitive = caseEl.getAttribute("aria-pressed") === "true";
    search.hits = [];
    search.current = -1;
    search.done = false;
    search.truncated = false;
    search.error = null;
    search.version++;
    search.matcher = search.text ? makeMatcher() : null;
    paint++;
    if (!search.text) {
      search.controller = null;
      search.done = true;
      schedule();
      return;
    }
    more(1, false);
  }

  // Ask the server for matches from line `from` on.  Once the log as it
  // is now has been searched (`done`), matches in what is appended later
  // keep coming while an appender holds it (a live search).
  function more(from, live) {
    const controller = new AbortController();
    search.controller = controller;
    const version = search.version;
    if (!live) search.done = false;
    const params = {
      text: search.text, regex: search.regex, caseSensitive: search.caseSensitive,
      max: HITS, follow: live,
    };
    if (from > 1) params.lines = String(from);
    Net.grep(params, function (hit) {
      if (version !== search.version) return;
      const hits = search.hits;
      if (!hits.length || hit.line > hits[hits.length - 1]) hits.push(hit.line);
      if (search.wanted) step(search.wanted);
      paint++;
      schedule();
    }, controller.signal).then(function (result) {
      if (version !== search.version) return;
      search.controller = null;
      if (result.error && result.error !== "stopped") search.error = result.error;
      if (!live) {
        search.done = true;
        search.truncated = !!(result.done && result.done.truncated);
        if (result.done && !search.truncated && !done) {
          // The last line searched may not have ended: again from it.
          more(Math.max(from, from + result.done.lines - 1), true);
        }
      }
      if (search.wanted) step(search.wanted);
      schedule();
    });
  }

  // The next (dir 1) or previous (-1) match: after the current one if it
  // is in sight, else from what is in sight; round to the other end.  A
  // new search from the end of the log (following it) starts at its first
  // match: nothing is after the end, and the matches come in order, so
  // the first is there long before the whole log is searched.
  function step(dir) {
    const hits = search.hits;
    if (!hits.length) {
      search.wanted = search.done ? 0 : dir;
      return;
    }
    let i;
    if (search.current >= 0 && search.current < hits.length && inSight(hits[search.current])) {
      i = search.current + dir;
    } else if (dir > 0 && search.fromStart) {
      i = 0;
    } else if (dir > 0) {
      i = hitIndex(sightLine(Math.ceil(top - 0.01)));
    } else {
      i = hitIndex(sightLine(Math.floor(top + viewRows + 0.01) - 1) + 1) - 1;
    }
    if (i >= hits.length) {
      if (!search.done) { search.wanted = dir; return; }
      if (search.truncated) {
        // More than were asked for: the next ones, from the last one on.
        search.truncated = false;
        search.wanted = dir;
        more(hits[hits.length - 1] + 1, false);
        return;
      }
      i = 0;
    }
    if (i < 0) i = hits.length - 1;
    search.wanted = 0;
    search.fromStart = false;
    search.current = i;
    reveal(hits[i], true);
    paint++;
    schedule();
  }

  // The line on row `row`, kept within the rows there are.
  function sightLine(row) {
    return rowCount ? sections.lineAt(Math.min(Math.max(row, 0), rowCount - 1)) : 1;
  }

  searchEl.addEventListener("keydown", function (event) {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const dir = event.shiftKey ? -1 : 1;
    const regex = regexEl.getAttribute("aria-pressed") === "true";
    const sensitive = caseEl.getAttribute("aria-pressed") === "true";
    if (searchEl.value !== search.text || regex !== search.regex ||
        sensitive !== search.caseSensitive || search.error) {
      startSearch();
      search.fromStart = follow;
      search.wanted = search.text ? dir : 0;
      schedule();
    } else if (search.text) {
      step(dir);
    }
  });
  searchEl.addEventListener("search", function () {
    if (searchEl.value === "" && search.text !== "") startSearch();
  });
  for (const toggle of [caseEl, regexEl]) {
    toggle.addEventListener("click", function () {
      const on = toggle.getAttribute("aria-pressed") !== "true";
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      if (search.text) {
        startSearch();
        search.fromStart = follow;
        search.wanted = 1;
      }
    });
  }

  function describeSearch() {
    let text = "";
    if (search.error) text = search.error;
    else if (search.text) {
      const n = search.hits.length;
      const count = n.toLocaleString() + (search.truncated ? "+" : "");
      if (!n) text = search.done ? "no match" : "searching…";
      else if (search.current >= 0) text = (search.current + 1).toLocaleString() + " of " + count;
      else text = count + (n === 1 && !search.truncated ? " match" : " matches");
      if (n && !search.done) text += " so far";
    }
    if (hitsEl.textContent !== text) hitsEl.textContent = text;
    hitsEl.className = "hits" + (search.error ? " error" : "");
  }

  // ---- drawing ---------------------------------------------------------------

  const drawn = new Map();  // line -> row element in the document

  function styledSpan(text, st, marked) {
    if (st.plain && !marked) return document.createTextNode(text);
    const span = document.createElement(marked ? "mark" : "span");
    if (st.className) span.className = st.className;
    if (st.color) span.style.color = st.color;
    if (st.background) span.style.backgroundColor = st.background;
    span.textContent = text;
    return span;
  }

  // The text of a line, coloured, with the search's matches marked.
  function fillText(el, text, start) {
    el.textContent = "";
    const parts = Ansi.segments(text, start, LIMIT);
    let marks = [];
    if (search.matcher && isHit(Number(el.parentElement.dataset.line))) {
      let shown = "";
      for (let k = 0; k < parts.length; k += 2) shown += parts[k];
      marks = search.matcher(shown);
    }
    let at = 0, m = 0;
    for (let k = 0; k < parts.length; k += 2) {
      let piece = parts[k];
      const st = parts[k + 1];
      const end = at + piece.length;
      // Cut this piece where marks begin and end.
      while (piece !== "") {
        while (m < marks.length && marks[m][1] <= at) m++;
        const mark = m < marks.length ? marks[m] : null;
        if (mark === null || mark[0] >= end) {
          el.append(styledSpan(piece, st, false));
          break;
        }
        if (mark[0] > at) {
          el.append(styledSpan(piece.slice(0, mark[0] - at), st, false));
          piece = piece.slice(mark[0] - at);
          at = mark[0];
          continue;
        }
        const upTo = Math.min(mark[1], end);
        el.append(styledSpan(piece.slice(0, upTo - at), st, true));
        piece = piece.slice(upTo - at);
        at = upTo;
      }
      at = end;
    }
    if (text.length > LIMIT) {
      const more = document.createElement("span");
      more.className = "more";
      more.textContent = " … " + (text.length - LIMIT).toLocaleString() +
        " more characters (see raw)";
      el.append(more);
    }
  }

  function makeRow(n) {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.line = String(n);
    const number = document.createElement("a");
    number.className = "ln";
    number.href = "#L" + n;
    number.dataset.n = String(n);
    const text = document.createElement("span");
    text.className = "tx";
    row.append(number, text);
    row.hfKey = null;
    return row;
  }

  function fillRow(row, n) {
    const line = lineOf(n);
    const s = sections.at(n);
    const key = line === null ? null : line[0];
    if (row.hfKey === key && line !== null && row.hfStart === line[1] &&
        row.hfPaint === paint && row.hfSection === s) return;
    row.hfKey = key;
    row.hfStart = line === null ? null : line[1];
    row.hfPaint = paint;
    row.hfSection = s;
    const [number, text] = row.childNodes;
    row.classList.toggle("pending", line === null);
    row.classList.toggle("sec", s !== undefined);
    if (line === null) {
      number.dataset.time = "";
      text.textContent = "";
      return;
    }
    // Shown by the stylesheet beside the number (never copied with the text).
    number.dataset.time = timeText(line[2]);
    if (s === undefined) {
      fillText(text, line[0], line[1]);
      return;
    }
    // A section's header: its fold, its title, how long it took.
    const folded = sections.folded(s);
    row.classList.toggle("folded", folded);
    row.classList.toggle("dim", !!s.dim);
    text.textContent = "";
    const fold = document.createElement("span");
    fold.className = "fold";
    fold.textContent = folded ? "▸" : "▾";
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = s.title || "";
    text.append(fold, title);
    const spent = took(s);
    if (spent) {
      const d = document.createElement("span");
      d.className = "took";
      d.textContent = spent;
      text.append(d);
    }
    const body = sections.body(s, totalNow());
    if (folded && body > 0) {
      const c = document.createElement("span");
      c.className = "count";
      c.textContent = body.toLocaleString() + (body === 1 ? " line" : " lines");
      text.append(c);
    }
  }

  function inSight(n) {
    if (sections.hidden(n)) return false;
    const row = sections.rowOf(n);
    return row >= top - 0.01 && row + 1 <= top + viewRows + 0.01;
  }

  function layout() {
    const from = Math.max(0, Math.floor(top) - MARGIN);
    const to = Math.min(rowCount, Math.ceil(top + viewRows) + MARGIN);
    const rows = [];
    let changed = false;
    const keep = new Set();
    for (let r = from; r < to; r++) {
      const n = sections.lineAt(r);
      let row = drawn.get(n);
      if (row === undefined) {
        row = makeRow(n);
        drawn.set(n, row);
        changed = true;
      }
      fillRow(row, n);
      row.classList.toggle("hl", n >= hlFrom && n <= hlTo);
      const hit = search.hits.length > 0 && isHit(n);
      row.classList.toggle("hit", hit);
      row.classList.toggle("current", hit && search.hits[search.current] === n);
      keep.add(n);
      rows.push(row);
    }
    for (const [n, row] of drawn) {
      if (!keep.has(n)) { drawn.delete(n); row.remove(); changed = true; }
    }
    if (changed || rowsEl.childNodes.length !== rows.length) rowsEl.replaceChildren(...rows);
    // Row `from` is seen (from - top) rows below the top of the view.
    const offset = scroller.scrollTop + (from - top) * lineHeight;
    rowsEl.style.transform = "translateY(" + offset + "px)";
    if (shownAt === null && done && to === rowCount && rowCount > 0) {
      const last = drawn.get(sections.lineAt(rowCount - 1));
      if (last && !last.classList.contains("pending")) {
        shownAt = performance.now();
        performance.mark("httpfstream:last-line-shown");
      }
    }
  }

  // ---- where the view is ---------------------------------------------------

  let sizerHeight = -1;
  let expected = -1;        // the scrollTop the page set last

  function maxTop() {
    return Math.max(0, rowCount - viewRows);
  }
  // The scroll bar shows `top`: the bar's range stands for every row.
  function place() {
    const range = sizerHeight - scroller.clientHeight;
    const most = maxTop();
    const want = most > 0 && range > 0 ? top / most * range : 0;
    expected = want;
    if (Math.abs(scroller.scrollTop - want) >= 1) scroller.scrollTop = want;
    expected = scroller.scrollTop;
  }
  function setFollow(on) {
    follow = on;
    endButton.hidden = on;
    document.body.dataset.follow = on ? "1" : "0";
  }
  function moveTo(row) {
    top = Math.min(Math.max(0, row), maxTop());
    setFollow(top >= maxTop() - 0.01);
    place();
    layout();
    plan();
  }
  function moveBy(rows) {
    moveTo(top + rows);
  }
  // The reader moved the bar (or the browser scrolled): the rows follow.
  scroller.addEventListener("scroll", function () {
    const at = scroller.scrollTop;
    if (Math.abs(at - expected) >= 1) {
      const range = sizerHeight - scroller.clientHeight;
      top = range > 0 ? at / range * maxTop() : 0;
      expected = at;
      setFollow(at >= range - 1);
    }
    layout();
    plan();
  }, { passive: true });

  scroller.addEventListener("wheel", function (event) {
    if (event.ctrlKey || event.deltaY === 0) return;  // zoom, or sideways
    event.preventDefault();
    const unit = event.deltaMode === 1 ? lineHeight :
      event.deltaMode === 2 ? scroller.clientHeight : 1;
    if (event.deltaX) scroller.scrollLeft += event.deltaX * unit;
    moveBy(event.deltaY * unit / lineHeight);
  }, { passive: false });

  function page() {
    return Math.max(1, Math.floor(scroller.clientHeight / lineHeight));
  }
  function onKey(event) {
    if (event.altKey || event.metaKey) return;
    const ctrl = event.ctrlKey;
    let rows = null;
    switch (event.key) {
      case "ArrowDown": rows = ctrl ? null : 1; break;
      case "ArrowUp": rows = ctrl ? null : -1; break;
      case "PageDown": rows = page(); break;
      case "PageUp": rows = -page(); break;
      case " ": rows = ctrl ? null : event.shiftKey ? -page() : page(); break;
      case "Home": moveTo(0); event.preventDefault(); return;
      case "End": moveTo(maxTop()); event.preventDefault(); return;
      case "/":
        if (!ctrl) { searchEl.focus(); searchEl.select(); event.preventDefault(); }
        return;
    }
    if (rows === null) return;
    event.preventDefault();
    moveBy(rows);
  }
  scroller.addEventListener("keydown", onKey);
  document.addEventListener("keydown", function (event) {
    if (event.target === document.body || event.target === document.documentElement) onKey(event);
  });

  endButton.addEventListener("click", function () {
    setFollow(true);
    scroller.focus({ preventScroll: true });
    schedule();
  });
  window.addEventListener("resize", schedule);

  // Bring line n into sight; `center` puts it a third of the way down
  // even if it is in sight.  A folded section that hides it opens.
  let target = 0;           // the line last brought into sight
  function reveal(n, center) {
    target = n;
    if (n > totalNow()) {
      pendingTarget = n;
      setFollow(false);
      return;
    }
    pendingTarget = 0;
    if (sections.unfold(n)) rowsChanged();
    if (inSight(n) && !center) return;
    setFollow(false);
    const row = sections.rowOf(n);
    top = Math.min(Math.max(0, Math.round(row - viewRows / 3)), maxTop());
    place();
    schedule();
  }

  // Rows came or went above the view (a fold, new sections): the line at
  // the top stays there.
  function keepTopLine(change) {
    const first = Math.floor(top);
    const line = rowCount > 0 ? sections.lineAt(Math.min(first, rowCount - 1)) : 0;
    const fraction = top - first;
    change();
    rowCount = sections.rows(total);
    if (!follow && line) top = Math.min(Math.max(0, sections.rowOf(line) + fraction), maxTop());
  }
  function rowsChanged() {
    rowCount = sections.rows(total);
    paint++;
  }

  rowsEl.addEventListener("click", function (event) {
    const number = event.target.closest(".ln");
    if (number && event.shiftKey && hlFrom) {
      // A range from the highlighted line.
      event.preventDefault();
      const n = Number(number.dataset.n);
      const a = Math.min(hlFrom, n), b = Math.max(hlFrom, n);
      window.location.hash = a === b ? "#L" + a : "#L" + a + "-L" + b;
      return;
    }
    if (number) return;
    const row = event.target.closest(".row.sec");
    if (row === null) return;
    const n = Number(row.dataset.line);
    keepTopLine(function () { sections.toggle(n); });
    paint++;
    place();
    schedule();
  });

  function followHash(center) {
    const m = /^#L([0-9]{1,12})(?:-L?([0-9]{1,12}))?$/.exec(window.location.hash);
    if (m) {
      const a = parseInt(m[1], 10), b = m[2] ? parseInt(m[2], 10) : a;
      hlFrom = Math.min(a, b);
      hlTo = Math.max(a, b);
      setFollow(false);
      reveal(hlFrom, center);
    } else {
      hlFrom = hlTo = 0;
    }
    schedule();
  }
  window.addEventListener("hashchange", function () { followHash(false); });

  // ---- each frame ------------------------------------------------------------

  function describeSize() {
    const n = started ? byteBase + model.content : headSize;
    let human;
    if (n < 1024) human = n + " B";
    else if (n < 1024 * 1024) human = (n / 1024).toFixed(1) + " KiB";
    else if (n < 1024 * 1024 * 1024) human = (n / 1048576).toFixed(1) + " MiB";
    else human = (n / 1073741824).toFixed(2) + " GiB";
    const text = human + " · " + total.toLocaleString() + (total === 1 ? " line" : " lines");
    if (sizeEl.textContent !== text) sizeEl.textContent = text;
    sizeEl.title = n.toLocaleString() + " bytes";
    document.body.dataset.bytes = String(n);
  }

  // New lines are drawn at the next frame, but no more often than every
  // FRAME_GAP ms: a log that pours in spends its time reading rather than
  // drawing lines that scroll past at once.  Scrolling draws at once.
  const FRAME_GAP = 50;
  let scheduled = false;
  let lastFrame = -Infinity;
  let gutter = 0;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    const wait = lastFrame + FRAME_GAP - performance.now();
    if (wait > 0) setTimeout(function () { requestAnimationFrame(frame); }, wait);
    else requestAnimationFrame(frame);
  }
  function frame() {
    scheduled = false;
    lastFrame = performance.now();
    total = totalNow();
    if (sections.dirty) {
      keepTopLine(function () {
        // Sections found later never fold away what the reader looks at.
        const seen = rowCount ? sightLine(Math.ceil(top - 0.01)) : 0;
        sections.build();
        if (seen && !follow) sections.unfold(seen);
        if (target) sections.unfold(target);
      });
      paint++;
    }
    rowCount = sections.rows(total);
    describeSize();
    describeSearch();
    const digits = String(Math.max(total, 1)).length;
    if (digits !== gutter) {
      gutter = digits;
      document.documentElement.style.setProperty("--gutter", (digits + 1) + "ch");
    }
    viewRows = scroller.clientHeight / lineHeight;
    const height = Math.min(rowCount * lineHeight, MAX_HEIGHT);
    if (height !== sizerHeight) {
      sizerHeight = height;
      sizer.style.height = height + "px";
    }
    if (pendingTarget && pendingTarget <= total) {
      reveal(pendingTarget, true);
    } else if (follow) {
      top = maxTop();
    }
    top = Math.min(Math.max(0, top), maxTop());
    place();
    layout();
    plan();
  }

  // ---- fetching what is about to be seen -------------------------------------

  const inFlight = new Set();   // blocks a snapshot is bringing
  let retryAt = 0;

  // The lines about to be seen, by block: the lines of each block that
  // rows near the view show ([block, first, last]), nearest first.
  function wantedLines() {
    const from = Math.max(0, Math.floor(top) - AHEAD);
    const to = Math.min(rowCount, Math.ceil(top + viewRows) + AHEAD);
    const wanted = [];
    let current = null;
    for (let r = from; r < to; r++) {
      const n = sections.lineAt(r);
      const k = store.blockOf(n);
      if (current !== null && current[0] === k) current[2] = n;
      else wanted.push(current = [k, n, n]);
    }
    return wanted;
  }

  // What the block of `want` lacks: [from, to] (lines), or null.  A block
  // whose lines are mostly shown is read whole; one showing a few lines
  // (the headers of folded sections) only those.
  function lacking(want, avail) {
    const [k, lo, hi] = want;
    const last = Math.min(hi, avail);
    if (lo > last) return null;  // only the live stream has them
    const dense = hi - lo >= 8;
    const end = dense ? Math.min((k + 1) * BLOCK, avail) : last;
    const b = store.blocks.get(k);
    if (b !== undefined && b.first <= lo) {
      const next = b.first + b.texts.length;
      if (next > last) return null;
      return [next, end];
    }
    return [lo, end];
  }

  function plan() {
    if (!started || rowCount === 0) return;
    const wanted = wantedLines();
    if (!wanted.length) return;
    const low = wanted[0][0], high = wanted[wanted.length - 1][0];
    store.keep(low - KEEP, follow ? Infinity : high + KEEP);
    if (performance.now() < retryAt) return;
    const avail = complete();
    const middle = store.blockOf(sightLine(Math.floor(top + viewRows / 2)));
    wanted.sort(function (a, b) { return Math.abs(a[0] - middle) - Math.abs(b[0] - middle); });
    for (let w = 0; w < wanted.length; w++) {
      const k = wanted[w][0];
      if (inFlight.has(k)) continue;
      const missing = lacking(wanted[w], avail);
      if (missing === null) continue;
      const b = store.blocks.get(k);
      if (b !== undefined && b.first > missing[0]) store.drop(k);  // read again from higher up
      if (store.fromRing(missing[0], missing[1])) continue;
      if (inFlight.size >= FETCHES) break;
      // One snapshot for this block and the blocks after it that want
      // the lines right after.
      const blocks = [k];
      let end = missing[1];
      for (let j = k + 1; blocks.length < RUN; j++) {
        const next = wanted.find(function (x) { return x[0] === j; });
        if (next === undefined || inFlight.has(j) || store.blocks.has(j)) break;
        const more = lacking(next, avail);
        if (more === null || more[0] !== end + 1) break;
        blocks.push(j);
        end = more[1];
      }
      fetchLines(missing[0], end, blocks);
    }
  }

  async function fetchLines(a, b, blocks) {
    for (const k of blocks) inFlight.add(k);
    const got = await Net.lines(a, b);
    for (const k of blocks) inFlight.delete(k);
    if (got === null || got.status !== 200) {
      retryAt = performance.now() + 1000;  // the server is away: later
      setTimeout(schedule, 1000);
      return;
    }
    store.fill(got.first, got.raws, got.times);
    schedule();
  }

  // ---- sections before the first line followed -------------------------------

  // The markers of lines 1..last (the page reads the rest itself), through
  // the server's search (section 14), for the kinds of markers the log
  // uses: those in its first block (read now: CI logs start with their
  // first section) and in the lines followed.  A log without any costs
  // no search at all.
  async function scanSections(last) {
    const head = await Net.lines(1, Math.min(BLOCK, last));
    if (head === null || head.status !== 200) return;
    for (let i = 0; i < head.raws.length; i++) sections.see(head.first + i, head.raws[i]);
    store.fill(head.first, head.raws, head.times);
    schedule();
    if (last <= head.raws.length) return;
    for (const kind of sections.kinds()) {
      for (const scan of Sections.SCANS[kind]) {
        let from = head.raws.length + 1;
        for (;;) {
          let highest = 0;
          const result = await Net.grep(Object.assign({ max: HITS, lines: from + "-" + last }, scan),
            function (hit) {
              sections.add(hit.line, hit.text);
              highest = hit.line;
              schedule();
            });
          if (result.error || !result.done || !result.done.truncated || !highest ||
              sections.size > 100000) {
            break;
          }
          from = highest + 1;
        }
      }
    }
  }

  // ---- the connection --------------------------------------------------------

  let progress = 0;         // bytes received, all streams
  let scanFrom = 0;         // lines above the first followed, to scan for sections
  function received(bytes) {
    progress += bytes.byteLength;
    model.push(bytes);
    if (scanFrom) {
      // Once the end is coming in: the sections above it.
      scanSections(scanFrom);
      scanFrom = 0;
    }
    schedule();
  }

  // Answers that no retry will change.
  const FINAL = {
    401: "no valid access_token",
    403: "this token may not follow this log",
    404: "the log was removed",
    416: "the log is shorter than what this page has: reload the page",
  };

  function finished() {
    done = true;
    model.end();
    setState("finished");
    schedule();
  }

  function sleep(ms) {
    return new Promise(function (r) { setTimeout(r, ms); });
  }

  function waiting(on) {
    waitingEl.hidden = !on;
    if (on) setState("waiting", "the log does not exist yet: it is shown as soon as it starts");
  }

  // Where the log ends: the page opens there.  A log that is not there
  // yet is waited for (a link is often opened before its job starts).
  async function findEnd() {
    let delay = 250;
    for (;;) {
      const head = await Net.head("-0");
      if (head === null) {
        setState("reconnecting", "the server cannot be reached");
      } else if (head.status === 200) {
        waiting(false);
        headLines = Math.max(0, head.line - 1);
        headSize = head.size || 0;
        return true;
      } else if (head.status === 404) {
        waiting(true);
        delay = Math.min(delay, 500);
      } else if (FINAL[head.status]) {
        setState("refused", FINAL[head.status]);
        return false;
      } else {
        setState("reconnecting", "the server answered " + head.status);
      }
      await sleep(delay);
      // A log not there yet is asked for twice a second (a HEAD, a 404).
      delay = Math.min(delay * 2, head !== null && head.status === 404 ? 500 : 4000);
    }
  }

  // Until the log is finished: follow it live over a WebSocket while an
  // appender holds it, or read the rest over HTTP when none does; after a
  // drop, a restart or an interrupted session, again from the line not
  // ended yet, waiting twice as long each time nothing came (0.25 s, then
  // up to 4 s).
  async function run() {
    if (!await findEnd()) return;
    const first = headLines > TAIL ? Math.floor((headLines - TAIL) / BLOCK) * BLOCK + 1 : 1;
    model.restart(first, Ansi.PLAIN);
    started = true;
    schedule();
    scanFrom = first - 1;
    let delay = 250;
    for (;;) {
      const before = progress;
      const head = await Net.head(model.next);
      if (head === null) {
        setState("reconnecting", "the server cannot be reached");
      } else if (head.status !== 200) {
        if (FINAL[head.status]) {
          setState(head.status === 404 ? "gone" : "refused", FINAL[head.status]);
          return;
        }
        setState("reconnecting", "the server answered " + head.status);
      } else {
        // From the line not ended yet: the new stream brings it whole.
        byteBase = head.offset;
        model.restart(model.next, model.nextStart);
        if (head.active) {
          const ws = await Net.followWebSocket(model.next, received, function () {
            setState("live");
          });
          if (ws.code === 1000) { finished(); return; }
          if (ws.opened) {
            delay = 250;
            if (ws.code === 4000) setState("interrupted", "the appender was lost");
            else setState("reconnecting", "the connection closed (" + ws.code + ")");
          }
          // Not upgraded: the appender left meanwhile, or the server is
          // busy or stopping: ask again.
        } else {
          const http = await Net.followHttp(model.next, received, function (result) {
            setState(result.active ? "live" : "loading");
          });
          if (http === null || http.cut) {
            setState("reconnecting", "the connection was lost");
          } else if (FINAL[http.status]) {
            setState(http.status === 404 ? "gone" : "refused", FINAL[http.status]);
            return;
          } else if (http.status !== 200) {
            setState("reconnecting", "the server answered " + http.status);
          } else if (!http.active) {
            if (http.complete) { finished(); return; }
            setState("interrupted", "no appender, and its last session did not end well");
          }
          // Active: an appender came while we asked, and its session has
          // ended; ask again.
        }
      }
      if (progress > before) delay = 250;
      schedule();
      await sleep(delay);
      delay = Math.min(delay * 2, 4000);
    }
  }

  // What tests and the curious can read (the page keeps no secrets).
  window.httpfstreamViewer = Object.freeze({
    Ansi: Ansi,
    LogModel: Lines.LogModel,
    Lines: Lines,
    Sections: Sections,
    get bytes() { return started ? byteBase + model.content : 0; },
    // The log's lines as far as the page knows, once it is reading it.
    get lines() { return progress > 0 ? totalNow() : 0; },
    get state() { return state; },
    get follow() { return follow; },
    get shownAt() { return shownAt; },
    get held() { return store.held; },
    get blocks() { return Array.from(store.blocks.keys()).sort(function (a, b) { return a - b; }); },
    get top() { return top; },
    get rows() { return rowCount; },
    // The first line wholly in sight.
    get topLine() { return rowCount ? sections.lineAt(Math.min(Math.ceil(top - 0.01), rowCount - 1)) : 0; },
    get viewRows() { return viewRows; },
    get times() { return timesMode; },
    get search() {
      return {
        text: search.text, hits: search.hits.slice(0, 1000), count: search.hits.length,
        current: search.current, done: search.done, truncated: search.truncated,
        error: search.error,
      };
    },
    sections: function () {
      return sections.list.map(function (s) {
        return { start: s.start, end: s.end, title: s.title, kind: s.kind,
          folded: sections.folded(s), took: took(s) };
      });
    },
    // The text of line i + 1 as shown, if the page holds it.
    text: function (i) {
      const line = lineOf(i + 1);
      return line === null ? null : Ansi.text(line[0], line[1]);
    },
    time: function (n) { return timeAt(n); },
    reveal: function (n) { reveal(n, true); schedule(); },
    toggle: function (n) {
      keepTopLine(function () { sections.toggle(n); });
      paint++;
      schedule();
    },
  });

  setState("connecting");
  setFollow(true);
  followHash(true);
  scroller.focus({ preventScroll: true });
  run();
})();
