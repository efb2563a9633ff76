"use strict";
// Follows the resource this page was opened for: a WebSocket FOLLOW from
// the bytes it already has, reconnecting after a drop or a restart.  The
// bytes are decoded as a stream (UTF-8 split across messages stays right)
// and shown as text, never as HTML.
(function () {
  const config = JSON.parse(document.getElementById("config").textContent);
  const log = document.getElementById("log");
  const stateEl = document.getElementById("state");
  const sizeEl = document.getElementById("size");
  const endButton = document.getElementById("end");
  let offset = 0;
  let decoder = new TextDecoder("utf-8");
  let follow = true;
  let done = false;

  function setState(state) {
    stateEl.textContent = state;
    stateEl.className = "state " + state;
    document.body.dataset.state = state;
  }
  function show(bytes) {
    offset += bytes.byteLength;
    sizeEl.textContent = offset + " bytes";
    log.append(decoder.decode(bytes, { stream: true }));
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  }
  window.addEventListener("scroll", function () {
    const atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
    follow = atEnd;
    endButton.hidden = atEnd;
  });
  endButton.addEventListener("click", function () {
    follow = true;
    window.scrollTo(0, document.body.scrollHeight);
  });

  function url(scheme) {
    const u = new URL(window.location.href);
    u.search = "";
    u.protocol = scheme;
    if (offset) u.searchParams.set("offset", String(offset));
    if (config.token) u.searchParams.set("access_token", config.token);
    return u;
  }
  async function finishedContent() {
    // No appender: the content from our offset over plain HTTP.
    const u = url(window.location.protocol);
    u.searchParams.set("follow", "1");
    const response = await fetch(u, { headers: { "X-Verb": "FOLLOW" } });
    if (response.status === 416) return response.headers;
    const reader = response.body.getReader();
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      show(value);
    }
    return response.headers;
  }
  let delay = 500;
  function connect() {
    if (done) return;
    const ws = new WebSocket(url(window.location.protocol === "https:" ? "wss:" : "ws:"));
    ws.binaryType = "arraybuffer";
    let opened = false;
    ws.onopen = function () { opened = true; delay = 500; setState("live"); };
    ws.onmessage = function (event) {
      show(new Uint8Array(typeof event.data === "string"
        ? new TextEncoder().encode(event.data) : event.data));
    };
    ws.onclose = async function (event) {
      if (event.code === 1000) { setState("finished"); done = true; return; }
      if (event.code === 4000) { setState("interrupted"); }
      if (!opened && event.code === 1006) {
        // Refused: perhaps finished (200), perhaps gone or restarting.
        try {
          const headers = await finishedContent();
          if (headers.get("Httpfstream-Active") === "0") {
            const complete = headers.get("Httpfstream-Complete") !== "0";
            setState(complete ? "finished" : "interrupted");
            if (complete) { done = true; return; }
          }
        } catch (e) { setState("reconnecting"); }
      } else if (event.code !== 4000) {
        setState("reconnecting");
      }
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    };
  }
  connect();
})();
