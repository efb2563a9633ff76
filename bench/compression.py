"""
What compressing CI-like log text costs and gains, in-process, with the
server's own segment compressor (``httpfstream.web.deflate.segment``):

    .venv/bin/python bench/compression.py [MEGABYTES]

For batches of several sizes and zlib levels 1 and 6: the ratio (bytes
in / bytes out) and the speed (MB of input a second, one core) of each
batch compressed on its own (what the server does: `web/deflate.py`), and
of the same batches through one compressor that keeps its history (what a
per-reader compressor would do).  The text: lines with ANSI colours as a
CI job prints them (times in grey, compiler lines, test results in green or
red, yellow warnings, bold step headers, downloads with hashes).
"""

from __future__ import annotations

import random
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from httpfstream.web.deflate import segment


def log_text(n: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    i = 0
    while size < n:
        millis = rng.randrange(1000)
        t = f"\x1b[90m10:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{millis:03d}\x1b[0m "
        k = rng.random()
        if k < 0.4:
            d = rng.choice(["core", "net", "util", "io"])
            line = f"gcc -O2 -Wall -c src/{d}/mod_{rng.randrange(500)}.c -o build/m.o"
        elif k < 0.7:
            ok = rng.random() < 0.95
            verdict = "\x1b[32mPASSED" if ok else "\x1b[31mFAILED"
            name = rng.choice(["api", "store", "http", "cli"])
            case = rng.randrange(9999)
            line = f"tests/test_{name}.py::test_case_{case} {verdict}\x1b[0m"
        elif k < 0.8:
            line = f"\x1b[33mwarning:\x1b[0m unused variable 'tmp{rng.randrange(99)}'"
        elif k < 0.9:
            line = (
                f"\x1b[1m\x1b[36m==> Step {rng.randrange(1, 20)}/20 : RUN make\x1b[0m"
            )
        else:
            digest = "".join(rng.choice("0123456789abcdef") for _ in range(12))
            line = f"Downloading {digest}.tar.gz ({rng.randrange(10, 9999)} kB)"
        out.append(t + line + "\n")
        size += len(out[-1])
        i += 1
    return "".join(out).encode()


def main() -> None:
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 8
    text = log_text(int(megabytes * 1e6))
    print(f"{len(text) / 1e6:.1f} MB of log text")
    print("| batch | level | on its own: ratio, MB/s | with history: ratio, MB/s |")
    print("|---|---|---|---|")
    for batch in (1024, 10240, 65536, 262144):
        pieces = [text[i : i + batch] for i in range(0, len(text), batch)]
        for level in (1, 6):
            started = time.process_time()
            alone = sum(len(segment(p, level=level)) for p in pieces)
            alone_s = time.process_time() - started
            kept = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
            started = time.process_time()
            history = sum(
                len(kept.compress(p)) + len(kept.flush(zlib.Z_SYNC_FLUSH))
                for p in pieces
            )
            history_s = time.process_time() - started
            print(
                f"| {batch >> 10} KiB | {level} "
                f"| {len(text) / alone:.2f}, {len(text) / alone_s / 1e6:.0f} "
                f"| {len(text) / history:.2f}, {len(text) / history_s / 1e6:.0f} |"
            )


if __name__ == "__main__":
    main()
