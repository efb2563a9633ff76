"""
A follower that stops reading while the appender writes 100 MB (docs/PROTOCOL.md
section 4: a slow follower never slows the appender, and costs the server a
bounded amount of memory).  Runs against ``twistd`` in a subprocess so the
server's memory can be measured on its own.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess

from support.processes import BIN, Twistd, poll_until, read_line

TOTAL = 100 << 20


def _handshake(port: int, path: str) -> tuple[socket.socket, bytes]:
    sock = socket.socket()
    # A small receive buffer, so the backlog stays in the server, not here.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    return sock, head


class _Frames:
    """Reads server frames (unmasked) from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self._sock.recv(1 << 20)
            assert chunk, "connection closed mid-frame"
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def next(self) -> tuple[int, bytes]:
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8))
        return b0 & 0x0F, self._take(n)


def test_stalled_follower_does_not_hold_back_the_appender_or_grow_memory(tmp_path):
    server = Twistd.start(tmp_path / "root", "--ping-interval=0")
    try:
        source = tmp_path / "source.bin"
        digest = hashlib.sha256()
        with source.open("wb") as f:
            for i in range(TOTAL >> 20):
                block = i.to_bytes(4, "big") + os.urandom((1 << 20) - 4)
                digest.update(block)
                f.write(block)
        url = server.url("big.bin")
        appender = subprocess.Popen(
            [str(BIN / "httpfstream-append"), "-v", url],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert appender.stdin is not None and appender.stderr is not None
        while b"appending to" not in (line := read_line(appender.stderr)):
            assert line, "the appender ended before it began"
        sock, head = _handshake(server.port, "/big.bin")
        assert b" 101 " in head.split(b"\r\n")[0]
        # The follower now reads nothing until the appender is done.
        baseline = server.rss()
        peak = baseline
        with source.open("rb") as f:
            while block := f.read(1 << 20):
                appender.stdin.write(block)
                peak = max(peak, server.rss())
        appender.stdin.close()

        def sampled_until_the_appender_exits() -> bool:
            nonlocal peak
            peak = max(peak, server.rss())
            return appender.poll() is not None

        poll_until(sampled_until_the_appender_exits, timeout=120)
        assert appender.wait(1) == 0, appender.stderr.read()
        appender.stderr.close()
        growth = peak - baseline
        print(f"server RSS {baseline >> 20} MiB, peak +{growth >> 20} MiB")
        assert growth < TOTAL // 2, f"server grew {growth >> 20} MiB"
        # Now the follower reads again and gets every byte, then 1000.
        frames = _Frames(sock)
        received = hashlib.sha256()
        count = 0
        while True:
            opcode, payload = frames.next()
            if opcode == 0x8:
                assert struct.unpack("!H", payload[:2])[0] == 1000
                break
            assert opcode == 0x2
            received.update(payload)
            count += len(payload)
        assert count == TOTAL
        assert received.hexdigest() == digest.hexdigest()
        sock.close()
    finally:
        server.stop()
