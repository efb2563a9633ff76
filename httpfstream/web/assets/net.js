"use strict";
// Net: what the page asks the server, all of it at the page's own URL
// (so it works under any mount point or proxy prefix), with the page's
// access_token if it was opened with one.
//
// - head(lines): HEAD ?lines=..: the state, and where a line is;
// - followWebSocket(line) / followHttp(line): the log from a line on,
//   every line stamped with its time (timestamps=1), live while an
//   appender holds it;
// - lines(a, b): a snapshot of lines a..b, stamped;
// - grep(query, ...): the server's search, read as it streams (NDJSON).
const Net = (function () {
  const config = JSON.parse(document.getElementById("config").textContent);

  function url(extra, scheme) {
    const u = new URL(window.location.href);
    u.hash = "";
    u.search = "";
    if (scheme) u.protocol = scheme;
    for (const [key, value] of Object.entries(extra)) u.searchParams.set(key, value);
    if (config.token) u.searchParams.set("access_token", config.token);
    return u.href;
  }

  function number(response, name) {
    const value = response.headers.get(name);
    return value === null ? NaN : parseInt(value, 10);
  }

  function state(response) {
    return {
      status: response.status,
      active: response.headers.get("Httpfstream-Active") === "1",
      complete: response.headers.get("Httpfstream-Complete") === "1",
      size: number(response, "Httpfstream-Size"),
      line: number(response, "Httpfstream-Line"),
      offset: number(response, "Httpfstream-Offset"),
    };
  }

  // The resource's state, and where line `lines` starts (HEAD ?lines=);
  // null if the server cannot be reached.
  async function head(lines) {
    try {
      return state(await fetch(url({ lines: String(lines) }), { method: "HEAD", cache: "no-store" }));
    } catch (e) {
      return null;
    }
  }

  // One WebSocket FOLLOW from line `line`; resolves {opened, code} once
  // it is closed.  No upgrade (no appender any more, a refusal) is a
  // close that never opened.
  function followWebSocket(line, onBytes, onOpen) {
    return new Promise(function (resolve) {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      let ws;
      try {
        ws = new WebSocket(url({ frames: "binary", timestamps: "1", lines: String(line) }, scheme));
      } catch (e) {
        resolve({ opened: false, code: 1006 });
        return;
      }
      ws.binaryType = "arraybuffer";
      let opened = false;
      ws.onopen = function () { opened = true; onOpen(); };
      ws.onmessage = function (event) { onBytes(new Uint8Array(event.data)); };
      ws.onclose = function (event) { resolve({ opened: opened, code: event.code }); };
    });
  }

  // Big bodies are taken in slices of SLICE bytes, and after BUDGET ms of
  // work the loop waits for the next frame (or, in a hidden tab, where no
  // frame comes, for a timer): the page never freezes while it reads.
  const SLICE = 256 * 1024;
  const BUDGET = 12;
  function nextFrame() {
    return new Promise(function (resolve) {
      if (document.hidden) setTimeout(resolve, 0);
      else requestAnimationFrame(function () { setTimeout(resolve, 0); });
    });
  }

  // GET ?follow=1 from line `line`: all of it when no appender holds the
  // log, or live until the session ends.  Resolves {status, active,
  // complete, cut}, or null if the server could not be reached.
  async function followHttp(line, onBytes, onHeaders) {
    let response;
    try {
      response = await fetch(url({ follow: "1", timestamps: "1", lines: String(line) }),
        { cache: "no-store" });
    } catch (e) {
      return null;
    }
    const result = state(response);
    result.cut = false;
    if (response.status !== 200) {
      await response.body?.cancel();
      return result;
    }
    onHeaders(result);
    const reader = response.body.getReader();
    let since = performance.now();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (let at = 0; at < value.byteLength; at += SLICE) {
          onBytes(value.subarray(at, at + SLICE));
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

  // Lines a..b (a snapshot, stamped): {status, first, raws, times}, raws
  // without their stamps; null if the server cannot be reached.
  async function lines(a, b) {
    let response, body;
    try {
      response = await fetch(url({ lines: a + "-" + b, timestamps: "1" }), { cache: "no-store" });
      if (response.status !== 200) {
        await response.body?.cancel();
        return { status: response.status };
      }
      body = await response.text();
    } catch (e) {
      return null;
    }
    const raws = body.split("\n");
    if (raws[raws.length - 1] === "") raws.pop();
    const times = new Array(raws.length);
    for (let i = 0; i < raws.length; i++) {
      const raw = raws[i];
      times[i] = Lines.timeOf(raw.slice(0, Lines.STAMP));
      raws[i] = raw.slice(Lines.STAMP);
    }
    return { status: 200, first: number(response, "Httpfstream-Line"), raws: raws, times: times };
  }

  // The server's search (section 14), read as it comes: onHit({line,
  // offset, text}) for each match, then the result: {status, done (the
  // last object: matches, truncated, lines), error (a reason to show)}.
  // `signal` aborts it.
  async function grep(params, onHit, signal) {
    const extra = { grep: params.text };
    if (params.regex) extra.regex = "1";
    if (params.caseSensitive) extra.case = "1";
    if (params.max) extra.max = String(params.max);
    if (params.lines) extra.lines = params.lines;
    if (params.follow) extra.follow = "1";
    let response;
    try {
      response = await fetch(url(extra), { cache: "no-store", signal: signal });
    } catch (e) {
      return { status: 0, error: signal && signal.aborted ? "stopped" : "the server cannot be reached" };
    }
    const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
    if (response.status !== 200 || type !== "application/x-ndjson") {
      let reason = "";
      if (response.status !== 200 && type === "text/plain") {
        reason = (await response.text().catch(() => "")).trim();
      } else {
        // A server without search answers with the log itself: stop it.
        await response.body?.cancel().catch(() => {});
      }
      return {
        status: response.status,
        error: reason || (response.status === 200 ? "this server cannot search" :
          "the server answered " + response.status),
      };
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let rest = "", done = null;
    try {
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        rest += value;
        let nl, from = 0;
        while ((nl = rest.indexOf("\n", from)) >= 0) {
          const text = rest.slice(from, nl);
          from = nl + 1;
          if (text === "") continue;
          const item = JSON.parse(text);
          if (item.done) done = item;
          else onHit(item);
        }
        rest = rest.slice(from);
      }
    } catch (e) {
      return { status: 200, done: null, error: signal && signal.aborted ? "stopped" : "the search was cut" };
    }
    return { status: 200, done: done, error: done ? null : "the search was cut" };
  }

  return Object.freeze({
    config: config, url: url, head: head, followWebSocket: followWebSocket,
    followHttp: followHttp, lines: lines, grep: grep,
  });
})();
