"use strict";
// Lines: what the page holds of a log, and how bytes become lines
// (docs/ARCHITECTURE.md, "Browser view").
//
// LogModel decodes a stream of bytes (one streaming TextDecoder, so UTF-8
// cut between messages decodes right) into numbered lines, each with the
// style it starts in (Ansi) and, when the stream is stamped (section 13's
// timestamps=1), the time its first byte was written.  Standing alone
// (the tests) it keeps every line; the page's model hands each line to
// the Store instead and keeps only the line not ended yet.
//
// Store holds lines in blocks of BLOCK lines (block k: lines kB+1 to
// kB+B), each holding a run of them (usually from the block's start; the
// header of a folded section alone, when that is all that is shown), by
// the live stream or by a snapshot of lines (lines=A-B); blocks far from
// what is in sight are let go, so the page's memory does not grow with the
// log.  The last RING lines of
// the live stream are kept whatever is in sight, so a block at the end of
// a log that pours in can be filled without asking the server.
const Lines = (function () {
  // "2026-12-07T10:15:02.125Z " before each line of a stamped stream.
  const STAMP = 25;
  let lastStamp = "", lastTime = NaN;
  function timeOf(stamp) {
    if (stamp === lastStamp) return lastTime;
    let time = NaN;
    if (stamp.length === STAMP && stamp.charCodeAt(10) === 84 &&
        stamp.charCodeAt(23) === 90 && stamp.charCodeAt(24) === 32) {
      time = Date.UTC(+stamp.slice(0, 4), +stamp.slice(5, 7) - 1, +stamp.slice(8, 10),
        +stamp.slice(11, 13), +stamp.slice(14, 16), +stamp.slice(17, 19),
        +stamp.slice(20, 23));
    }
    lastStamp = stamp;
    lastTime = time;
    return time;
  }

  // How a line is kept: [text, the style it starts in, the style after
  // it], from the style before it.  What a carriage return overwrote is
  // dropped (a progress bar redrawn for minutes stays one short line).
  function styled(line, start) {
    const cr = line.indexOf("\r");
    if (cr >= 0 && cr < line.length - 1) {
      const walked = Ansi.scan(line, start, null);
      if (walked.clearAt > 0) return [line.slice(walked.clearAt), walked.clearStyle, walked.style];
      return [line, start, walked.style];
    }
    return [line, start, Ansi.endStyle(line, start)];
  }

  class LogModel {
    // options: first (the number of the first line, 1), start (its
    // style), stamped (a timestamps=1 stream), onLine(n, text, start,
    // time, end style, the line as it came) (then lines are handed on,
    // not kept).
    constructor(options) {
      options = options || {};
      this.stamped = !!options.stamped;
      this.onLine = options.onLine || null;
      this.lines = [];      // kept lines (no onLine), without "\n"
      this.starts = [];
      this.times = [];
      this.version = 0;     // bumped on every change
      this.restart(options.first || 1, options.start || Ansi.PLAIN);
    }
    // Read on from line `first` (its first byte next), which starts in
    // style `start`: a new stream, after a drop.  The line not ended yet
    // is forgotten: the new stream brings it whole.
    restart(first, start) {
      this.decoder = new TextDecoder("utf-8");
      this.first = first;   // the first line of this stream
      this.next = first;    // the number of the line not ended yet
      this.nextStart = start;
      this.tail = "";       // the line not ended yet (with its stamp)
      this.tailStart = start;
      this.bytes = 0;       // bytes of this stream
      this.sinceNewline = 0;
      this.ended = false;
      this.version++;
    }
    // The bytes of the resource this stream brought (stamps left out).
    get content() {
      if (!this.stamped) return this.bytes;
      return this.bytes - STAMP * (this.next - this.first) - Math.min(STAMP, this.sinceNewline);
    }
    // Standing alone: the lines so far, the one not ended included.
    get count() {
      return this.lines.length + (this.tail === "" ? 0 : 1);
    }
    line(i) {
      return i < this.lines.length ? this.lines[i] : this.partial;
    }
    start(i) {
      return i < this.lines.length ? this.starts[i] : this.tailStart;
    }
    text(i) {
      return Ansi.text(this.line(i), this.start(i));
    }
    // The line not ended yet, as far as it came, or null.
    get partial() {
      if (this.tail === "") return null;
      return this.stamped ? this.tail.slice(STAMP) : this.tail;
    }
    get partialTime() {
      return this.stamped && this.tail.length >= STAMP ? timeOf(this.tail.slice(0, STAMP)) : NaN;
    }
    push(bytes) {
      this.bytes += bytes.byteLength;
      const nl = bytes.lastIndexOf(10);
      this.sinceNewline = nl < 0 ? this.sinceNewline + bytes.byteLength : bytes.byteLength - nl - 1;
      this.pushText(this.decoder.decode(bytes, { stream: true }));
    }
    // The end of the stream: what the decoder holds back is decoded (a cut
    // UTF-8 sequence shows as U+FFFD).
    end() {
      this.ended = true;
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
      this.tailStart = this.nextStart;
      this.compactTail();
    }
    // A long line not ended yet (a progress bar redrawn with CRs for
    // minutes) is kept from its last CR on, so it is not walked whole
    // again with every message.
    compactTail() {
      if (this.tail.length > 4096) {
        const head = this.stamped ? this.tail.slice(0, STAMP) : "";
        const [start, rest] = Ansi.compact(this.tail.slice(head.length), this.tailStart);
        this.tailStart = start;
        this.tail = head + rest;
      }
    }
    addLine(line) {
      let time = NaN;
      if (this.stamped) {
        time = timeOf(line.slice(0, STAMP));
        line = line.slice(STAMP);
      }
      const [text, start, end] = styled(line, this.tailStart);
      const n = this.next++;
      this.nextStart = this.tailStart = end;
      if (this.onLine) {
        this.onLine(n, text, start, time, end, line);
      } else {
        this.lines.push(text);
        this.starts.push(start);
        this.times.push(time);
      }
    }
  }

  // One block of lines: texts, starts and times of lines first.. (within
  // block k's lines).
  class Block {
    constructor(k, first) {
      this.k = k;
      this.first = first;
      this.texts = [];
      this.starts = [];
      this.times = [];
      this.chars = 0;
      this.end = null;      // the style after its last line
    }
    add(text, start, time, end) {
      this.texts.push(text);
      this.starts.push(start);
      this.times.push(time);
      this.chars += text.length;
      this.end = end;
    }
  }

  class Store {
    constructor(size, ring) {
      this.B = size;
      this.blocks = new Map();
      this.chars = 0;
      this.keepFrom = 0;      // the blocks that may be held now
      this.keepTo = -1;
      this.RING = ring;
      this.ringTexts = new Array(ring);
      this.ringStarts = new Array(ring);
      this.ringTimes = new Float64Array(ring);
      this.ringEnds = new Array(ring);
      this.ringNext = 1;      // the line after the last one in the ring
      this.ringFirst = 1;     // the first line in the ring
      this.version = 0;       // bumped when lines come or go
    }
    blockOf(n) {
      return Math.floor((n - 1) / this.B);
    }
    has(n) {
      const b = this.blocks.get(this.blockOf(n));
      return b !== undefined && n >= b.first && n < b.first + b.texts.length;
    }
    // [text, start, time] of line n, or null when it is not held.
    get(n) {
      const b = this.blocks.get(this.blockOf(n));
      if (b !== undefined) {
        const i = n - b.first;
        if (i >= 0 && i < b.texts.length) return [b.texts[i], b.starts[i], b.times[i]];
      }
      if (n >= this.ringFirst && n < this.ringNext) {
        const j = n % this.RING;
        return [this.ringTexts[j], this.ringStarts[j], this.ringTimes[j]];
      }
      return null;
    }
    // The style after line n, if it is known.
    endOf(n) {
      if (n < 1) return Ansi.PLAIN;
      const b = this.blocks.get(this.blockOf(n));
      if (b !== undefined) {
        const i = n - b.first;
        if (i === b.texts.length - 1) return b.end;
        if (i >= 0 && i < b.texts.length - 1) return b.starts[i + 1];
      }
      if (n >= this.ringFirst && n < this.ringNext) return this.ringEnds[n % this.RING];
      return null;
    }
    get held() {
      let lines = 0;
      for (const b of this.blocks.values()) lines += b.texts.length;
      return lines;
    }
    // Add line n to its block if it goes on the block's run, or starts it
    // (the block is not held and may be; a live line only at the block's
    // first line: a run started mid-block would refuse the lines above it,
    // asked for meanwhile).
    put(n, text, start, time, end, live) {
      const k = this.blockOf(n);
      let b = this.blocks.get(k);
      if (b === undefined) {
        if (k < this.keepFrom || k > this.keepTo) return false;
        if (live && n !== k * this.B + 1) return false;
        b = new Block(k, n);
        this.blocks.set(k, b);
      } else if (b.first + b.texts.length !== n) {
        return false;
      }
      b.add(text, start, time, end);
      this.chars += text.length;
      this.version++;
      return true;
    }
    // A line of the live stream: into the ring, and its block.
    live(n, text, start, time, end) {
      const j = n % this.RING;
      this.ringTexts[j] = text;
      this.ringStarts[j] = start;
      this.ringTimes[j] = time;
      this.ringEnds[j] = end;
      if (n !== this.ringNext) this.ringFirst = n;  // a new stream
      this.ringNext = n + 1;
      if (this.ringNext - this.ringFirst > this.RING) this.ringFirst = this.ringNext - this.RING;
      this.put(n, text, start, time, end, true);
    }
    // Lines first.. from a snapshot (raw lines, stamps taken off): kept
    // where they continue a block.  Their styles follow the line before
    // them when it is held (else they start plain), and the block after
    // them is restyled if its first line now starts otherwise.
    fill(first, raws, times) {
      let style = this.endOf(first - 1) || Ansi.PLAIN;
      let n = first;
      for (let i = 0; i < raws.length; i++, n++) {
        if (this.has(n)) {
          style = this.endOf(n);
          continue;
        }
        const [text, start, end] = styled(raws[i], style);
        style = end;
        // Kept where it goes on a block's run (or starts one).
        this.put(n, text, start, times[i], end);
      }
      this.restyleFrom(n, style);
    }
    // Let block k go (its run is to be read again from further up).
    drop(k) {
      const b = this.blocks.get(k);
      if (b === undefined) return;
      this.blocks.delete(k);
      this.chars -= b.chars;
      this.version++;
    }
    // Line n now follows style `style`: restyle the held lines from n on
    // while they started otherwise.
    restyleFrom(n, style) {
      for (;;) {
        const b = this.blocks.get(this.blockOf(n));
        if (b === undefined) return;
        const i = n - b.first;
        if (i < 0 || i >= b.texts.length || b.starts[i] === style) return;
        for (let j = i; j < b.texts.length; j++) {
          b.starts[j] = style;
          style = Ansi.endStyle(b.texts[j], style);
        }
        b.end = style;
        this.version++;
        n = (b.k + 1) * this.B + 1;
      }
    }
    // Fill block k's run on from line `from` up to line `last` from the
    // ring; true if it then holds them.
    fromRing(from, last) {
      if (from > last) return true;
      if (from < this.ringFirst || last >= this.ringNext) return false;
      for (let n = from; n <= last; n++) {
        const j = n % this.RING;
        if (!this.put(n, this.ringTexts[j], this.ringStarts[j], this.ringTimes[j], this.ringEnds[j])) {
          return false;
        }
      }
      return true;
    }
    // Hold only blocks from..to; let the others go.
    keep(from, to) {
      this.keepFrom = from;
      this.keepTo = to;
      for (const [k, b] of this.blocks) {
        if (k < from || k > to) {
          this.blocks.delete(k);
          this.chars -= b.chars;
          this.version++;
        }
      }
    }
  }

  return Object.freeze({
    STAMP: STAMP, timeOf: timeOf, styled: styled, LogModel: LogModel, Store: Store,
  });
})();
const LogModel = Lines.LogModel;
