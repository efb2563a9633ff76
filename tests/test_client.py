"""The client API (`httpfstream.client`) against a real server."""

from __future__ import annotations

import datetime
import io

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.clients import Conditions, appender, close, finished, get, ws
from support.proxies import TO_SERVER, Forwarder, Proxy
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.protocols import portforward
from twisted.web.client import ResponseNeverReceived
from twisted.web.server import Site
from twisted.web.static import File

from httpfstream import client
from httpfstream.web.auth import Tokens


async def test_append_read_and_follow_a_finished_resource(server):
    url = server.url("c/done.log")
    assert await client.append(url, b"hello\n" * 1000) == 6000
    assert await client.read(url) == b"hello\n" * 1000
    chunks: list[bytes] = []
    result = await client.follow(url, chunks.append)
    assert (result.complete, result.code, result.offset) == (True, 1000, 6000)
    assert b"".join(chunks) == b"hello\n" * 1000
    chunks.clear()
    result = await client.follow(url, chunks.append, offset=-6)
    assert b"".join(chunks) == b"hello\n"


async def test_append_takes_files_and_iterables(server):
    url = server.url("c/sources.bin")
    assert await client.append(url, io.BytesIO(b"x" * 200_000)) == 200_000
    assert await client.append(url, (b"%d," % i for i in range(5))) == 200_010
    assert server.file("c/sources.bin").getContent().endswith(b"0,1,2,3,4,")


async def test_follow_live_with_open_append(server):
    url = server.url("c/live.log")
    writer = await client.open_append(url)
    writer.write(b"one ")
    chunks: list[bytes] = []
    following = client.follow(url, chunks.append)
    writer.write(b"two ")
    await writer.drained()
    writer.write(b"three")
    assert await writer.close() == 13
    result = await following.addTimeout(10, reactor)
    assert result.complete and result.code == 1000
    assert b"".join(chunks) == b"one two three"


async def test_errors_by_kind(server):
    url = server.url("c/held.log")
    with pytest.raises(client.NotFound):
        await client.read(server.url("c/never.log"))
    with pytest.raises(client.NotFound):
        await client.follow(server.url("c/never.log"), lambda data: None)
    held = await client.open_append(url)
    held.write(b"abc")
    await held.drained()
    with pytest.raises(client.AppenderConflict) as conflict:
        await client.open_append(url)
    assert conflict.value.status == 409 and conflict.value.active
    assert await held.close() == 3
    with pytest.raises(client.OffsetMismatch) as mismatch:
        await client.open_append(url, offset=1)
    assert mismatch.value.size == 3
    with pytest.raises(client.HTTPError) as bad:
        await client.open_append(server.url("c/dir/"))
    assert bad.value.status == 400


async def test_follow_reports_a_lost_appender(server):
    url = server.url("c/lost.log")
    a = await appender(server, "c/lost.log", ack=1)
    a.sendMessage(b"some")
    await a.until_ack(4)
    got = _Collector()
    following = client.follow(url, got)
    await got.until(4)
    a.transport.abortConnection()
    result = await following.addTimeout(10, reactor)
    assert (result.complete, result.code) == (False, 4000)
    assert bytes(got.data) == b"some"


async def test_server_limits_fail_the_append(make_server):
    server = make_server(max_resource_size=10)
    writer = await client.open_append(server.url("small.log"))
    writer.write(b"x" * 11)
    with pytest.raises(client.AppendFailed) as failed:
        await writer.close()
    assert failed.value.code == 1009


async def test_handshake_times_out_instead_of_hanging():
    # A server that accepts connections and never answers.
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/x.log"
        with pytest.raises(client.ConnectionLost, match="handshake"):
            await client.follow(url, lambda data: None, timeout=1)
        with pytest.raises(client.ConnectionLost, match="handshake"):
            await client.open_append(url, timeout=1)
    finally:
        await port.stopListening()


class _Collector:
    """``on_data`` for `client.follow`, with a Deferred for "got this much"."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._conditions = Conditions(lambda: f"{len(self.data)} bytes collected")

    def __call__(self, data: bytes) -> None:
        self.data += data
        self._conditions.check()

    def until(self, n: int) -> Deferred[None]:
        return self._conditions.until(lambda: len(self.data) >= n)


async def test_follow_resumes_after_a_dropped_connection(server):
    proxy = Proxy(server)
    try:
        a = await appender(server, "resume.log")
        a.sendMessage(b"before ")
        got = _Collector()
        following = client.follow(proxy.url("resume.log"), got, retry=True)
        await got.until(7)
        proxy.cut()  # the follower sees 1006 and reconnects from offset 7
        a.sendMessage(b"after")
        assert await close(a) == 1000
        result = await following.addTimeout(30, reactor)
        assert result.complete and result.offset == 12
        assert bytes(got.data) == b"before after"
    finally:
        await proxy.stop()


async def test_follow_without_retry_reports_the_drop(server):
    proxy = Proxy(server)
    try:
        a = await appender(server, "noretry.log")
        a.sendMessage(b"x")
        got = _Collector()
        following = client.follow(proxy.url("noretry.log"), got)
        await got.until(1)
        proxy.cut()
        with pytest.raises(client.ConnectionLost) as lost:
            await following.addTimeout(10, reactor)
        assert lost.value.code == 1006
        await close(a)
    finally:
        await proxy.stop()


async def test_append_resumes_after_a_dropped_connection(server):
    proxy = Proxy(server)
    try:
        writer = await client.open_append(proxy.url("resume.bin"), retry=True)
        writer.write(b"a" * 100_000)
        await writer.drained()
        proxy.cut()  # unacknowledged bytes are sent again after reconnecting
        writer.write(b"b" * 100_000)
        assert await writer.close() == 200_000
        assert server.file("resume.bin").getContent() == b"a" * 100_000 + b"b" * 100_000
    finally:
        await proxy.stop()


async def test_append_resumes_across_a_server_restart(make_server):
    first = make_server()
    port = first.address[1]
    writer = await client.open_append(first.url("restart.log"), retry=True)
    writer.write(b"before ")
    await first.stop()  # the server persists it all and closes with 1001
    make_server(first.root, port=port)
    writer.write(b"after")
    assert await writer.close() == 12
    assert first.file("restart.log").getContent() == b"before after"


def _certificate() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def test_https_and_wss(make_server):
    cert_pem, key_pem = _certificate()
    server_tls = PrivateCertificate.loadPEM(cert_pem + key_pem).options()
    server = make_server(tls=server_tls)
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(cert_pem))
    url = f"https://localhost:{server.address[1]}/logs/secure.log"
    writer = await client.open_append(url, tls=tls)
    chunks: list[bytes] = []
    writer.write(b"encrypted ")
    await writer.drained()
    following = client.follow(url, chunks.append, tls=tls)
    writer.write(b"bytes")
    assert await writer.close() == 15
    assert (await following.addTimeout(10, reactor)).complete
    assert b"".join(chunks) == b"encrypted bytes"
    assert await client.read(url, tls=tls) == b"encrypted bytes"


async def test_append_gives_up_resuming_after_give_up_after(server):
    proxy = Proxy(server)
    url = proxy.url("giveup.log")
    writer = await client.open_append(url, retry=True, give_up_after=0.5)
    writer.write(b"lost")
    await proxy.stop()  # cut, and every reconnection is refused
    with pytest.raises(ConnectError):
        await writer.wait().addTimeout(10, reactor)
    assert writer.done
    with pytest.raises(ConnectError):
        await writer.close()


# -- the package's public names ---------------------------------------------

EXPORTED = {
    "AccessDenied",
    "AppendFailed",
    "Appender",
    "AppenderConflict",
    "Client",
    "ConnectionLost",
    "FollowResult",
    "HTTPError",
    "Match",
    "NotFound",
    "NotTLS",
    "OffsetMismatch",
    "SearchResult",
    "SearchUnsupported",
    "TLSExpected",
    "UntrustedCertificate",
    "WrongTransport",
    "append",
    "follow",
    "grep",
    "open_append",
    "read",
}


async def test_refusals_carry_the_servers_reason(server):
    """HTTPError.reason: the body's line, over HTTP and over a WebSocket."""
    with pytest.raises(client.NotFound) as over_http:
        await client.read(server.url("never.log"))
    assert over_http.value.reason == "no such resource"
    assert str(over_http.value) == "404 Not Found: no such resource"
    await client.append(server.url("held.log"), b"abc")
    appender = await client.open_append(server.url("held.log"))
    try:
        with pytest.raises(client.HTTPError) as over_ws:
            await client.follow(server.url("held.log"), lambda data: None, 10)
        assert over_ws.value.status == 416
        assert over_ws.value.reason == (
            "offset 10 is past the end of the resource (3 bytes)"
        )
    finally:
        await appender.close()


def test_public_names_stay_exported():
    assert sorted(client.__all__) == sorted(EXPORTED)
    namespace: dict[str, object] = {}
    exec("from httpfstream.client import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPORTED
    for name in EXPORTED:
        # Defined in a private module, re-exported from the package.
        assert namespace[name].__module__.startswith("httpfstream.client._"), name


# -- Client -------------------------------------------------------------------


class _CountingForwarder(portforward.ProxyFactory):
    """A TCP forwarder to ``server`` that counts the connections made."""

    def __init__(self, server) -> None:
        super().__init__(*server.address)
        self.connections = 0
        # (ProxyFactory's own ``port`` is the server's.)
        self.listening = reactor.listenTCP(0, self, interface="127.0.0.1")

    def buildProtocol(self, addr):
        self.connections += 1
        return super().buildProtocol(addr)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.listening.getHost().port}/logs/{name}"


async def test_one_client_for_many_calls_reuses_its_http_connection(server):
    forwarder = _CountingForwarder(server)
    hfs = client.Client(reactor)
    try:
        url = forwarder.url("reused.log")
        assert await hfs.append(url, b"first ") == 6
        writer = await hfs.open_append(url)
        got = _Collector()
        following = hfs.follow(url, got)
        writer.write(b"second")
        await got.until(12)
        assert await writer.close() == 12
        assert (await following.addTimeout(10, reactor)).complete
        websockets = forwarder.connections  # one per WebSocket call: three
        assert websockets == 3
        # Every GET goes through the one pooled Agent: one connection.
        for _ in range(3):
            assert await hfs.read(url) == b"first second"
        assert forwarder.connections == websockets + 1
        # Following a finished resource: a WebSocket (answered 200), then
        # a GET on the pooled connection.
        chunks: list[bytes] = []
        assert (await hfs.follow(url, chunks.append, offset=-6)).complete
        assert chunks == [b"second"]
        assert forwarder.connections == websockets + 2
        # close() drops the idle connection; the next GET opens another.
        await hfs.close()
        assert await hfs.read(url) == b"first second"
        assert forwarder.connections == websockets + 3
        # The module-level shortcuts make a Client (and a connection) each.
        for _ in range(2):
            assert await client.read(url) == b"first second"
        assert forwarder.connections == websockets + 5
    finally:
        await hfs.close()
        await forwarder.listening.stopListening()


WRITER = "client-writer-token-0123"
READER = "client-reader-token-0123"


async def test_client_with_a_token(make_server):
    secured = make_server(
        tokens=Tokens.parse(f"{WRITER} append,follow\n{READER} follow\n")
    )
    url = secured.url("tokens/api.log")
    writer = client.Client(reactor, token=WRITER)
    reader = client.Client(reactor, token=READER)
    anonymous = client.Client(reactor)
    try:
        with pytest.raises(client.AccessDenied) as denied:
            await anonymous.append(url, b"x")
        assert denied.value.status == 401
        with pytest.raises(client.AccessDenied) as denied:
            await reader.open_append(url)
        assert denied.value.status == 403
        appending = await writer.open_append(url)
        appending.write(b"hello ")
        await appending.drained()
        got = _Collector()
        following = reader.follow(url, got)  # a WebSocket, with the token
        await got.until(6)
        appending.write(b"world")
        assert await appending.close() == 11
        assert (await following.addTimeout(10, reactor)).complete
        assert bytes(got.data) == b"hello world"
        # Plain GETs carry it too: a snapshot, and a finished follow.
        assert await reader.read(url) == b"hello world"
        chunks: list[bytes] = []
        assert (await reader.follow(url, chunks.append)).complete
        assert b"".join(chunks) == b"hello world"
        with pytest.raises(client.AccessDenied) as denied:
            await anonymous.read(url)
        assert denied.value.status == 401
    finally:
        for each in (writer, reader, anonymous):
            await each.close()


async def test_client_trusts_an_authority_for_whatever_host(make_server, tmp_path):
    import trustme

    authority = trustme.CA()
    leaf = authority.issue_cert("localhost", "127.0.0.1")
    server_tls = PrivateCertificate.loadPEM(
        leaf.private_key_and_cert_chain_pem.bytes()
    ).options()
    server = make_server(tls=server_tls)
    port = server.address[1]
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    by_path = client.Client(reactor, trust_root=str(ca_file))
    by_certificate = client.Client(
        reactor, trust_root=Certificate.loadPEM(authority.cert_pem.bytes())
    )
    untrusting = client.Client(reactor)
    try:
        # One client, two host names: TLS settings are made per host.
        for host in ("localhost", "127.0.0.1"):
            url = f"https://{host}:{port}/logs/tls/{host}.log"
            writer = await by_path.open_append(url)  # wss
            writer.write(b"over ")
            await writer.drained()
            got = _Collector()
            following = by_path.follow(url, got)  # wss
            await got.until(5)
            writer.write(b"tls")
            assert await writer.close() == 8
            assert (await following.addTimeout(10, reactor)).complete
            assert bytes(got.data) == b"over tls"
            assert await by_path.read(url) == b"over tls"  # https
            assert await by_certificate.read(url) == b"over tls"
            chunks: list[bytes] = []
            assert (await by_certificate.follow(url, chunks.append)).complete
            assert b"".join(chunks) == b"over tls"
        # Without the authority, the server's certificate is not trusted.
        with pytest.raises(ResponseNeverReceived):
            await untrusting.read(f"https://localhost:{port}/logs/tls/localhost.log")
    finally:
        for each in (by_path, by_certificate, untrusting):
            await each.close()


def test_client_takes_tls_or_trust_root_not_both():
    authority = Certificate.loadPEM(_certificate()[0])
    with pytest.raises(ValueError, match="not both"):
        client.Client(
            reactor,
            tls=optionsForClientTLS("localhost", trustRoot=authority),
            trust_root=authority,
        )


# -- truthful endings (issue 9) ---------------------------------------------------


async def _lost(server, name: str, data: bytes) -> None:
    """
    A resource whose appender wrote ``data`` and was lost, once the server
    has ended its session (no appender holds it any more).
    """
    a = await appender(server, name, ack=1)
    a.sendMessage(data)
    await a.until_ack(len(data))
    a.transport.abortConnection()
    await finished(a)
    await server.registry.when_idle()


async def test_follow_of_an_incomplete_resource_is_not_complete(server):
    await _lost(server, "c/incomplete.log", b"partial")
    chunks: list[bytes] = []
    result = await client.follow(server.url("c/incomplete.log"), chunks.append)
    assert (result.complete, result.code, result.offset) == (False, 4000, 7)
    assert "not complete" in result.reason
    assert b"".join(chunks) == b"partial"


async def test_follow_with_retry_waits_for_a_new_appender(server):
    url = server.url("c/comeback.log")
    await _lost(server, "c/comeback.log", b"first ")
    got = _Collector()
    following = client.follow(url, got, retry=True, give_up_after=30)
    await got.until(6)
    assert not following.called  # not finished yet: waiting
    b = await appender(server, "c/comeback.log", offset=6)
    b.sendMessage(b"second")
    assert await close(b) == 1000
    result = await following.addTimeout(30, reactor)
    assert (result.complete, result.offset) == (True, 12)
    assert bytes(got.data) == b"first second"


async def test_follow_with_retry_gives_up_after_its_budget_not_complete(server):
    await _lost(server, "c/never.log", b"alone")
    got = _Collector()
    started = reactor.seconds()
    result = await client.follow(
        server.url("c/never.log"), got, retry=True, give_up_after=1.5
    ).addTimeout(30, reactor)
    assert 1.5 <= reactor.seconds() - started < 10
    assert (result.complete, result.offset) == (False, 5)
    assert bytes(got.data) == b"alone"


async def test_follow_counts_a_server_without_the_header_as_complete(tmp_path):
    # A plain static file server (as an older server) sends no
    # Httpfstream-Complete: what it serves counts as complete.
    (tmp_path / "plain.log").write_bytes(b"from a plain server")
    site = Site(File(str(tmp_path)))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/plain.log"
        chunks: list[bytes] = []
        result = await client.follow(url, chunks.append)
        assert (result.complete, result.code) == (True, 1000)
        assert b"".join(chunks) == b"from a plain server"
    finally:
        await port.stopListening()


async def test_interrupt_persists_and_leaves_the_resource_incomplete(server):
    url = server.url("c/interrupted.log")
    writer = await client.open_append(url)
    writer.write(b"every byte")
    f = await ws(server.ws_url("c/interrupted.log"))
    assert await writer.interrupt() == 10
    assert await finished(f) == 4000
    assert bytes(f.received) == b"every byte"
    _, headers, body = await get(url)
    assert (headers["httpfstream-complete"], body) == ("0", b"every byte")
    with pytest.raises(RuntimeError):
        writer.write(b"more")
    assert await writer.close() == 10  # only waits


async def _closing_but_not_closed(make_server, name: str, retry: bool):
    """
    An appender through a forwarder that holds closes, whose server has
    stopped: it has the server's Close 1001 and answered it, and its
    connection has not ended.
    """
    first = make_server()
    forwarder = Forwarder(first.address[1], frames=True)
    url = forwarder.url(f"logs/{name}")
    writer = await client.open_append(url, retry=retry)
    acked = forwarder.until_ack(3)
    writer.write(b"one")
    await acked
    forwarder.hold_closes = True
    answered = forwarder.until_frame(
        lambda d, opcode, p: opcode == 8 and d == TO_SERVER
    )
    await first.stop()
    await answered
    forwarder.target = None
    return first, forwarder, writer


async def test_write_while_the_connection_ends_is_kept_with_retry(make_server):
    first, forwarder, writer = await _closing_but_not_closed(
        make_server, "kept.log", retry=True
    )
    try:
        writer.write(b"two")  # Autobahn would raise Disconnected here
        second = make_server(first.root)
        forwarder.target = second.address[1]
        forwarder.release()
        assert await writer.close() == 6
        assert first.file("kept.log").getContent() == b"onetwo"
    finally:
        await forwarder.stop()


async def test_write_while_the_connection_ends_fails_without_retry(make_server):
    _, forwarder, writer = await _closing_but_not_closed(
        make_server, "refused.log", retry=False
    )
    try:
        with pytest.raises(client.AppendFailed) as failed:
            writer.write(b"two")
        assert failed.value.code == 1001
        forwarder.release()
        with pytest.raises(client.AppendFailed):
            await writer.close()
    finally:
        await forwarder.stop()
