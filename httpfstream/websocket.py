"""
The Autobahn server protocols: one appender, any number of followers.

Both are reached through `StreamResource`, which does every check that can
refuse a handshake (so refusals are ordinary HTTP responses with the
``Httpfstream-*`` headers) and only then hands the request to Autobahn
through `Handoff`, with the stream already acquired or opened.

Appender (PROTOCOL.md section 3)::

    101 (slot held) -> OPEN: every message -> Stream.append
        queue past its high-water mark -> pause reading the socket
        batch persisted -> resume; with ack=1 send the size as text
    peer's Close -> stop reading, persist (+ sync), release the slot,
        final ack -> answer Close 1000; followers finish with 1000
    message over the limit  -> Close 1009 (Autobahn, failByDrop=False)
    resource over its limit -> Close 1009, nothing of that message appended
    write failed            -> Close 1011
    server stopping         -> persist + sync, Close 1001
    connection lost         -> persist what arrived, release; followers 4000

Follower (section 4)::

    101 -> a Cursor from the requested offset, registered as the streaming
    producer of the transport -> binary (or, with frames=text, text)
    messages while the transport takes them -> Close with the cursor's
    code: 1000 appender finished, 4000 appender lost, 1001 server stopping,
    1011 the file could not be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from .stream import (
    APPENDER_LOST,
    COMPLETE,
    GOING_AWAY,
    TOO_BIG,
    WRITE_FAILED,
    Cursor,
    IFollowerSink,
    ResourceFull,
    Stream,
    WriteFailed,
)

__all__ = ["AppenderProtocol", "AppenderRelay", "FollowerProtocol", "Handoff"]


class AppenderRelay:
    """
    The stream's `AppenderObserver` for one appender session.  The slot is
    acquired before the protocol exists (the resource checks everything
    before upgrading), so this stands in for it and forwards to it once it
    is open.  A POST append uses one with no target.
    """

    target: AppenderProtocol | None = None
    shut_down = False

    def persisted(self, size: int) -> None:
        if self.target is not None:
            self.target.persisted(size)

    def failed(self, reason: Failure) -> None:
        if self.target is not None:
            self.target.failed(reason)

    def shutdown(self) -> None:
        self.shut_down = True
        if self.target is not None:
            self.target.shutdown()


@dataclass
class _Session:
    stream: Stream
    headers: dict[str, str]
    offset: int = 0
    ack: bool = False
    text: bool = False
    relay: AppenderRelay | None = None


def _name(stream: Stream) -> str:
    return "/".join(stream.name)


class _HandoffFactory(WebSocketServerFactory):
    """A factory whose next protocol gets the session set by `Handoff`."""

    next_session: _Session | None = None
    clock: Any = None

    def buildProtocol(self, addr: Any) -> Any:
        proto: Any = super().buildProtocol(addr)
        proto.session = self.next_session
        self.next_session = None
        return proto


class Handoff:
    """
    Hands accepted WebSocket requests to the Autobahn protocols.

    :param clock: the reactor, for session timing.
    :param max_message_size: the appender's message limit (0: none).
    :param read_size: the largest message sent to a follower.
    :param ping_interval: keep-alive ping interval, whole seconds (0: off).
    :param ping_timeout: seconds to answer a ping.
    :param handshake_timeout: seconds for the opening handshake.
    """

    def __init__(
        self,
        clock: Any,
        *,
        max_message_size: int,
        read_size: int,
        ping_interval: int,
        ping_timeout: int,
        handshake_timeout: int,
    ) -> None:
        common: dict[str, Any] = {
            "autoPingInterval": ping_interval,
            "autoPingTimeout": ping_timeout,
            "openHandshakeTimeout": handshake_timeout,
            "closeHandshakeTimeout": 5,
            # Close with a code (1009, 1002...) instead of dropping TCP.
            "failByDrop": False,
            # setProtocolOptions resets this to False unless given
            # (STACK_NOTES.md 5.9).
            "allowNullOrigin": True,
        }
        self._appenders = _HandoffFactory()
        self._appenders.protocol = AppenderProtocol
        self._appenders.clock = clock
        self._appenders.setProtocolOptions(
            # The original clients send arbitrary bytes as text.
            utf8validateIncoming=False,
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            **common,
        )
        self._followers = _HandoffFactory()
        self._followers.protocol = FollowerProtocol
        self._followers.clock = clock
        # Followers have nothing to say; bound what they can make us hold.
        # Autobahn applies the same limit to what we send them.
        follower_limit = max(64 << 10, read_size)
        self._followers.setProtocolOptions(
            maxMessagePayloadSize=follower_limit,
            maxFramePayloadSize=follower_limit,
            **common,
        )
        self._appender_resource = WebSocketResource(self._appenders)
        self._follower_resource = WebSocketResource(self._followers)

    def appender(
        self,
        request: Request,
        stream: Stream,
        relay: AppenderRelay,
        headers: dict[str, str],
        ack: bool,
    ) -> None:
        """
        Upgrade ``request`` to the appender of ``stream``, whose slot
        ``relay`` holds.
        """
        self._hand(
            self._appenders,
            self._appender_resource,
            request,
            _Session(stream, headers, ack=ack, relay=relay),
        )

    def follower(
        self,
        request: Request,
        stream: Stream,
        headers: dict[str, str],
        offset: int,
        text: bool,
    ) -> None:
        """
        Upgrade ``request`` to a follower of ``stream`` from ``offset``.
        Takes over the caller's hold on ``stream``.
        """
        self._hand(
            self._followers,
            self._follower_resource,
            request,
            _Session(stream, headers, offset=offset, text=text),
        )

    @staticmethod
    def _hand(
        factory: _HandoffFactory,
        resource: WebSocketResource,
        request: Request,
        session: _Session,
    ) -> None:
        # WebSocketResource.render builds the protocol and runs
        # connectionMade and onConnect synchronously (STACK_NOTES.md 3.2).
        factory.next_session = session
        try:
            body = resource.render(request)
        finally:
            factory.next_session = None
        if isinstance(body, bytes):
            # Autobahn refused before building a protocol (no transport).
            request.write(body)
            request.finish()


class _Base(WebSocketServerProtocol):
    session: _Session | None
    _log = Logger()

    def onConnect(self, request: Any) -> tuple[None, dict[str, str]]:
        assert self.session is not None
        self._started = self.factory.clock.seconds()
        return None, self.session.headers

    @property
    def _socket(self) -> Any:
        """The TCP (or TLS) transport, as a producer and consumer."""
        return self.transport

    def _seconds(self) -> float:
        return float(self.factory.clock.seconds() - self._started)


class AppenderProtocol(_Base):
    """The one appender of a stream (see the module docstring)."""

    _ending = False
    _paused = False
    _received = 0
    #: Fires once a session we end with an error code has ended.
    _ended: Deferred[Any] | None = None

    def onOpen(self) -> None:
        session = self.session
        assert session is not None and session.relay is not None
        self._stream = session.stream
        session.relay.target = self
        if session.relay.shut_down:
            self.shutdown()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._ending:
            return
        try:
            self._stream.append(payload)
        except ResourceFull as e:
            self._end(TOO_BIG, str(e))
            return
        except WriteFailed as e:
            self._end(WRITE_FAILED, f"write failed: {e}")
            return
        self._received += len(payload)
        if self._stream.queue_full and not self._paused:
            self._paused = True
            self._socket.pauseProducing()

    # AppenderObserver, called by the stream.

    def persisted(self, size: int) -> None:
        if self._paused and not self._ending and not self._stream.queue_full:
            self._paused = False
            self._socket.resumeProducing()
        if self.session is not None and self.session.ack:
            self._send_ack(size)

    def failed(self, reason: Failure) -> None:
        self._end(WRITE_FAILED, f"write failed: {reason.getErrorMessage()}")

    def shutdown(self) -> None:
        self._end(GOING_AWAY, "server shutting down", GOING_AWAY)

    # Endings.

    def _send_ack(self, size: int) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(b"%d" % size, isBinary=False)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Any:
        if self.state != self.STATE_OPEN:
            return super().onCloseFrame(code, reasonRaw)
        if self._ended is not None:
            # We are already ending the session with an error (1009, 1011,
            # 1001): the peer's Close crossed ours.  Ours goes out once the
            # session has ended, so the peer learns why; the peer's Close
            # then answers it.
            self._ended.addCallback(self._crossed_close, code, reasonRaw)
            return None
        # The appender is done.  Every byte it sent before this Close is
        # persisted and the slot released before we answer.
        self._ending = True
        if not self._paused:
            self._paused = True
            self._socket.pauseProducing()

        def answer(size: int) -> None:
            self._log_session(size, "closed")
            if self.session is not None and self.session.ack:
                self._send_ack(size)
            WebSocketServerProtocol.onCloseFrame(self, code, reasonRaw)

        self._stream.end_session(COMPLETE).addCallback(answer)
        return None

    def _crossed_close(self, _: object, code: int, reasonRaw: bytes) -> None:
        if self.state == self.STATE_CLOSING:
            # Autobahn would abort the connection here (a server closes TCP
            # on the answer to its Close), discarding our unsent Close;
            # close gracefully so it is delivered.
            self.wasClean = True
            self.dropConnection(abort=False)
        elif self.state == self.STATE_OPEN:
            WebSocketServerProtocol.onCloseFrame(self, code, reasonRaw)

    def _end(self, code: int, reason: str, follower_code: int = APPENDER_LOST) -> None:
        """End the session from our side, then close with ``code``."""
        if self._ending:
            return
        self._ending = True

        def close(size: int) -> None:
            self._log_session(size, f"ended with {code} ({reason})")
            if self.session is not None and self.session.ack:
                self._send_ack(size)
            if self.state == self.STATE_OPEN:
                self.sendCloseFrame(
                    code=code, reasonUtf8=reason.encode()[:123], isReply=False
                )

        # Keep reading, so the peer's answering Close is seen; further
        # messages are ignored.
        if self._paused:
            self._paused = False
            self._socket.resumeProducing()
        ended: Deferred[Any] = self._stream.end_session(follower_code, reason)
        self._ended = ended.addCallback(close)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is None or not hasattr(self, "_stream"):
            # The handshake never completed: the resource gave us the slot,
            # so give it back.
            if self.session is not None:
                self.session.stream.end_session(APPENDER_LOST, "appender lost")
                self.session = None
            return
        if not self._ending:
            self._ending = True
            self._stream.end_session(APPENDER_LOST, "appender lost").addCallback(
                self._log_session, f"lost ({reason})"
            )

    def _log_session(self, size: int, how: str) -> None:
        self._log.info(
            "appender {peer} on {name} {how}: {nbytes} bytes in {duration:.3f}s,"
            " size now {size}",
            peer=self.peer,
            name=_name(self._stream),
            how=how,
            nbytes=self._received,
            duration=self._seconds(),
            size=size,
        )


@implementer(IFollowerSink)
class FollowerProtocol(_Base):
    """One follower of a stream (see the module docstring)."""

    _cursor: Cursor | None = None
    _sent = 0

    def onOpen(self) -> None:
        session = self.session
        assert session is not None
        # twisted.web's HTTPChannel is still the transport's producer after
        # the upgrade (STACK_NOTES.md 4.3).
        self._socket.unregisterProducer()
        self._offset = session.offset
        self._cursor = session.stream.follow(self, session.offset)
        self._socket.registerProducer(self._cursor, True)
        session.stream.release()
        self._cursor.wake()

    # IFollowerSink

    def send(self, data: bytes) -> None:
        if self.state == self.STATE_OPEN:
            assert self.session is not None
            self._sent += len(data)
            try:
                self.sendMessage(data, isBinary=not self.session.text)
            except Exception:
                # Never let the follower believe it has every byte.
                self._log.failure("sending to follower {peer}", peer=self.peer)
                self.dropConnection(abort=True)

    def finish(self, code: int, reason: str) -> None:
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(
                code=code, reasonUtf8=reason.encode()[:123], isReply=False
            )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Followers have nothing to say; what they send is ignored."""

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if self._cursor is None:
            # Never opened: give back the hold the resource passed us.
            session.stream.release()
            return
        self._cursor.stop()
        self._log.info(
            "follower {peer} of {name} from {offset}: {nbytes} bytes in"
            " {duration:.3f}s, closed {code}",
            peer=self.peer,
            name=_name(session.stream),
            offset=self._offset,
            nbytes=self._sent,
            duration=self._seconds(),
            code=code,
        )
