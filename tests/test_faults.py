"""
Faults that kill or break the real server process: nothing acknowledged is
ever lost.
"""

from __future__ import annotations

import os
import re
import signal
import time

import treq
from support.clients import close, finished, get, ws
from support.processes import Twistd, poll_until


async def test_sigkill_keeps_every_acknowledged_byte_and_allows_resume(tmp_path):
    root = tmp_path / "root"
    server = Twistd.start(root)
    sent = bytearray()
    try:
        a = await ws(server.ws_url("kill.log", ack=1), "APPEND")
        assert a.status == 101
        for i in range(200):
            chunk = b"%06d " % i * 100
            a.sendMessage(chunk)
            sent += chunk
        await a.until_ack(len(sent) // 2)
        acked = a.acks[-1]
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        await finished(a)
        acked = a.acks[-1]
    finally:
        server.stop()
    content = (root / "kill.log").read_bytes()
    assert len(content) >= acked
    assert bytes(sent).startswith(content)
    # A new server on the same root knows the killed session did not end
    # well (section 9); the appender resumes where the file ends.
    server = Twistd.start(root)
    try:
        status, headers, _ = await get(server.url("kill.log"), method="HEAD")
        assert (status, headers["httpfstream-complete"]) == (200, "0")
        b = await ws(server.ws_url("kill.log", offset=len(content)), "APPEND")
        assert b.status == 101
        b.sendMessage(bytes(sent[len(content) :]))
        assert await close(b) == 1000
        status, headers, _ = await get(server.url("kill.log"), method="HEAD")
        assert (status, headers["httpfstream-complete"]) == (200, "1")
    finally:
        server.stop()
    assert (root / "kill.log").read_bytes() == bytes(sent)


async def test_sigterm_persists_closes_with_1001_and_exits(tmp_path):
    root = tmp_path / "root"
    server = Twistd.start(root)
    try:
        a = await ws(server.ws_url("term.log", ack=1), "APPEND")
        f = await ws(server.ws_url("term.log"))
        a.sendMessage(b"x" * 100_000)
        await f.until_bytes(50_000)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert await finished(f) == 1001
        assert await finished(a) == 1001
        code = server.process.wait(10)
        assert time.monotonic() - started < 10
        assert code in (0, -signal.SIGTERM)
        assert a.acks[-1] == 100_000
    finally:
        server.stop()
    assert (root / "term.log").read_bytes() == b"x" * 100_000


async def test_file_truncated_behind_the_servers_back(make_server):
    server = make_server(tail_size=1024, read_size=4096)
    a = await ws(server.ws_url("cut.log", ack=1), "APPEND")
    # Two writes: the tail keeps the last one whole, the first is read
    # from the file.
    a.sendMessage(b"y" * 50_000)
    await a.until_ack(50_000)
    a.sendMessage(b"y" * 50_000)
    await a.until_ack(100_000)
    with open(server.file("cut.log").path, "r+b") as f:
        f.truncate(10)
    # A follower from offset 0 must read the file, which is now too short.
    f = await ws(server.ws_url("cut.log"))
    assert f.status == 101
    assert await finished(f) == 1011
    assert f.close_reason == "resource file shrank on disk"
    # The server is still serving.
    assert await close(a) == 1000
    g = await ws(server.ws_url("other.log"), "APPEND")
    assert g.status == 101
    await close(g)


async def test_a_full_disk_ends_the_appender_with_1011_and_nothing_else(tmp_path):
    root = tmp_path / "root"
    server = Twistd.start(root, max_file_size=1 << 20)
    try:
        a = await ws(server.ws_url("full.log", ack=1), "APPEND")
        f = await ws(server.ws_url("full.log"))
        a.sendMessage(b"a" * 600_000)
        await a.until_ack(600_000)
        a.sendMessage(b"b" * 600_000)  # crosses the 1 MiB the kernel allows
        assert await finished(a) == 1011
        assert "write failed" in a.close_reason
        assert await finished(f) == 4000
        assert bytes(f.received) == b"a" * 600_000
        # Nothing half-written stays: the file is what was acknowledged.
        assert (root / "full.log").read_bytes() == b"a" * 600_000
        # The server keeps serving other resources.
        other = await ws(server.ws_url("other.log"), "APPEND")
        other.sendMessage(b"still here")
        assert await close(other) == 1000
        assert (root / "other.log").read_bytes() == b"still here"
        assert server.process.poll() is None
    finally:
        server.stop()


def test_running_out_of_file_descriptors_is_survived(tmp_path):
    import socket
    import urllib.request

    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.log").write_bytes(b"ok")
    server = Twistd.start(root, max_open_files=48)
    try:
        sockets = []
        try:
            # Far more connections than the server has descriptors for.
            for _ in range(80):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                s.sendall(b"GET /ok.log HTTP/1.1\r\nHost: x\r\n\r\n")
                sockets.append(s)
            answers = []
            for s in sockets:
                data = b""
                try:
                    while b"\r\n\r\n" not in data and (chunk := s.recv(4096)):
                        data += chunk
                except (ConnectionResetError, TimeoutError):
                    # Reset by the server's reserved-descriptor accept, or
                    # still waiting in the listen backlog for a descriptor
                    # (a loaded machine): either way not served.
                    data = b""
                answers.append(data.split(b"\r\n", 1)[0])
            served = [a for a in answers if a.startswith(b"HTTP/1.1 ")]
            refused = [a for a in answers if not a]
            assert served and refused, answers
            # Every answer is 200 or 503, never an error page.
            assert {a.split()[1] for a in served} <= {b"200", b"503"}
        finally:
            for s in sockets:
                s.close()
        # Once the crowd has gone (the server has closed its ends: another
        # process gives no event to wait on, so watch its descriptor table),
        # it serves as before.
        fds = f"/proc/{server.process.pid}/fd"
        poll_until(lambda: len(os.listdir(fds)) <= 40, timeout=10)
        url = f"http://127.0.0.1:{server.port}/ok.log"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"ok"
        assert server.process.poll() is None
    finally:
        server.stop()


async def test_file_removed_behind_the_servers_back(make_server):
    server = make_server()
    a = await ws(server.ws_url("gone.log", ack=1), "APPEND")
    f = await ws(server.ws_url("gone.log"))
    a.sendMessage(b"before ")
    await a.until_ack(7)
    os.remove(server.file("gone.log").path)
    # The open stream carries on with the file it has open...
    a.sendMessage(b"after")
    await f.until_bytes(12)
    assert (await get(server.url("gone.log")))[2] == b"before after"
    assert await close(a) == 1000
    assert await finished(f) == 1000
    assert bytes(f.received) == b"before after"
    # ...and once nobody uses it, the resource is gone, as its file is.
    assert (await get(server.url("gone.log")))[0] == 404


async def test_a_full_disk_answers_a_post_with_507_one_line_and_a_count(tmp_path):
    root = tmp_path / "root"
    server = Twistd.start(
        root, "--admin=tcp:0:interface=127.0.0.1", max_file_size=1 << 20
    )
    try:
        first = await treq.post(server.url("full.log"), data=b"a" * 600_000)
        assert first.code == 200
        await first.content()
        second = await treq.post(server.url("full.log"), data=b"b" * 600_000)
        body = (await second.content()).decode()
        assert second.code == 507, body
        assert "no space left" in body and "600000 bytes" in body, body
        assert second.headers.getRawHeaders("httpfstream-size") == ["600000"]
        # The resource keeps the bytes it had, and can take more that fit.
        assert (root / "full.log").read_bytes() == b"a" * 600_000
        third = await treq.post(server.url("full.log"), data=b"c" * 1000)
        assert third.code == 200
        await third.content()
        # One line at error level naming the resource and its size; no
        # traceback, nothing critical.
        lines = b"".join(server.log).decode().splitlines()
        errors = [line for line in lines if "#error]" in line]
        assert len(errors) == 1, errors
        assert "no space left to append to full.log at 600000 bytes" in errors[0]
        assert not [line for line in lines if "#critical" in line or "Traceback" in line]
        # Counted in /metrics.
        logged = await server.until_logged(rb"httpfstream-admin starting on (\d+)")
        admin = int(re.search(rb"on (\d+)", logged[0]).group(1))
        metrics = await treq.get(f"http://127.0.0.1:{admin}/metrics")
        text = (await metrics.content()).decode()
        assert "httpfstream_no_space_appends_total 1.0" in text, text
        assert 'httpfstream_refusals_total{status="507"} 1.0' in text, text
    finally:
        server.stop()
