"use strict";
// Ansi: what a build log's escape sequences mean for one line of text
// (docs/ARCHITECTURE.md, "Browser view", says why this is our own).
//
// - SGR (ESC [ ... m) sets the style: bold, dim, italic, underline,
//   inverse, hidden, strikethrough; 16, 256 and truecolor foreground and
//   background, in the semicolon and the colon (ITU T.416) forms; 0 or
//   nothing resets.  Unknown SGR codes are ignored.
// - Every other escape sequence (cursor moves, erasing, OSC titles and
//   links, DCS/APC strings, private CSIs such as ESC [ > 4 ; 2 m) and every
//   C0/C1 control character but tab is dropped: never shown as text.
// - A bare carriage return starts the line over: the text after the last
//   one that is followed by text wins (progress bars); the styles set
//   before it still hold.  A CR at the end of a line (CRLF) changes nothing.
//
// Lines are cut at "\n" before they get here, so a sequence is always
// within one line; one left open at the end of a line is dropped.
//
// A Style is immutable and interned: equal styles are the same object, so
// a line's starting style costs one reference, and comparing is ===.
const Ansi = (function () {
  const BOLD = 1, DIM = 2, ITALIC = 4, UNDERLINE = 8,
    INVERSE = 16, HIDDEN = 32, STRIKE = 64;
  const FLAG_CLASSES = [[BOLD, "sb"], [DIM, "sd"], [ITALIC, "si"],
    [UNDERLINE, "su"], [HIDDEN, "sh"], [STRIKE, "ss"]];
  const DEFAULT = -1;
  const RGB = 256; // colours >= RGB are RGB + 0xRRGGBB

  // xterm's 256-colour table above the 16 themed ones: a 6x6x6 cube, then
  // 24 greys.
  const LEVELS = [0, 95, 135, 175, 215, 255];
  function rgbOf(colour) {
    if (colour >= RGB) {
      const v = colour - RGB;
      return "rgb(" + (v >> 16) + ", " + ((v >> 8) & 255) + ", " + (v & 255) + ")";
    }
    if (colour >= 232) {
      const g = 8 + (colour - 232) * 10;
      return "rgb(" + g + ", " + g + ", " + g + ")";
    }
    const c = colour - 16;
    return "rgb(" + LEVELS[Math.floor(c / 36)] + ", " + LEVELS[Math.floor(c / 6) % 6] +
      ", " + LEVELS[c % 6] + ")";
  }

  // What the page needs to draw a style: class names (the 16 themed
  // colours and the flags, from viewer.css) and, for other colours, CSS
  // colour values set through the CSSOM (which the page's CSP allows).
  function Style(fg, bg, flags) {
    this.fg = fg;
    this.bg = bg;
    this.flags = flags;
    this.plain = fg === DEFAULT && bg === DEFAULT && flags === 0;
    let shownFg = fg, shownBg = bg, fgVar = "f", bgVar = "b";
    if (flags & INVERSE) {
      shownFg = bg; shownBg = fg; fgVar = "fi"; bgVar = "bi";
    }
    const classes = [];
    this.color = "";
    this.background = "";
    if (shownFg === DEFAULT) {
      if (flags & INVERSE) classes.push(fgVar);
    } else if (shownFg < 16) {
      classes.push("f" + shownFg);
    } else {
      this.color = rgbOf(shownFg);
    }
    if (shownBg === DEFAULT) {
      if (flags & INVERSE) classes.push(bgVar);
    } else if (shownBg < 16) {
      classes.push("b" + shownBg);
    } else {
      this.background = rgbOf(shownBg);
    }
    for (const [flag, name] of FLAG_CLASSES) if (flags & flag) classes.push(name);
    if (flags & HIDDEN) this.color = "transparent";
    this.className = classes.join(" ");
    Object.freeze(this);
  }
  const interned = new Map();
  function style(fg, bg, flags) {
    const key = fg + "," + bg + "," + flags;
    let found = interned.get(key);
    if (found === undefined) {
      found = new Style(fg, bg, flags);
      interned.set(key, found);
    }
    return found;
  }
  const PLAIN = style(DEFAULT, DEFAULT, 0);

  // A colour after 38/48 (extended): from parts[at] on, the "5;N" or
  // "2;R;G;B" forms; returns [colour or null if invalid, parts used].
  function extended(parts, at, colon) {
    const mode = parts[at];
    if (mode === "5") {
      const n = number(parts[at + 1]);
      return [n >= 0 && n < 256 ? n : null, 2];
    }
    if (mode === "2") {
      // 38:2:CS:R:G:B (ITU, colour space id, often empty) or 38:2:R:G:B.
      const skip = colon && parts.length - at >= 5 ? 1 : 0;
      const r = number(parts[at + 1 + skip]);
      const g = number(parts[at + 2 + skip]);
      const b = number(parts[at + 3 + skip]);
      const ok = r >= 0 && r < 256 && g >= 0 && g < 256 && b >= 0 && b < 256;
      return [ok ? RGB + (r << 16) + (g << 8) + b : null, 4 + skip];
    }
    return [null, parts.length]; // unknown: give up on the rest
  }
  function number(text) {
    if (text === undefined) return -1;
    if (text === "") return 0;
    return /^[0-9]{1,9}$/.test(text) ? parseInt(text, 10) : -1;
  }

  // The style after the SGR parameters `params` ("1;31", "38:5:208", "").
  function sgr(current, params) {
    let fg = current.fg, bg = current.bg, flags = current.flags;
    const parts = params.split(";");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      let code, sub = null;
      if (part.indexOf(":") >= 0) {
        sub = part.split(":");
        code = number(sub[0]);
      } else {
        code = number(part);
      }
      if (code === 38 || code === 48) {
        let colour, used;
        if (sub) {
          [colour, used] = extended(sub, 1, true);
        } else {
          [colour, used] = extended(parts, i + 1, false);
          i += used;
        }
        if (colour !== null) {
          if (code === 38) fg = colour; else bg = colour;
        }
        continue;
      }
      if (code === 4 && sub) {
        // 4:0 off, 4:1..4:5 straight, double, curly, dotted, dashed
        flags = sub[1] === "0" ? flags & ~UNDERLINE : flags | UNDERLINE;
        continue;
      }
      if (code === 0) { fg = DEFAULT; bg = DEFAULT; flags = 0; }
      else if (code === 1) flags |= BOLD;
      else if (code === 2) flags |= DIM;
      else if (code === 3) flags |= ITALIC;
      else if (code === 4 || code === 21) flags |= UNDERLINE;
      else if (code === 7) flags |= INVERSE;
      else if (code === 8) flags |= HIDDEN;
      else if (code === 9) flags |= STRIKE;
      else if (code === 22) flags &= ~(BOLD | DIM);
      else if (code === 23) flags &= ~ITALIC;
      else if (code === 24) flags &= ~UNDERLINE;
      else if (code === 27) flags &= ~INVERSE;
      else if (code === 28) flags &= ~HIDDEN;
      else if (code === 29) flags &= ~STRIKE;
      else if (code >= 30 && code <= 37) fg = code - 30;
      else if (code === 39) fg = DEFAULT;
      else if (code >= 40 && code <= 47) bg = code - 40;
      else if (code === 49) bg = DEFAULT;
      else if (code >= 90 && code <= 97) fg = code - 90 + 8;
      else if (code >= 100 && code <= 107) bg = code - 100 + 8;
      // anything else (blink, fonts, overline, ...): ignored
    }
    if (fg === current.fg && bg === current.bg && flags === current.flags) return current;
    return style(fg, bg, flags);
  }

  // Where plain text stops: any C0 control but tab and LF, DEL, C1.
  const SPECIAL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
  // An escape sequence at ESC (ECMA-48): CSI with its parameters,
  // intermediates and final byte; OSC up to BEL or ST; DCS, SOS, PM and
  // APC strings up to ST; any other ESC + intermediates + final.  Each may
  // be cut off by the end of the line (then it runs to the end).
  const SEQUENCE = new RegExp(
    "\\x1b(?:\\[([0-?]*)([ -/]*)(?:([@-~])|$)" +
    "|\\][^\\x07\\x1b]*(?:\\x07|\\x1b\\\\)?" +
    "|[PX^_][^\\x1b]*(?:\\x1b\\\\)?" +
    "|[ -/]*(?:[0-~]|$))", "y");
  const SGR_PARAMS = /^[0-9;:]*$/;

  // Walk `line` from style `start`.  With `out` (an array), collect what
  // is shown as [text, style, text, style, ...]; without, only follow the
  // style.  Returns {style: at the end, clearAt: index in `line` of the
  // text that last started the line over (-1 if none), clearStyle}.
  function scan(line, start, out, limit) {
    const end = limit === undefined ? line.length : Math.min(limit, line.length);
    let st = start, i = 0, cr = false, clearAt = -1, clearStyle = start;
    while (i < end) {
      SPECIAL.lastIndex = i;
      const found = SPECIAL.exec(line);
      const stop = found === null || found.index > end ? end : found.index;
      if (stop > i) {
        if (cr) {
          cr = false;
          clearAt = i;
          clearStyle = st;
          if (out) out.length = 0;
        }
        if (out) {
          const n = out.length;
          if (n && out[n - 1] === st) out[n - 2] += line.slice(i, stop);
          else out.push(line.slice(i, stop), st);
        }
        i = stop;
        if (i >= end) break;
      }
      const c = line.charCodeAt(i);
      if (c === 0x1b) {
        SEQUENCE.lastIndex = i;
        const m = SEQUENCE.exec(line);
        if (m === null) { i += 1; continue; }
        if (m[3] === "m" && m[2] === "" && SGR_PARAMS.test(m[1])) st = sgr(st, m[1]);
        i += m[0].length;
      } else {
        if (c === 0x0d) cr = true;
        i += 1;
      }
    }
    return { style: st, clearAt: clearAt, clearStyle: clearStyle };
  }

  // The style at the end of `line`, from `start`; fast for the common
  // line that ends with a reset, or has no escape at all.
  function endStyle(line, start) {
    const last = line.lastIndexOf("\x1b");
    if (last < 0) return start;
    // The last ESC always starts a sequence of its own (no sequence holds
    // an ESC but as its ST terminator), so a reset there is the last word.
    if (line.startsWith("\x1b[0m", last) || line.startsWith("\x1b[m", last)) return PLAIN;
    return scan(line, start, null).style;
  }

  // What is shown of `line` from style `start`: [text, style, ...].
  function segments(line, start, limit) {
    const out = [];
    scan(line, start, out, limit);
    return out;
  }

  // `line` without what a carriage return has overwritten:
  // [style to start from, the rest of the line], shown exactly as the
  // whole line would be; the same line if nothing was overwritten.
  function compact(line, start) {
    const cr = line.indexOf("\r");
    if (cr < 0 || cr === line.length - 1) return [start, line];
    const walked = scan(line, start, null);
    if (walked.clearAt <= 0) return [start, line];
    return [walked.clearStyle, line.slice(walked.clearAt)];
  }

  // `line` with every escape sequence and control character but tab and
  // CR removed: what the server's search (section 14) matches on, and
  // what the page reads section markers from.  What a CR overwrote stays.
  const ALL_SEQUENCES = new RegExp(SEQUENCE.source, "g");
  const CONTROLS = /[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f-\x9f]/g;
  function strip(line) {
    if (line.indexOf("\x1b") >= 0) line = line.replace(ALL_SEQUENCES, "");
    return line.replace(CONTROLS, "");
  }

  // The plain text shown for `line` (for tests and copying).
  function text(line, start) {
    const parts = segments(line, start || PLAIN);
    let result = "";
    for (let k = 0; k < parts.length; k += 2) result += parts[k];
    return result;
  }

  return Object.freeze({
    PLAIN: PLAIN, style: style, sgr: sgr, scan: scan, endStyle: endStyle,
    segments: segments, compact: compact, text: text, strip: strip, rgbOf: rgbOf,
  });
})();
