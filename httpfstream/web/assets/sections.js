"use strict";
// Sections: the markers build tools write, the foldable sections they
// make, and which lines are rows (docs/PROTOCOL.md section 12).
//
// - GitLab: "section_start:UNIX:NAME[collapsed=true]" (then usually a CR
//   and the header's text) and "section_end:UNIX:NAME"; they nest.
// - GitHub Actions (and Azure): "::group::TITLE" / "::endgroup::"
//   ("##[group]" / "##[endgroup]"); a group ends the one before it.
// - Buildkite: "--- TITLE" (folded), "~~~ TITLE" (folded, dimmed),
//   "+++ TITLE" (open); each runs until the next; "^^^ +++" opens the one
//   before.  If none is opened, the last "---" one is shown open.
//
// Markers are read from a line's text with its escape sequences removed
// (Ansi.strip), as the server's search gives it, so both agree.  A line
// that only ends a section is not shown; a line that starts one is its
// header.  A section folds by default when its marker says so and it has
// ended (the one being written stays open).
//
// Rows: the lines shown, in order; hidden lines (folded bodies, end
// markers) are runs kept sorted, so line <-> row is a binary search.
const Sections = (function () {
  const GITLAB = /section_(start|end):([0-9]+):([^\s\[\r]+)(\[[^\]\r]*\])?/g;
  // What a line must look like to be worth parsing (on the raw line).
  const MAYBE = /section_(?:start|end):|^(?:\x1b\[[0-?]*[ -\/]*[@-~])*(?:::(?:end)?group::|##\[(?:end)?group\]|(?:---|\+\+\+|~~~) |\^\^\^ \+\+\+)/;
  // How to find each kind's markers with the server's search (section
  // 14): a substring where one does (the server's fast path: about 2 s a
  // GiB), a regular expression where markers are only known by where the
  // line starts (about 12 s a GiB).  What they find is parsed like any line.
  const SCANS = {
    gitlab: [{ text: "section_", caseSensitive: true }],
    github: [{ text: "group::", caseSensitive: true }, { text: "group]", caseSensitive: true }],
    buildkite: [{
      text: "^(?:---|\\+\\+\\+|~~~) |^\\^\\^\\^ \\+\\+\\+", regex: true, caseSensitive: true,
    }],
  };

  // The text after the last CR followed by text: what is shown.
  function shown(text) {
    const parts = text.split("\r");
    for (let i = parts.length - 1; i >= 0; i--) if (parts[i] !== "") return parts[i];
    return "";
  }

  // The markers of one line of stripped text, or null.
  function parse(text) {
    if (text.indexOf("section_") >= 0) {
      const found = [];
      let m;
      GITLAB.lastIndex = 0;
      while ((m = GITLAB.exec(text)) !== null) {
        const options = m[4] || "";
        found.push({
          kind: "gitlab", start: m[1] === "start", name: m[3], time: parseInt(m[2], 10),
          collapsed: /collapsed=true/.test(options),
        });
      }
      if (found.length) {
        // Its header: what is shown once the markers are taken out.
        const rest = shown(text.replace(GITLAB, "")).trim();
        for (const f of found) f.title = rest || f.name;
        found.visible = rest !== "";
        return found;
      }
    }
    let m = /^(?:::group::|##\[group\])(.*)$/.exec(text);
    if (m) return [{ kind: "github", start: true, title: m[1].trim() }];
    if (/^(?:::endgroup::|##\[endgroup\])/.test(text)) return [{ kind: "github", start: false }];
    if (/^\^\^\^ \+\+\+/.test(text)) return [{ kind: "buildkite", start: false, expand: true }];
    m = /^(---|\+\+\+|~~~) (.*)$/.exec(text);
    if (m) {
      return [{
        kind: "buildkite", start: true, title: m[2].trim(), collapsed: m[1] !== "+++",
        open: m[1] === "+++", dim: m[1] === "~~~",
      }];
    }
    return null;
  }

  function maybe(raw) {
    return MAYBE.test(raw);
  }

  class Sections {
    constructor() {
      this.markers = new Map();   // line -> its markers
      this.order = [];            // their lines, sorted
      this.list = [];             // sections, by their first line
      this.byStart = new Map();   // header line -> section
      this.toggled = new Map();   // header line -> folded, as the reader set it
      this.hiddenLines = [];      // lines never shown (end markers)
      this.runs = { from: [], to: [], before: [] };  // hidden runs
      this.dirty = false;
      this.version = 0;
    }
    // The markers of line n, from its raw text (live or fetched lines).
    see(n, raw) {
      if (this.markers.has(n) || !maybe(raw)) return;
      this.add(n, Ansi.strip(raw));
    }
    // ... or from its stripped text (the server's search).
    add(n, text) {
      if (this.markers.has(n)) return;
      const found = parse(text);
      if (found === null) return;
      this.markers.set(n, found);
      // Lines come mostly in order (the live stream, the search): kept
      // sorted as they come.
      const order = this.order;
      let at = order.length;
      if (at && order[at - 1] > n) {
        let lo = 0;
        while (lo < at) {
          const mid = (lo + at) >> 1;
          if (order[mid] < n) lo = mid + 1; else at = mid;
        }
      }
      order.splice(at, 0, n);
      this.dirty = true;
    }
    get size() {
      return this.markers.size;
    }
    // The kinds of markers seen so far.
    kinds() {
      const kinds = new Set();
      for (const found of this.markers.values()) for (const m of found) kinds.add(m.kind);
      return kinds;
    }
    // The sections, from the markers in line order.
    build(total) {
      if (!this.dirty && total === this.builtFor) return false;
      this.dirty = false;
      this.builtFor = total;
      const lines = this.order;
      const list = [];
      const hidden = [];
      const stack = [];     // open GitLab sections
      let github = null, buildkite = null, lastBuildkite = null;
      let buildkiteOpened = false;
      for (const n of lines) {
        const found = this.markers.get(n);
        let header = false, ends = false;
        for (const m of found) {
          if (m.kind === "gitlab") {
            if (m.start) {
              const s = { kind: m.kind, start: n, end: null, title: m.title, name: m.name,
                t0: m.time * 1000, t1: NaN, collapsed: m.collapsed, depth: stack.length };
              stack.push(s);
              list.push(s);
              header = true;
            } else {
              for (let i = stack.length - 1; i >= 0; i--) {
                if (stack[i].name !== m.name) continue;
                for (const s of stack.splice(i)) {
                  s.end = n;
                  s.t1 = m.time * 1000;
                }
                break;
              }
              ends = true;
            }
          } else if (m.kind === "github") {
            if (github !== null) github.end = m.start ? n - 1 : n;
            github = null;
            if (m.start) {
              github = { kind: m.kind, start: n, end: null, title: m.title, t0: NaN, t1: NaN,
                collapsed: true, depth: 0 };
              list.push(github);
              header = true;
            } else {
              ends = true;
            }
          } else if (m.expand) {
            const s = buildkite || lastBuildkite;
            if (s !== null) { s.collapsed = false; buildkiteOpened = true; }
            ends = true;
          } else {
            if (buildkite !== null) buildkite.end = n - 1;
            buildkite = lastBuildkite = { kind: m.kind, start: n, end: null, title: m.title,
              t0: NaN, t1: NaN, collapsed: m.collapsed, dim: m.dim, depth: 0 };
            if (m.open) buildkiteOpened = true;
            list.push(buildkite);
            header = true;
          }
        }
        if (ends && !header && !found.visible) {
          hidden.push(n);
          // The end marker belongs to the sections it ends.
        } else if (ends) {
          for (const s of list) if (s.end === n && s.start !== n) s.end = n - 1;
        }
      }
      if (!buildkiteOpened) {
        // Buildkite shows the last "---" group open when none is.
        for (let i = list.length - 1; i >= 0; i--) {
          const s = list[i];
          if (s.kind === "buildkite" && !s.dim) { s.collapsed = false; break; }
        }
      }
      this.list = list;
      this.byStart = new Map(list.map(s => [s.start, s]));
      this.hiddenLines = hidden;
      this.layout(total);
      return true;
    }
    folded(s) {
      const set = this.toggled.get(s.start);
      if (set !== undefined) return set;
      return s.collapsed && s.end !== null;
    }
    toggle(start, fold) {
      const s = this.byStart.get(start);
      if (s === undefined) return;
      this.toggled.set(start, fold === undefined ? !this.folded(s) : fold);
      this.layout(this.builtFor);
    }
    // Open every section that hides line n.
    unfold(n) {
      let changed = false;
      for (const s of this.list) {
        if (s.start < n && (s.end === null || s.end >= n) && this.folded(s)) {
          this.toggled.set(s.start, false);
          changed = true;
        }
      }
      if (changed) this.layout(this.builtFor);
      return changed;
    }
    // The hidden runs: folded bodies and end markers, sorted and merged.
    layout(total) {
      const runs = [];
      for (const s of this.list) {
        if (!this.folded(s)) continue;
        const to = s.end === null ? Infinity : s.end;
        if (to > s.start) runs.push([s.start + 1, to]);
      }
      for (const n of this.hiddenLines) runs.push([n, n]);
      runs.sort((a, b) => a[0] - b[0]);
      const from = [], to = [], before = [];
      let hidden = 0;
      for (const [a, b] of runs) {
        const last = from.length - 1;
        if (last >= 0 && a <= to[last] + 1) {
          if (b > to[last]) {
            hidden += b - to[last];
            to[last] = b;
          }
          continue;
        }
        from.push(a);
        to.push(b);
        before.push(hidden);
        hidden += b - a + 1;
      }
      this.runs = { from: from, to: to, before: before };
      this.version++;
    }
    // The index of the last run starting at or before line n (-1: none).
    runAt(n) {
      const from = this.runs.from;
      let lo = 0, hi = from.length - 1, found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (from[mid] <= n) { found = mid; lo = mid + 1; } else hi = mid - 1;
      }
      return found;
    }
    // Lines hidden among lines 1..n.
    hiddenUpTo(n) {
      const i = this.runAt(n);
      if (i < 0) return 0;
      const r = this.runs;
      return r.before[i] + Math.min(n, r.to[i]) - r.from[i] + 1;
    }
    hidden(n) {
      const i = this.runAt(n);
      return i >= 0 && n <= this.runs.to[i];
    }
    // How many rows lines 1..total make.
    rows(total) {
      return total - this.hiddenUpTo(total);
    }
    // The row of line n (0-based); a hidden line is on the row before it.
    rowOf(n) {
      const i = this.runAt(n);
      if (i < 0) return n - 1;
      const r = this.runs;
      if (n <= r.to[i]) return r.from[i] - 1 - r.before[i] - 1;
      return n - 1 - r.before[i] - (r.to[i] - r.from[i] + 1);
    }
    // The line on row `row` (0-based).
    lineAt(row) {
      const r = this.runs;
      // The last run with fewer shown lines before it than `row` + 1.
      let lo = 0, hi = r.from.length - 1, found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (r.from[mid] - 1 - r.before[mid] <= row) { found = mid; lo = mid + 1; } else hi = mid - 1;
      }
      if (found < 0) return row + 1;
      return row + 1 + r.before[found] + (r.to[found] - r.from[found] + 1);
    }
    // The lines section s shows when it is open (its end marker is not).
    body(s, total) {
      const end = s.end === null ? total : s.end;
      let count = end - s.start;
      const hidden = this.hiddenLines;
      for (let lo = 0, hi = hidden.length; ;) {
        // Markers hidden within (start, end]: a binary search for the first.
        if (lo >= hi) {
          for (let i = lo; i < hidden.length && hidden[i] <= end; i++) count--;
          break;
        }
        const mid = (lo + hi) >> 1;
        if (hidden[mid] <= s.start) lo = mid + 1; else hi = mid;
      }
      return Math.max(0, count);
    }
    // The section whose header is line n, if any.
    at(n) {
      return this.byStart.get(n);
    }
  }

  return Object.freeze({ SCANS: SCANS, parse: parse, maybe: maybe, Sections: Sections });
})();
