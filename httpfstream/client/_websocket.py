"""
The WebSocket side of the client: an Autobahn client protocol that turns
Autobahn's callbacks into Deferreds, and `connect`, which opens one.

Two Autobahn traps shape this: a refused
handshake (any status but 101) never reaches ``onConnect`` and fires no
agent Deferred, so the status is read from ``http_status_line`` in
``onClose``; and Autobahn's timers are whole seconds, so the handshake also
gets a reactor timeout of our own.

Autobahn drops a refused handshake's connection as soon as the response's
head has arrived, keeping what it read (``data``): `ClientProtocol` waits
for a short refusal's whole body first (by its ``Content-Length``, at most
`REASON_LIMIT` bytes), so that `HTTPError.reason` has the server's words;
no second request is made for them.

Mistakes of scheme or trust are told apart from a lost connection
(`WrongTransport`): an ``https://`` URL whose TLS handshake has not
finished after `_PROBE_AFTER` seconds gets a second, plain connection that
sends ``HEAD /``: an HTTP answer there means the port is plain HTTP
(`NotTLS`); an ``http://`` connection the server closes without a byte gets
a TLS handshake on a second connection: if it completes, the port is TLS
(`TLSExpected`); and a certificate OpenSSL could not verify is
`UntrustedCertificate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._borrowed import handshake_buffer, parse_http_head, remote_close
from ._errors import (
    DROPPED,
    REASON_LIMIT,
    ConnectionLost,
    NotTLS,
    TLSExpected,
    UntrustedCertificate,
    http_error,
)
from ._tls import TLSSettings
from ._urls import Target

_log = Logger()

#: Seconds the server may take to answer our Close: it does so only once
#: every byte is persisted (and synced), so Autobahn's 1 s is too short.
_CLOSE_HANDSHAKE_TIMEOUT = 5
#: Seconds a TLS handshake may take before a plain connection checks
#: whether the port speaks plain HTTP.
_PROBE_AFTER = 1.0
#: Seconds a probe connection may take.
_PROBE_TIMEOUT = 3.0


@implementer(IHandshakeListener)
class ClientProtocol(WebSocketClientProtocol):
    """
    Turns Autobahn's callbacks into two Deferreds and a message hook.

    :ivar opened: fires with the protocol once the handshake succeeds; fails
        with an `HTTPError` for a refusal, or `ConnectionLost`.
    :ivar closed: fires with ``(code, reason)`` once an open connection
        ends: the server's Close code and reason if one came, else what
        Autobahn reports (1006 for a connection dropped without one).
    :ivar on_message: called with ``(payload, is_binary)`` for each message.
    :ivar response_headers: the 101 response's headers, lowercase names.
    :ivar received: bytes received before the handshake succeeded.
    :ivar tls_done: whether a TLS handshake has completed.
    :ivar mistake: set (before dropping the connection) when the
        connection failed for a reason found out otherwise (a probe).
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[ClientProtocol] = Deferred()
        self.closed: Deferred[tuple[int | None, str]] = Deferred()
        self.on_message: Callable[[bytes, bool], None] = lambda p, b: None
        self.response_headers: dict[str, str] = {}
        self.received = 0
        self.tls_done = False
        self.mistake: Exception | None = None
        self._lost: Failure | None = None

    def handshakeCompleted(self) -> None:
        """`IHandshakeListener`: the TLS handshake is done."""
        self.tls_done = True

    def dataReceived(self, data: bytes) -> None:
        if not self.opened.called:
            self.received += len(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = reason
        super().connectionLost(reason)

    def processHandshake(self) -> None:
        # A refusal with a short body: wait for it (Autobahn drops the
        # connection as soon as the head is in).
        end = handshake_buffer(self).find(b"\r\n\r\n")
        if end >= 0 and not self._body_complete(end + 4):
            return
        super().processHandshake()

    def _body_complete(self, start: int) -> bool:
        """Whether the response in ``data`` (body from ``start``) is whole enough."""
        data = handshake_buffer(self)
        head = data[:start].decode("latin-1")
        status = head.split("\r\n", 1)[0].split(" ")
        if len(status) < 2 or not status[1].isdigit() or int(status[1]) < 300:
            return True  # 101, or a 200 whose body is the whole content
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                wanted = min(int(value.strip()), REASON_LIMIT)
                return len(data) - start >= wanted
        return True

    def onConnect(self, response: Any) -> None:
        self.response_headers = dict(response.headers)

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            self.on_message(payload, isBinary)
        except Exception:
            _log.failure("handling a message")
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(self._refusal(reason))
            return
        remote, remote_reason = remote_close(self)
        if remote is not None:
            # The server's Close says how the session ended, even if its
            # TCP connection then failed to end in time (Autobahn reports
            # that as 1006): its bytes and acknowledgements came before.
            code, reason = remote, remote_reason or reason
        self.closed.callback((code, reason or ""))

    def _refusal(self, reason: str | None) -> Exception:
        if self.mistake is not None:
            return self.mistake
        # The head Autobahn read (it keeps what came: ``data``), even if
        # the connection ended while we waited for the body.
        data = handshake_buffer(self)
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            status_line, headers = parse_http_head(data[: end + 4])
            parts = status_line.split(" ", 2)
            if len(parts) >= 2 and parts[1].isdigit():
                message = parts[2] if len(parts) > 2 else ""
                body = bytes(data[end + 4 :])
                return http_error(int(parts[1]), message, dict(headers), body)
        lost = self._lost.value if self._lost is not None else None
        if isinstance(lost, SSL.Error):
            why = _tls_reason(lost)
            if "certificate verify failed" in why:
                return UntrustedCertificate(
                    f"the server's certificate is not trusted: {why}"
                )
        if isinstance(lost, VerificationError):
            return UntrustedCertificate(
                f"the server's certificate is not for {self.factory.host}",
                wrong_host=True,
            )
        return ConnectionLost(DROPPED, reason)


def _tls_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons, as words: ``certificate verify failed``."""
    try:
        reasons = [str(entry[-1]) for entry in error.args[0] if entry[-1]]
    except (IndexError, TypeError):
        reasons = []
    return "; ".join(reasons) or str(error)


async def connect(
    reactor: Any,
    target: Target,
    headers: Mapping[str, str],
    timeout: float,
    tls: TLSSettings | None,
) -> ClientProtocol:
    """
    Open a WebSocket to ``target.ws_url``.

    :param reactor: the reactor to connect with.
    :param target: where to connect.
    :param headers: request headers (the verb, the token).
    :param timeout: seconds for connecting and for the opening handshake.
    :param tls: the TLS settings, used when ``target.secure``.
    :raises HTTPError: the server answered with a status other than 101.
    :raises ConnectionLost: the handshake failed or timed out.
    """
    factory = WebSocketClientFactory(target.ws_url, headers=dict(headers))
    factory.protocol = ClientProtocol
    factory.noisy = False  # no "Starting factory" log line for each connection
    factory.setProtocolOptions(
        openHandshakeTimeout=max(2, int(timeout)),
        closeHandshakeTimeout=_CLOSE_HANDSHAKE_TIMEOUT,
        # Appenders' and followers' payloads are bytes, whatever the frame.
        utf8validateIncoming=False,
    )
    endpoint: Any = HostnameEndpoint(reactor, target.host, target.port, timeout=timeout)
    if target.secure:
        assert tls is not None, "a wss:// target needs TLS settings"
        endpoint = wrapClientTLS(tls, endpoint)
    proto: ClientProtocol = await endpoint.connect(factory)
    opened = proto.opened
    if target.secure:
        probe = reactor.callLater(_PROBE_AFTER, _check_plain, reactor, target, proto)
        opened.addBoth(_cancelling, probe)
    # Autobahn's own timer rounds to whole seconds;
    # this one makes sure the handshake can never hang.  (It fails with
    # TimeoutError, and may fire first: both are set for 2 s when timeout
    # is 1.)
    opened.addTimeout(timeout + 1, reactor)
    try:
        return await opened
    except (CancelledError, TimeoutError):
        proto.dropConnection(abort=True)
        raise ConnectionLost(DROPPED, "opening handshake timed out") from None
    except ConnectionLost as e:
        # Closed without a byte of answer: a TLS port, perhaps.
        silent = type(e) is ConnectionLost and proto.received == 0
        if silent and not target.secure and await _speaks_tls(reactor, target):
            raise TLSExpected(
                f"{target.host}:{target.port} speaks TLS, not plain HTTP"
            ) from None
        raise


def _cancelling(result: object, call: Any) -> object:
    if call.active():
        call.cancel()
    return result


def _check_plain(reactor: Any, target: Target, proto: ClientProtocol) -> None:
    """
    The TLS handshake of ``proto`` is slow: if the port answers plain HTTP,
    drop ``proto`` with `NotTLS`.
    """

    def answered(plain: bool) -> None:
        if plain and not proto.tls_done and not proto.opened.called:
            proto.mistake = NotTLS(
                f"{target.host}:{target.port} answers plain HTTP, not TLS"
            )
            proto.dropConnection(abort=True)

    Deferred.fromCoroutine(_answers_plain_http(reactor, target)).addCallback(answered)


class _Probe(Protocol):
    """A probe connection: ``done`` fires with whether it saw what it wanted."""

    def __init__(self, send: bytes = b"") -> None:
        self.done: Deferred[bool] = Deferred()
        self._send = send
        self._data = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._send:
            self.transport.write(self._send)

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        if len(self._data) >= 5:
            self._finish(self._data.startswith(b"HTTP/"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._finish(False)

    def _finish(self, seen: bool) -> None:
        if not self.done.called:
            self.done.callback(seen)
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]


@implementer(IHandshakeListener)
class _TLSProbe(_Probe):
    def handshakeCompleted(self) -> None:
        self._finish(True)


async def _probe(reactor: Any, endpoint: Any, probe: _Probe) -> bool:
    """Whether ``probe``, connected to ``endpoint``, sees what it looks for."""
    try:
        await endpoint.connect(Factory.forProtocol(lambda: probe))
    except Exception:
        return False

    def timed_out(result: object, timeout: float) -> bool:
        if probe.transport is not None:
            probe.transport.abortConnection()  # type: ignore[attr-defined]
        return False

    probe.done.addTimeout(_PROBE_TIMEOUT, reactor, timed_out)
    return await probe.done


async def _answers_plain_http(reactor: Any, target: Target) -> bool:
    """Whether ``target``'s port answers ``HEAD /`` in plain HTTP."""
    endpoint = HostnameEndpoint(reactor, target.host, target.port, _PROBE_TIMEOUT)
    request = f"HEAD / HTTP/1.0\r\nHost: {target.host}\r\n\r\n".encode()
    return await _probe(reactor, endpoint, _Probe(request))


async def _speaks_tls(reactor: Any, target: Target) -> bool:
    """Whether a TLS handshake with ``target``'s port completes (unverified)."""
    endpoint = HostnameEndpoint(reactor, target.host, target.port, _PROBE_TIMEOUT)
    # Only whether it speaks TLS: no certificate is checked, nothing sent.
    tls = wrapClientTLS(CertificateOptions(), endpoint)
    return await _probe(reactor, tls, _TLSProbe())
