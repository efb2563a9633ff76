"""
`Client`, which holds what every call shares, and the module-level
shortcuts (`read`, `follow`, `grep`, `open_append`, `append`), each of
which makes a `Client` for one call; `send_all`, what `append` does with its appender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

import treq
from twisted.internet.defer import Deferred

from ._append import Appender, open_appender
from ._connections import Connections, response_headers
from ._errors import FollowResult, http_error
from ._follow import follow as _follow
from ._grep import Match, SearchResult
from ._grep import grep as _grep
from ._tls import TLSPolicy, TLSSettings, TrustRoot, load_trust_root
from ._urls import target

_T = TypeVar("_T")

#: How much of ``append``'s data goes in one message.
_CHUNK = 64 << 10


class Client:
    """
    A client of httpfstream servers.  Every call returns a Deferred.

    One client holds what its calls share: the reactor, the bearer token,
    the TLS settings, the timeout, and one twisted.web Agent whose pool of
    persistent HTTP connections every HTTP request reuses.  Make one and
    use it for any number of calls, to any number of servers; `close` it
    when done.

    :param reactor: the reactor to use (default: the global one).
    :param tls: TLS settings to use for every ``https://`` and ``wss://``
        connection, whatever the host (for example from
        `twisted.internet.ssl.optionsForClientTLS`).
    :param trust_root: a certificate authority to trust for whatever host a
        URL names: the path of a PEM file, or a
        `twisted.internet.ssl.Certificate`.  Without ``tls`` or
        ``trust_root``, the platform's authorities are trusted.
    :param token: a bearer token, for a server with access control.
    :param timeout: seconds allowed for connecting, for a WebSocket's
        opening handshake, and for an HTTP response.
    :raises ValueError: both ``tls`` and ``trust_root`` were given.
    :raises OSError: the ``trust_root`` file cannot be read.
    """

    def __init__(
        self,
        reactor: Any = None,
        *,
        tls: TLSSettings | None = None,
        trust_root: TrustRoot | None = None,
        token: str | None = None,
        timeout: float = 10,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        authority = load_trust_root(trust_root) if trust_root is not None else None
        self._connections = Connections(
            reactor, TLSPolicy(tls, authority), token, timeout
        )

    def read(self, url: str) -> Deferred[bytes]:
        """
        The resource's persisted bytes now (a snapshot, even while an
        appender is active).

        :param url: the resource's ``http://`` or ``https://`` URL.
        :raises NotFound: the resource was never written.
        """

        async def get() -> bytes:
            response = await self._connections.get(target(url))
            body: bytes = await treq.content(response)
            if response.code != 200:
                raise http_error(
                    response.code,
                    response.phrase.decode(),
                    response_headers(response),
                    body,
                )
            return body

        return Deferred.fromCoroutine(get())

    def follow(
        self,
        url: str,
        on_data: Callable[[bytes], object],
        offset: int = 0,
        *,
        retry: bool = False,
        give_up_after: float = 300,
        wait: bool = False,
        text_frames: bool = False,
        lines: int | None = None,
        timestamps: bool = False,
    ) -> Deferred[FollowResult]:
        """
        Follow a resource: call ``on_data(bytes)`` with its bytes from
        ``offset`` (or ``lines``) as they are persisted.

        Fires with a `FollowResult` when the appender finishes
        (``complete``) or is lost or interrupted (``complete`` false), or
        after the whole content of a resource with no appender: complete
        if ``Httpfstream-Complete`` says its last session ended well (or
        the server does not say), else not complete.

        :param url: the resource's ``http://`` or ``https://`` URL (the
            WebSocket goes to its ``ws://`` or ``wss://`` twin).
        :param on_data: called with each piece of the resource, in order.
        :param offset: where to start; negative: the last ``-offset`` bytes.
        :param lines: start at a line instead (as ``tail -n``): ``-N``, the
            first byte of the N-th last line (``0``: none of them, the
            end); ``N``, line N (lines are numbered from 1).  Only the
            first connection asks for it: resuming starts from the byte
            reached.
        :param timestamps: every line comes prefixed with the time its
            first byte was persisted and a space
            (``2026-12-07T10:15:02.125Z make: ...``); the data is then no
            longer the resource's bytes (`FollowResult.offset` still counts
            the resource's), and resuming starts at the line reached,
            passing over its stamp and the part of it already handed on.
        :param retry: see the whole resource.  After a dropped connection
            (1006), a server restart (1001) or a refused connection,
            reconnect from the bytes already received, with backoff, so
            ``on_data`` sees every byte exactly once.  And a resource that
            is not finished yet (its appender was lost or interrupted:
            4000, or ``Httpfstream-Complete: 0``) is waited for: the follow
            keeps what it has, polls with backoff from its offset, follows
            a new appender once one comes, and fires not complete only if
            none finished it within ``give_up_after``.
        :param give_up_after: seconds of failed reconnecting, or of waiting
            for a new appender, before giving up (the last error is raised;
            a wait for an appender ends not complete).  Time spent
            following an appender does not count.
        :param wait: if the resource was never written, wait (retrying with
            backoff, up to ``give_up_after``) for it to be.
        :param text_frames: ask for text frames instead of binary ones.
        :raises ValueError: (at once) ``offset`` with ``lines`` or
            ``timestamps``.
        :raises NotFound: the resource was never written (and ``wait`` is
            false, or it still was not after ``give_up_after``).
        :raises ConnectionLost: the connection ended otherwise (without
            ``retry``, or after ``give_up_after``).
        """
        if offset and lines is not None:
            raise ValueError("offset and lines do not combine: give one")
        if offset and timestamps:
            raise ValueError(
                "offset and timestamps do not combine: stamped lines are not"
                " the resource's bytes (start at a line with lines=)"
            )
        return Deferred.fromCoroutine(
            _follow(
                self._connections,
                url,
                on_data,
                offset,
                retry,
                give_up_after,
                wait,
                text_frames,
                lines,
                timestamps,
            )
        )

    def grep(
        self,
        url: str,
        text: str,
        on_match: Callable[[Match], object],
        *,
        regex: bool = False,
        case: bool = False,
        lines: int | None = None,
        max_matches: int | None = None,
        follow: bool = True,
        retry: bool = False,
        give_up_after: float = 300,
        wait: bool = False,
    ) -> Deferred[SearchResult]:
        """
        Search a resource's lines: call ``on_match(Match)`` for each line
        whose text holds ``text``, in order, as the server finds them
        (PROTOCOL.md section 14).

        Fires with a `SearchResult` once every line was searched: with
        ``follow``, when the appender finishes (or is lost: not complete),
        or at once for a resource with no appender.

        :param url: the resource's ``http://`` or ``https://`` URL.
        :param text: what a line must hold, a substring in any case unless
            ``case`` (not empty).
        :param on_match: called with each matching line, in order.
        :param regex: ``text`` is a regular expression (RE2 syntax).
        :param case: match case-sensitively.
        :param lines: search from a line on, as `follow` starts: ``-N``
            the last N lines (``0``: only lines appended later), ``N``
            from line N.
        :param max_matches: stop after this many matches (default: every
            one; the server's pages of at most 100,000 are asked for one
            after another).
        :param follow: go on over lines appended later, until the appender
            ends (``follow=1``); else search the lines there are now.
        :param retry: after a dropped connection, a server restart or a
            refused connection, search on after the last match handed on,
            with backoff, so no match is handed on twice; and, with
            ``follow``, wait (as `follow` does) for a new appender to
            finish a resource that is not complete, searching on from where
            the search was.
        :param give_up_after: as for `follow`.
        :param wait: if the resource was never written, wait for it (up to
            ``give_up_after``).
        :raises HTTPError: a refusal; ``400`` (with the server's reason)
            for an invalid regular expression.
        :raises SearchUnsupported: the server does not search.
        :raises ValueError: (at once) an empty ``text``, or a
            ``max_matches`` below 1.
        """
        if not text:
            raise ValueError("an empty search matches every line: give a text")
        if max_matches is not None and max_matches < 1:
            raise ValueError("max_matches must be at least 1")
        return Deferred.fromCoroutine(
            _grep(
                self._connections,
                url,
                text,
                on_match,
                regex,
                case,
                lines,
                max_matches,
                follow,
                retry,
                give_up_after,
                wait,
            )
        )

    def open_append(
        self,
        url: str,
        offset: int | None = None,
        *,
        retry: bool = False,
        give_up_after: float = 300,
        buffer_limit: int = 8 << 20,
    ) -> Deferred[Appender]:
        """
        Become the appender of a resource.

        :param url: the resource's ``http://`` or ``https://`` URL.
        :param offset: expect the resource to hold exactly this many bytes
            (`OffsetMismatch` otherwise); ``0`` requires a new resource,
            empty or absent (``httpfstream-append --new``).
        :param retry: if the server cannot be reached yet (refused, 502-504,
            dropped), keep trying with backoff, up to ``give_up_after``;
            after a dropped connection (1006) or a server restart
            (1001), reconnect with ``offset=`` the acknowledged size and
            send the unacknowledged bytes again, with backoff.  If the
            server then holds more than was acknowledged (bytes persisted
            whose acknowledgement never came), those bytes are read back
            and, if they are the ones sent, resuming goes on after them;
            otherwise the appender fails with `OffsetMismatch`.
        :param give_up_after: seconds of failed reconnecting before the
            appender fails with the last error.
        :param buffer_limit: with ``retry``, how many unacknowledged bytes
            to keep in memory before the appender is `Appender.full`.
        :raises AppenderConflict: another appender holds the resource.
        """
        return Deferred.fromCoroutine(
            open_appender(
                self._connections, url, offset, retry, give_up_after, buffer_limit
            )
        )

    def append(
        self,
        url: str,
        data: bytes | IO[bytes] | Iterable[bytes],
        offset: int | None = None,
        *,
        retry: bool = False,
        give_up_after: float = 300,
        buffer_limit: int = 8 << 20,
    ) -> Deferred[int]:
        """
        Append ``data`` over a WebSocket and fire with the final persisted
        size.  Takes the keyword arguments of `open_append`.

        :param url: the resource's ``http://`` or ``https://`` URL.
        :param data: bytes, a binary file object, or an iterable of bytes.
        :param offset: as for `open_append`.
        """

        async def run() -> int:
            appender = await self.open_append(
                url,
                offset,
                retry=retry,
                give_up_after=give_up_after,
                buffer_limit=buffer_limit,
            )
            return await send_all(appender, data)

        return Deferred.fromCoroutine(run())

    def close(self) -> Deferred[None]:
        """
        Close the idle connections kept for reuse; fires once they are.
        Followers and appenders still open carry on.
        """
        return self._connections.close()


# -- shortcuts: one Client per call ---------------------------------------------


async def _closing(client: Client, call: Deferred[_T]) -> _T:
    """``call``'s result, once ``client`` is closed."""
    try:
        return await call
    finally:
        await client.close()


def read(
    url: str,
    *,
    reactor: Any = None,
    tls: TLSSettings | None = None,
    token: str | None = None,
    timeout: float = 30,
) -> Deferred[bytes]:
    """
    `Client.read` with a client made for this call.

    :param reactor: as for `Client`.
    :param tls: as for `Client`.
    :param token: as for `Client`.
    :param timeout: as for `Client`.
    """
    client = Client(reactor, tls=tls, token=token, timeout=timeout)
    return Deferred.fromCoroutine(_closing(client, client.read(url)))


def follow(
    url: str,
    on_data: Callable[[bytes], object],
    offset: int = 0,
    *,
    retry: bool = False,
    give_up_after: float = 300,
    wait: bool = False,
    text_frames: bool = False,
    lines: int | None = None,
    timestamps: bool = False,
    reactor: Any = None,
    tls: TLSSettings | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> Deferred[FollowResult]:
    """
    `Client.follow` with a client made for this call; ``reactor``, ``tls``,
    ``token`` and ``timeout`` are as for `Client`.
    """
    client = Client(reactor, tls=tls, token=token, timeout=timeout)
    call = client.follow(
        url,
        on_data,
        offset,
        retry=retry,
        give_up_after=give_up_after,
        wait=wait,
        text_frames=text_frames,
        lines=lines,
        timestamps=timestamps,
    )
    return Deferred.fromCoroutine(_closing(client, call))


def grep(
    url: str,
    text: str,
    on_match: Callable[[Match], object],
    *,
    reactor: Any = None,
    tls: TLSSettings | None = None,
    token: str | None = None,
    timeout: float = 10,
    **kwargs: Any,
) -> Deferred[SearchResult]:
    """
    `Client.grep` with a client made for this call; ``reactor``, ``tls``,
    ``token`` and ``timeout`` are as for `Client`, the other keyword
    arguments as for `Client.grep`.
    """
    client = Client(reactor, tls=tls, token=token, timeout=timeout)
    call = client.grep(url, text, on_match, **kwargs)
    return Deferred.fromCoroutine(_closing(client, call))


def open_append(
    url: str,
    offset: int | None = None,
    *,
    retry: bool = False,
    give_up_after: float = 300,
    buffer_limit: int = 8 << 20,
    reactor: Any = None,
    tls: TLSSettings | None = None,
    token: str | None = None,
    timeout: float = 10,
) -> Deferred[Appender]:
    """
    `Client.open_append` with a client made for this session; ``reactor``,
    ``tls``, ``token`` and ``timeout`` are as for `Client`.
    """
    client = Client(reactor, tls=tls, token=token, timeout=timeout)

    async def run() -> Appender:
        try:
            appender = await client.open_append(
                url,
                offset,
                retry=retry,
                give_up_after=give_up_after,
                buffer_limit=buffer_limit,
            )
        except BaseException:
            await client.close()
            raise
        # The client lives as long as the session.
        appender.wait().addBoth(lambda _: client.close())
        return appender

    return Deferred.fromCoroutine(run())


def append(
    url: str,
    data: bytes | IO[bytes] | Iterable[bytes],
    offset: int | None = None,
    **kwargs: Any,
) -> Deferred[int]:
    """
    Append ``data`` (bytes, a binary file object, or an iterable of bytes)
    over a WebSocket and fire with the final persisted size.  Takes the
    keyword arguments of `open_append`.
    """

    async def run() -> int:
        return await send_all(await open_append(url, offset, **kwargs), data)

    return Deferred.fromCoroutine(run())


async def send_all(
    appender: Appender, data: bytes | IO[bytes] | Iterable[bytes]
) -> int:
    """
    Write ``data`` (bytes, a binary file object, or an iterable of bytes)
    to ``appender``, waiting for it to drain, then close it.

    :return: the final persisted size.
    """
    chunks: Iterable[bytes]
    if isinstance(data, bytes | bytearray | memoryview):
        chunks = [bytes(data[i : i + _CHUNK]) for i in range(0, len(data), _CHUNK)]
    elif hasattr(data, "read"):
        chunks = iter(lambda: data.read(_CHUNK), b"")
    else:
        chunks = data
    for chunk in chunks:
        await appender.drained()
        appender.write(chunk)
    return await appender.close()
