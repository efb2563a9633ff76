"""
Subprocess harnesses: ``twistd -n httpfstream`` (`Twistd`), the CLIs
(`Child`, `APPEND`, `FOLLOW`) and the virtualenv's scripts (`BIN`), with
what waiting on another process takes (`poll_until`, `read_line`,
`stop_process`), throwaway certificates (`tls_files`), and `require` for
a real program that may be missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred

BIN = Path(sys.executable).parent


_spawned: list[subprocess.Popen[bytes]] = []


def spawn(*argv: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """A client subprocess; killed (if need be) and reaped after the test."""
    process = subprocess.Popen(argv, **kwargs)
    _spawned.append(process)
    return process


def reap_spawned() -> None:
    """Kill and reap what `spawn` started (conftest does it after each test)."""
    while _spawned:
        process = _spawned.pop()
        if process.poll() is None:
            process.kill()
        process.wait(10)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if that has not ended it in 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """
    A throwaway certificate authority and a certificate for ``localhost``
    in ``folder``: the key, the certificate and the authority, as PEM files.
    """
    import trustme

    authority = trustme.CA()
    cert = authority.issue_cert("localhost")
    key_pem, cert_pem, ca = folder / "key.pem", folder / "cert.pem", folder / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    authority.cert_pem.write_to_path(str(ca))
    return key_pem, cert_pem, ca


def poll_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.05
) -> None:
    """
    Block until ``predicate()`` holds, calling it every ``interval``
    seconds; `TimeoutError` after ``timeout``.

    Only for what another process does that gives this one no event to wait
    on (its entries under /proc, its memory while it runs): everything a
    test's own connections see is waited on with `Conditions` instead.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not so after {timeout}s")
        time.sleep(interval)


def read_line(stream: IO[bytes], timeout: float = 15) -> bytes:
    """One line from a subprocess pipe, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"no complete line within {timeout}s: {line!r}")
        byte = os.read(stream.fileno(), 1)
        if not byte:
            return line
        line += byte
    return line


@dataclass
class Twistd:
    """A ``twistd -n httpfstream`` subprocess on 127.0.0.1, port 0."""

    process: subprocess.Popen[bytes]
    port: int
    root: Path

    log: list[bytes] = field(default_factory=list)

    scheme: str = "http"

    #: Notified (under its lock) each time a line is added to ``log``.
    log_changed: threading.Condition = field(default_factory=threading.Condition)
    #: Every port it listens on, in the order its ``--port``s were given
    #: (``port`` is the first); filled in from its log as each starts.
    ports: list[int] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        root: Path,
        *options: str,
        port: str = "tcp:0",
        max_file_size: int | None = None,
        max_open_files: int | None = None,
        twistd_options: tuple[str, ...] = (),
    ) -> Twistd:
        """
        Start it; ``max_file_size`` sets RLIMIT_FSIZE, so writes past it
        fail in the kernel as on a full disk (CPython ignores SIGXFSZ).
        ``twistd_options`` are twistd's own (``--logger=...``), given
        before ``httpfstream``; ``options`` are the plugin's.
        """

        def limit() -> None:
            if max_file_size is not None:
                resource.setrlimit(
                    resource.RLIMIT_FSIZE, (max_file_size, max_file_size)
                )
            if max_open_files is not None:
                resource.setrlimit(
                    resource.RLIMIT_NOFILE, (max_open_files, max_open_files)
                )

        process = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                *twistd_options,
                "httpfstream",
                f"--root={root}",
                f"--port={port}:interface=127.0.0.1",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
        assert process.stdout is not None
        log: list[bytes] = []
        log_changed = threading.Condition()
        found_port: list[int] = []
        started = threading.Event()

        def drain() -> None:
            # Read the log for as long as the server runs, so a full pipe
            # never blocks it.
            assert process.stdout is not None
            for line in process.stdout:
                with log_changed:
                    log.append(line)
                    log_changed.notify_all()
                found = re.search(rb"Site (?:\(TLS\) )?starting on (\d+)", line)
                if found:
                    found_port.append(int(found.group(1)))
                    started.set()
            started.set()
            with log_changed:
                log_changed.notify_all()
            process.stdout.close()

        threading.Thread(target=drain, daemon=True).start()
        if not started.wait(30) or not found_port:
            process.kill()
            process.wait(10)  # reaped: no warning of it later, in another test
            raise RuntimeError(b"twistd did not start:\n" + b"".join(log))
        scheme = "https" if port.startswith("ssl:") else "http"
        return cls(process, found_port[0], root, log, scheme, log_changed, found_port)

    def wait_for_log(
        self, pattern: bytes, count: int = 1, timeout: float = 30
    ) -> list[bytes]:
        """
        Block until ``count`` lines of the log match ``pattern`` (a regular
        expression); they are returned.  Raises `TimeoutError` after
        ``timeout`` seconds, or once the server has exited without them.
        """
        deadline = time.monotonic() + timeout
        with self.log_changed:
            while True:
                found = [line for line in self.log if re.search(pattern, line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise TimeoutError(
                        f"{count} log lines matching {pattern!r} within {timeout}s;"
                        f" got {len(found)}"
                    )
                self.log_changed.wait(min(left, 1.0))

    def until_logged(
        self, pattern: bytes, count: int = 1, timeout: float = 30
    ) -> Deferred[list[bytes]]:
        """`wait_for_log` in a thread, for tests that keep the reactor turning."""
        return threads.deferToThread(self.wait_for_log, pattern, count, timeout)

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def url(self, name: str, **query: object) -> str:
        qs = ("?" + urlencode(query)) if query else ""
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}/{quote(name)}{qs}"

    def ws_url(self, name: str, **query: object) -> str:
        return self.url(name, **query).replace("http", "ws", 1)

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert kib is not None
        return int(kib.group(1)) * 1024

    def stop(self) -> None:
        stop_process(self.process)


def require(what: str, found: object, install: str) -> None:
    """
    Skip the test when a real component it needs (a browser, nginx, Redis)
    is missing from this machine, saying how to get it; under CI (CI=true),
    where .ci/run installs every one of them, a missing one fails instead.
    """
    import pytest

    if found:
        return
    message = f"{what} is not installed here ({install})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must install it (.ci/packages.txt)")
    pytest.skip(message)


class Child:
    """
    A subprocess (one of the CLIs) seen from the reactor: threads read its
    output and wait for its exit, and report to the reactor, so a test
    awaits Deferreds (`until`, ``ended``) instead of blocking on pipes.

    :ivar ended: fires with the exit status, once all output is read.
    """

    def __init__(self, *argv: str) -> None:
        self.argv = argv
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ended: Deferred[int] = Deferred()
        self._watchers: list[tuple[Any, Deferred[None]]] = []
        readers = [
            threading.Thread(target=self._read, args=(pipe, buffer), daemon=True)
            for pipe, buffer in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in readers:
            reader.start()

        def wait() -> None:
            code = self.process.wait()
            for reader in readers:
                reader.join()
            reactor.callFromThread(self._exited, code)

        threading.Thread(target=wait, daemon=True).start()

    def __repr__(self) -> str:
        return f"<Child {' '.join(self.argv[1:])} {self.process.returncode}>"

    def _read(self, pipe: IO[bytes], buffer: bytearray) -> None:
        while chunk := os.read(pipe.fileno(), 65536):
            reactor.callFromThread(self._got, buffer, chunk)
        pipe.close()

    def _got(self, buffer: bytearray, chunk: bytes) -> None:
        buffer += chunk
        self._check()

    def _check(self) -> None:
        still = []
        for predicate, d in self._watchers:
            if predicate():
                d.callback(None)
            else:
                still.append((predicate, d))
        self._watchers = still

    def _exited(self, code: int) -> None:
        for predicate, d in self._watchers:
            if predicate():
                d.callback(None)
            else:
                d.errback(AssertionError(f"{self!r} exited first: {self.stderr!r}"))
        self._watchers = []
        self.ended.callback(code)

    def until(self, predicate: Any, timeout: float = 30) -> Deferred[None]:
        """Fire once ``predicate()`` holds, checked as output arrives."""
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
        elif self.ended.called:
            d.errback(AssertionError(f"{self!r} exited: {self.stderr!r}"))
        else:
            self._watchers.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def until_stderr(self, text: bytes, timeout: float = 30) -> Deferred[None]:
        """Fire once standard error holds ``text``."""
        return self.until(lambda: text in self.stderr, timeout)

    def until_stdout(self, size: int, timeout: float = 30) -> Deferred[None]:
        """Fire once ``size`` bytes have come out on standard output."""
        return self.until(lambda: len(self.stdout) >= size, timeout)

    def exit_status(self, timeout: float = 60) -> Deferred[int]:
        """``ended``, failing after ``timeout`` seconds."""
        d: Deferred[int] = Deferred()

        def fire(code: int) -> int:
            if not d.called:
                d.callback(code)
            return code

        self.ended.addCallback(fire)
        return d.addTimeout(timeout, reactor)

    def write(self, data: bytes) -> None:
        """Write to standard input now (small amounts: it blocks)."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def reap(self) -> None:
        """Kill it if it still runs, and wait for it (after a test)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()


APPEND = str(BIN / "httpfstream-append")
FOLLOW = str(BIN / "httpfstream-follow")


def run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """A command run to its end, its output captured."""
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60)


def start_append(url: str, *args: str) -> subprocess.Popen[bytes]:
    """An appender fed through a pipe, returned once it holds the resource."""
    process = spawn(
        APPEND,
        "-v",
        *args,
        url,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    while b"appending to" not in (line := read_line(process.stderr)):
        assert line, "the appender ended before it began"
    return process


def type_line(appender: subprocess.Popen[bytes], line: bytes) -> None:
    """Write ``line`` to an appender's stdin now, as a user typing it would."""
    assert appender.stdin is not None
    appender.stdin.write(line)
    appender.stdin.flush()
