"""
Baselines for the benchmarks, as servers on 127.0.0.1:

    python bench/relay.py relay   a pass-through relay: a minimal Autobahn
                                  server forwarding each appender message to
                                  every follower (no disk, no cursors)
    python bench/relay.py sink    a TCP sink that reads and discards

Each prints ``PORT <n>`` once listening, then serves until killed.
"""

from __future__ import annotations

import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol


class RelayProtocol(WebSocketServerProtocol):
    role = "follower"

    def onConnect(self, request: Any) -> None:
        if request.headers.get("x-verb", "").upper() == "APPEND":
            self.role = "appender"

    def onOpen(self) -> None:
        if self.role == "follower":
            self.factory.followers.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.role == "appender":
            for follower in self.factory.followers:
                follower.sendMessage(payload, isBinary=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.role == "appender":
            for follower in list(self.factory.followers):
                follower.sendClose(1000)
        else:
            self.factory.followers.discard(self)


class Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


def main() -> None:
    if sys.argv[1] == "relay":
        factory = WebSocketServerFactory()
        factory.protocol = RelayProtocol
        factory.followers = set()
        factory.setProtocolOptions(utf8validateIncoming=False, closeHandshakeTimeout=30)
    else:
        factory = Factory.forProtocol(Discard)
    # As big a listen queue as the httpfstream rows get (run.py).
    port = reactor.listenTCP(0, factory, backlog=4096, interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
