"use strict";
// The page that follows one resource (docs/PROTOCOL.md section 12).
//
// LogModel: the bytes so far, through one streaming TextDecoder (so UTF-8
// split across messages or reconnections decodes right), cut into lines;
// each line is kept as its text with the style it starts in (Ansi).
//
// The view is virtual: rows have one fixed height, a sizer as tall as all
// the lines makes the scroll bar, and only the rows in sight (plus a
// margin) are in the document, built from text nodes and spans: the
// resource's bytes are never parsed as HTML.  A log too tall for the
// browser's largest element is mapped onto the largest height we use.
//
// The connection: a WebSocket FOLLOW from the bytes we have; when the
// server does not upgrade (no appender: a finished or interrupted log, or
// a refusal) the rest comes from GET ?follow=1, which says whether the log
// finished well.  Dropped connections and restarts are retried with
// backoff, from the bytes we have, until the log is finished.
(function () {
  const config = JSON.parse(document.getElementById("config").textContent);

  class LogModel {
    constructor() {
      this.decoder = new TextDecoder("utf-8");
      this.bytes = 0;
      this.lines = [];      // complete lines, without "\n"
      this.starts = [];     // the style each complete line starts in
      this.tail = "";       // the line not ended yet
      this.tailStart = Ansi.PLAIN;
      this.version = 0;     // bumped on every change
    }
    get count() {
      return this.lines.length + (this.tail === "" ? 0 : 1);
    }
    line(i) {
      return i < this.lines.length ? this.lines[i] : this.tail;
    }
    start(i) {
      return i < this.lines.length ? this.starts[i] : this.tailStart;
    }
    push(bytes) {
      this.bytes += bytes.byteLength;
      this.pushText(this.decoder.decode(bytes, { stream: true }));
    }
    // The end of the stream: what the decoder holds back is decoded (a cut
    // UTF-8 sequence shows as U+FFFD).
    end() {
      this.pushText(this.decoder.decode());
    }
    pushText(text) {
      if (text === "") return;
      this.version++;
      let nl = text.indexOf("\n");
      if (nl < 0) {
        this.tail += text;
        this.compactTail();
        return;
      }
      this.addLine(this.tail + text.slice(0, nl));
      let from = nl + 1;
      while ((nl = text.indexOf("\n", from)) >= 0) {
        this.addLine(text.slice(from, nl));
        from = nl + 1;
      }
      this.tail = text.slice(from);
      this.compactTail();
    }
    // A long line not ended yet (a progress bar redrawn with CRs for
    // minutes) is kept from its last CR on, so it is not walked whole
    // again with every message.
    compactTail() {
      if (this.tail.length > 4096) {
        [this.tailStart, this.tail] = Ansi.compact(this.tail, this.tailStart);
      }
    }
    addLine(line) {
      let start = this.tailStart;
      let end;
      const cr = line.indexOf("\r");
      if (cr >= 0 && cr < line.length - 1) {
        const walked = Ansi.scan(line, start, null);
        end = walked.style;
        if (walked.clearAt > 0) {
          start = walked.clearStyle;
          line = line.slice(walked.clearAt);
        }
      } else {
        end = Ansi.endStyle(line, start);
      }
      this.lines.push(line);
      this.starts.push(start);
      this.tailStart = end;
    }
    text(i) {
      return Ansi.text(this.line(i), this.start(i));
    }
  }

  const model = new LogModel();
  const LIMIT = 20000;          // characters drawn of one line
  const MARGIN = 40;            // rows drawn above and below the view
  const MAX_HEIGHT = 15000000;  // px; browsers cap an element's height

  const scroller = document.getElementById("log");
  const sizer = document.getElementById("sizer");
  const rowsEl = document.getElementById("rows");
  const stateEl = document.getElementById("state");
  const sizeEl = document.getElementById("size");
  const endButton = document.getElementById("end");
  const rawLink = document.getElementById("raw");
  const lineHeight = parseFloat(getComputedStyle(document.documentElement)
    .getPropertyValue("--line-height")) || 18;

  let state = "connecting";
  let done = false;
  let follow = true;        // keep the end in sight
  let highlighted = 0;      // the #L line, 1-based; 0 for none
  let pendingTarget = 0;    // a #L line not received yet
  let shownAt = null;       // performance.now() when the finished log's end was drawn
  const drawn = new Map();  // line index -> row element in the document
  let drawnFrom = 0, drawnTo = 0, sizerHeight = -1, gutter = 0;
  let shownCount = 0;       // the lines the sizer holds (set once a frame)

  function setState(next, detail) {
    state = next;
    stateEl.textContent = next;
    stateEl.className = "state " + next;
    stateEl.title = detail || "";
    document.body.dataset.state = next;
  }

  // ---- drawing -----------------------------------------------------------

  function fillRow(row, i) {
    const line = model.line(i);
    const start = model.start(i);
    row.hfLine = line;
    row.hfStart = start;
    const text = row.lastChild;
    text.textContent = "";
    const parts = Ansi.segments(line, start, LIMIT);
    for (let k = 0; k < parts.length; k += 2) {
      const st = parts[k + 1];
      if (st.plain) {
        text.append(parts[k]);
        continue;
      }
      const span = document.createElement("span");
      if (st.className) span.className = st.className;
      if (st.color) span.style.color = st.color;
      if (st.background) span.style.backgroundColor = st.background;
      span.textContent = parts[k];
      text.append(span);
    }
    if (line.length > LIMIT) {
      const more = document.createElement("span");
      more.className = "more";
      more.textContent = " … " + (line.length - LIMIT).toLocaleString() +
        " more characters (see raw)";
      text.append(more);
    }
  }

  function makeRow(i) {
    const row = document.createElement("div");
    row.className = "row";
    const number = document.createElement("a");
    number.className = "ln";
    number.href = "#L" + (i + 1);
    number.dataset.n = String(i + 1);
    const text = document.createElement("span");
    text.className = "tx";
    row.append(number, text);
    fillRow(row, i);
    return row;
  }

  // Where we are in the log: the scroll bar maps onto all the lines, even
  // when their full height is more than the sizer's.
  function geometry() {
    const total = shownCount;
    const full = total * lineHeight;
    const view = scroller.clientHeight;
    const top = scroller.scrollTop;
    const ratio = full > sizerHeight && sizerHeight > view
      ? (full - view) / (sizerHeight - view) : 1;
    return { total: total, view: view, top: top, virtualTop: top * ratio, ratio: ratio };
  }

  function layout() {
    const g = geometry();
    const first = Math.floor(g.virtualTop / lineHeight);
    const from = Math.max(0, Math.min(first, g.total) - MARGIN);
    const to = Math.min(g.total, first + Math.ceil(g.view / lineHeight) + 1 + MARGIN);
    let changed = from !== drawnFrom || to !== drawnTo;
    const rows = [];
    for (let i = from; i < to; i++) {
      let row = drawn.get(i);
      if (row === undefined) {
        row = makeRow(i);
        drawn.set(i, row);
        changed = true;
      } else if (row.hfLine !== model.line(i) || row.hfStart !== model.start(i)) {
        fillRow(row, i);
      }
      row.classList.toggle("hl", i + 1 === highlighted);
      rows.push(row);
    }
    for (const [i, row] of drawn) {
      if (i < from || i >= to) { drawn.delete(i); row.remove(); }
    }
    if (changed) rowsEl.replaceChildren(...rows);
    drawnFrom = from;
    drawnTo = to;
    // In sizer coordinates: where row `from` is to be seen.
    const offset = g.top - (g.virtualTop - from * lineHeight);
    rowsEl.style.transform = "translateY(" + offset + "px)";
    if (shownAt === null && done && to === g.total) {
      shownAt = performance.now();
      performance.mark("httpfstream:last-line-shown");
    }
  }

  function describeSize() {
    const n = model.bytes;
    let human;
    if (n < 1024) human = n + " B";
    else if (n < 1024 * 1024) human = (n / 1024).toFixed(1) + " KiB";
    else human = (n / 1048576).toFixed(1) + " MiB";
    const lines = model.count;
    sizeEl.textContent = human + " · " + lines.toLocaleString() +
      (lines === 1 ? " line" : " lines");
    sizeEl.title = n.toLocaleString() + " bytes";
    document.body.dataset.bytes = String(n);
  }

  // New bytes are drawn at the next frame, but no more often than every
  // FRAME_GAP ms: a log that pours in (a 50 MB catch-up) spends its time
  // reading rather than drawing lines that scroll past at once; scrolling
  // is drawn at once whatever comes in (layout on "scroll").
  const FRAME_GAP = 50;
  let scheduled = false;
  let lastFrame = -Infinity;
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
    describeSize();
    const total = shownCount = model.count;
    const digits = String(Math.max(total, 1)).length;
    if (digits !== gutter) {
      gutter = digits;
      document.documentElement.style.setProperty("--gutter", (digits + 1) + "ch");
    }
    const height = Math.min(total * lineHeight, MAX_HEIGHT);
    if (height !== sizerHeight) {
      sizerHeight = height;
      sizer.style.height = height + "px";
    }
    if (pendingTarget && pendingTarget <= total) {
      const target = pendingTarget;
      pendingTarget = 0;
      reveal(target, true);
    } else if (follow) {
      scroller.scrollTop = scroller.scrollHeight;
    }
    layout();
  }

  // ---- following and line links ----------------------------------------

  function atEnd() {
    return scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 2;
  }
  function setFollow(on) {
    follow = on;
    endButton.hidden = on;
    document.body.dataset.follow = on ? "1" : "0";
  }
  scroller.addEventListener("scroll", function () {
    const end = atEnd();
    if (end !== follow) setFollow(end);
    layout();
  }, { passive: true });
  endButton.addEventListener("click", function () {
    setFollow(true);
    scroller.scrollTop = scroller.scrollHeight;
    scroller.focus({ preventScroll: true });
    schedule();
  });
  window.addEventListener("resize", schedule);

  // Bring line `n` (1-based) into sight; `center` puts it a third of the
  // way down even if it is already in sight.
  function reveal(n, center) {
    const g = geometry();
    const y = (n - 1) * lineHeight;
    const seen = y >= g.virtualTop && y + lineHeight <= g.virtualTop + g.view;
    if (seen && !center) return;
    const virtualTop = Math.max(0, y - g.view / 3);
    setFollow(false);
    scroller.scrollTop = virtualTop / g.ratio;
  }
  function followHash(center) {
    const m = /^#L([0-9]{1,12})$/.exec(window.location.hash);
    highlighted = m ? parseInt(m[1], 10) : 0;
    if (highlighted) {
      setFollow(false);
      if (highlighted <= shownCount) reveal(highlighted, center);
      else pendingTarget = highlighted;
    }
    schedule();
  }
  window.addEventListener("hashchange", function () { followHash(false); });

  // ---- the connection ----------------------------------------------------

  function resourceUrl(scheme, extra) {
    const u = new URL(window.location.href);
    u.hash = "";
    u.search = "";
    u.protocol = scheme;
    for (const [key, value] of Object.entries(extra)) u.searchParams.set(key, value);
    if (config.token) u.searchParams.set("access_token", config.token);
    return u.href;
  }
  rawLink.href = resourceUrl(window.location.protocol, { raw: "1" });

  function received(bytes) {
    model.push(bytes);
    schedule();
  }

  // Big bodies are taken in slices of SLICE bytes, and after BUDGET ms of
  // work the loop waits for the next frame to be drawn (or, in a hidden
  // tab, where no frame comes, for a timer): a 50 MB log never freezes
  // the page while it loads.
  const SLICE = 256 * 1024;
  const BUDGET = 12;
  function nextFrame() {
    return new Promise(function (resolve) {
      if (document.hidden) setTimeout(resolve, 0);
      else requestAnimationFrame(function () { setTimeout(resolve, 0); });
    });
  }

  // One WebSocket FOLLOW; resolves {opened, code} once it is closed.
  function followOverWebSocket() {
    return new Promise(function (resolve) {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const extra = { frames: "binary" };
      if (model.bytes) extra.offset = String(model.bytes);
      let ws;
      try {
        ws = new WebSocket(resourceUrl(scheme, extra));
      } catch (e) {
        resolve({ opened: false, code: 1006 });
        return;
      }
      ws.binaryType = "arraybuffer";
      let opened = false;
      ws.onopen = function () { opened = true; setState("live"); };
      ws.onmessage = function (event) {
        received(new Uint8Array(event.data));
      };
      ws.onclose = function (event) { resolve({ opened: opened, code: event.code }); };
    });
  }

  // The resource's state (HEAD): {status, active, complete}, or null if
  // the server cannot be reached.
  async function probe() {
    try {
      const response = await fetch(resourceUrl(window.location.protocol, {}),
        { method: "HEAD", cache: "no-store" });
      return {
        status: response.status,
        active: response.headers.get("Httpfstream-Active") === "1",
        complete: response.headers.get("Httpfstream-Complete") === "1",
      };
    } catch (e) {
      return null;
    }
  }

  // The rest over plain HTTP, from the bytes we have: all of it when no
  // appender holds the log (the usual case here), or live until the
  // session ends if one came meanwhile.  Resolves {status, active,
  // complete, cut}, or null if the server could not be reached.
  async function followOverHttp() {
    const extra = { follow: "1" };
    if (model.bytes) extra.offset = String(model.bytes);
    let response;
    try {
      response = await fetch(resourceUrl(window.location.protocol, extra),
        { cache: "no-store" });
    } catch (e) {
      return null;
    }
    const result = {
      status: response.status,
      active: response.headers.get("Httpfstream-Active") === "1",
      complete: response.headers.get("Httpfstream-Complete") === "1",
      cut: false,
    };
    if (response.status !== 200) {
      await response.body?.cancel();
      return result;
    }
    // Finished or interrupted is said once all of it is here.
    setState(result.active ? "live" : "loading");
    const reader = response.body.getReader();
    let since = performance.now();
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        for (let at = 0; at < value.byteLength; at += SLICE) {
          received(value.subarray(at, at + SLICE));
          if (performance.now() - since > BUDGET) {
            await nextFrame();
            since = performance.now();
          }
        }
      }
    } catch (e) {
      result.cut = true;  // the connection dropped: go on from what we have
    }
    return result;
  }

  // Answers that no retry will change.
  const FINAL = {
    401: "no valid access_token",
    403: "this token may not follow this log",
    404: "there is no such log (any more)",
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

  // Until the log is finished: ask its state; follow it live over a
  // WebSocket while an appender holds it, or fetch the rest over HTTP when
  // none does; after a drop, a restart or an interrupted session, again
  // from the bytes we have, waiting twice as long each time nothing came
  // (0.25 s, then up to 4 s).
  async function run() {
    let delay = 250;
    for (;;) {
      const before = model.bytes;
      const head = await probe();
      if (head === null) {
        setState("reconnecting", "the server cannot be reached");
      } else if (head.status !== 200) {
        if (FINAL[head.status]) {
          setState(head.status === 404 ? "gone" : "refused", FINAL[head.status]);
          return;
        }
        setState("reconnecting", "the server answered " + head.status);
      } else if (head.active) {
        const ws = await followOverWebSocket();
        if (ws.code === 1000) { finished(); return; }
        if (ws.opened) {
          delay = 250;
          if (ws.code === 4000) setState("interrupted", "the appender was lost");
          else setState("reconnecting", "the connection closed (" + ws.code + ")");
        }
        // Not upgraded: the appender left meanwhile, or the server is
        // busy or stopping: ask again.
      } else {
        const http = await followOverHttp();
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
      if (model.bytes > before) delay = 250;
      await sleep(delay);
      delay = Math.min(delay * 2, 4000);
    }
  }

  // What tests and the curious can read (the page keeps no secrets).
  window.httpfstreamViewer = Object.freeze({
    Ansi: Ansi,
    LogModel: LogModel,
    get bytes() { return model.bytes; },
    get lines() { return model.count; },
    get state() { return state; },
    get follow() { return follow; },
    get shownAt() { return shownAt; },
    text: function (i) { return model.text(i); },
    reveal: function (n) { reveal(n, true); },
  });

  setState("connecting");
  setFollow(true);
  followHash(true);
  scroller.focus({ preventScroll: true });
  run();
})();
