"""
The admin site (``--admin``): a real Prometheus text scrape during and after
a load the test drives, each figure checked against what the test did;
``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

import re

import treq
from prometheus_client.parser import text_string_to_metric_families
from support.clients import appender, close, finished, get, ws
from support.followers import open_follower
from support.processes import Twistd, poll_until
from twisted.internet import reactor

from httpfstream.web.admin import make_admin_site


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text scrape, by name and labels."""
    response = await treq.get(url)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = (await treq.content(response)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def admin_url(server, path: str) -> str:
    port = server.admin_port.getHost().port
    return f"http://127.0.0.1:{port}/{path}"


def with_admin(server):
    server.admin_port = reactor.listenTCP(
        0, make_admin_site(server.registry), interface="127.0.0.1"
    )
    return server


async def test_metrics_count_what_happened(make_server):
    server = with_admin(make_server(tail_size=1 << 10))
    try:
        a = await appender(server, "m.log", ack=1)
        followers = [await ws(server.ws_url("m.log")) for _ in range(3)]
        streaming = await open_follower(server, "m.log", "http")
        payload = b"x" * 5000
        a.sendMessage(payload)
        await a.until_ack(len(payload))
        during = await scrape(admin_url(server, "metrics"))
        assert during[("httpfstream_appenders", (("kind", "append"),))] == 1
        assert during[("httpfstream_readers", (("transport", "follow-ws"),))] == 3
        assert during[("httpfstream_readers", (("transport", "follow-http"),))] == 1
        assert during[("httpfstream_open_streams", ())] == 1
        # Refusals, counted by status.
        assert (await get(server.url("none.log")))[0] == 404
        assert (await ws(server.ws_url("m.log"), "APPEND")).status == 409
        assert await close(a) == 1000
        for f in followers:
            assert await finished(f) == 1000
        await streaming.ended()
        assert (await get(server.url("p.log"), method="POST", data=b"12345"))[0] == 200
        assert (await get(server.url("m.log")))[2] == payload
        await server.registry.when_idle()
        after = await scrape(admin_url(server, "metrics"))
    finally:
        await server.admin_port.stopListening()

    def ended(kind: str, outcome: str) -> float:
        key = (
            "httpfstream_sessions_ended_total",
            (("kind", kind), ("outcome", outcome)),
        )
        return after.get(key, 0)

    assert ended("append", "1000") == 1
    assert ended("follow-ws", "1000") == 3
    assert ended("follow-http", "1000") == 1
    assert ended("post", "200") == 1
    assert ended("snapshot", "200") == 1
    assert after[("httpfstream_appended_bytes_total", ())] == len(payload) + 5
    # 3 WebSocket followers, one follow=1, one snapshot: five times the bytes.
    assert after[("httpfstream_delivered_bytes_total", ())] == 5 * len(payload)
    assert after[("httpfstream_refusals_total", (("status", "404"),))] == 1
    assert after[("httpfstream_refusals_total", (("status", "409"),))] == 1
    assert after[("httpfstream_write_seconds_count", ())] >= 2
    assert after[("httpfstream_fsync_seconds_count", ())] == 2  # two clean ends
    assert after[("httpfstream_open_streams", ())] == 0
    assert after[("httpfstream_readers", (("transport", "follow-ws"),))] == 0


async def test_health_and_readiness(make_server):
    server = with_admin(make_server())
    try:
        assert (await get(admin_url(server, "healthz")))[:3:2] == (200, b"ok\n")
        assert (await get(admin_url(server, "readyz")))[:3:2] == (200, b"ready\n")
        await server.registry.stopService()
        status, _, body = await get(admin_url(server, "readyz"))
        assert status == 503 and b"not running" in body
        assert (await get(admin_url(server, "healthz")))[0] == 200
    finally:
        await server.admin_port.stopListening()


async def test_twistd_admin_listener(tmp_path):
    server = Twistd.start(tmp_path / "root", "--admin=tcp:0:interface=127.0.0.1")
    try:

        def admin_port() -> int | None:
            for line in server.log:
                found = re.search(rb"httpfstream-admin starting on (\d+)", line)
                if found:
                    return int(found.group(1))
            return None

        # Logged by the other process beside the main port's line.
        poll_until(lambda: admin_port() is not None, timeout=10)
        port = admin_port()
        await get(server.url("t.log"), method="POST", data=b"abc")
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")
        key = (
            "httpfstream_sessions_ended_total",
            (("kind", "post"), ("outcome", "200")),
        )
        assert samples[key] == 1
        assert samples[("httpfstream_appended_bytes_total", ())] == 3
    finally:
        server.stop()


async def test_followers_per_resource_are_bounded_to_the_most_followed(make_server):
    from httpfstream.web.admin import MOST_FOLLOWED

    server = with_admin(make_server())
    appenders = []
    followers = []
    try:
        # One more followed resource than the gauge names; r00 the most
        # followed, the others one follower each.
        for i in range(MOST_FOLLOWED + 1):
            appenders.append(await appender(server, f"r{i:02}.log"))
            followers.append(await ws(server.ws_url(f"r{i:02}.log")))
        followers.append(await ws(server.ws_url("r00.log")))
        followers.append(await ws(server.ws_url("r00.log")))
        # A resource nobody follows is never named.
        appenders.append(await appender(server, "quiet.log"))
        samples = await scrape(admin_url(server, "metrics"))
        named = {
            labels[0][1]: value
            for (name, labels), value in samples.items()
            if name == "httpfstream_resource_followers"
        }
        assert len(named) == MOST_FOLLOWED
        assert named["r00.log"] == 3
        assert "quiet.log" not in named
        # Ties are broken by name: the last of the ones with one is left out.
        assert f"r{MOST_FOLLOWED:02}.log" not in named
    finally:
        for a in appenders:
            await close(a)
        for f in followers:
            await finished(f)
        await server.admin_port.stopListening()
