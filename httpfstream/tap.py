"""
``twistd httpfstream``: command-line options and the service they build.

`makeService` builds exactly what an embedder would: a `StreamRegistry`,
a `StreamResource` as the root of `site.make_site`, and a listening
port for each ``--port`` endpoint.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from typing import Any, ClassVar

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from ._borrowed import fast_send_report
from .core.registry import StreamRegistry
from .core.stream import FsyncPolicy
from .shared.modes import ModeError, storage
from .web.admin import make_admin_site
from .web.auth import TokenError, Tokens
from .web.handoff import WebSocketOptions
from .web.resource import StreamResource
from .web.site import make_site

__all__ = ["Options", "makeService"]

_log = Logger()

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: The suffixes `parse_size` takes (`_UNITS`), as ``--help`` and its error say them.
_SIZE_SUFFIXES = "K, M, G or T"


class _StartupError(SystemExit):
    """
    Stops twistd at start-up with one line on standard error, status 1.

    Raised from `Options.postOptions` too, for an option's value: twistd
    answers a `usage.UsageError` with its whole usage (some 70 lines) before
    the error, and lets a `SystemExit` through as it is.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"httpfstream: {message}")


def parse_size(text: str) -> int:
    """
    ``"16M"`` → 16777216.  A whole number of bytes, optionally with a
    binary suffix K, M, G or T (KiB, MiB...); 0 means no limit.
    """
    match = re.fullmatch(r"\s*([0-9]+)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise usage.UsageError(
            f"{text!r} is not a size: give a whole number of bytes, optionally"
            f" with {_SIZE_SUFFIXES} (e.g. 16M); 0 means no limit"
        )
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


_DURATIONS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """
    ``"30d"`` → 2592000 seconds.  A whole number, optionally with a unit s,
    m, h, d or w; 0 means never.
    """
    match = re.fullmatch(r"\s*([0-9]+)\s*([smhdw]?)\s*", text, re.IGNORECASE)
    if match is None:
        raise usage.UsageError(
            f"{text!r} is not a duration: give a whole number, optionally with"
            " s, m, h, d or w (e.g. 30d); 0 means never"
        )
    return int(match.group(1)) * _DURATIONS[match.group(2).lower()]


def _seconds(text: str) -> int:
    if not text.isdigit():
        raise usage.UsageError(f"{text!r} is not a whole number of seconds")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise usage.UsageError(f"{text!r} is not a whole number")
    return int(text)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve resources under --root: one appender per resource writes over"
        " a WebSocket (or POST), any number of followers read live over a"
        " WebSocket or HTTP."
    )

    optFlags: ClassVar[list[list[Any]]] = [
        [
            "fin-ends-appender",
            None,
            "Take an appender's orderly TCP close (FIN after its last message,"
            " no Close frame) as a clean end, as the original Go appender ends."
            " A crashed appender's FIN then looks the same.",
        ],
        [
            "text-frames",
            None,
            "Send followers that give no frames= text messages instead of binary"
            " (the original Go follower accepts only text).",
        ],
    ]

    optParameters: ClassVar[list[list[Any]]] = [
        [
            "root",
            "r",
            "httpfstream-data",
            "Storage root directory (created if missing).",
        ],
        [
            "max-message-size",
            None,
            "16M",
            "Largest WebSocket message (or POST body) an appender may send;"
            " larger closes it with 1009 (POST: 413). Suffixes"
            f" {_SIZE_SUFFIXES}; 0: no limit.",
        ],
        [
            "max-resource-size",
            None,
            "64G",
            "Most bytes one resource may hold; an append that would pass it closes"
            " the appender with 1009 (POST: 413). Suffixes"
            f" {_SIZE_SUFFIXES}; 0: no limit.",
        ],
        [
            "text-frame-size",
            None,
            "10236",
            "Most bytes in one text message to a follower (--text-frames or"
            " frames=text): the original Go follower keeps only what its first"
            " read of a message returns (at most 32K) and drops the rest; 10236"
            " makes each frame fill its 10K read buffer exactly. Binary messages"
            " are not cut. Suffixes"
            f" {_SIZE_SUFFIXES}; 0: as large as binary ones (256K).",
        ],
        [
            "fsync",
            None,
            "close",
            "When appended bytes are synced to disk: never, close (when the"
            " appender ends) or always (before each write counts as persisted).",
        ],
        [
            "ping-interval",
            None,
            "30",
            "Seconds between keep-alive pings on WebSocket connections (0: off).",
        ],
        [
            "ping-timeout",
            None,
            "30",
            "Seconds a peer has to answer a ping before it is dropped.",
        ],
        [
            "handshake-timeout",
            None,
            "10",
            "Seconds a WebSocket opening handshake may take.",
        ],
        [
            "idle-timeout",
            None,
            "60",
            "Seconds an idle plain-HTTP connection is kept open.",
        ],
        [
            "header-timeout",
            None,
            "30",
            "Seconds a client may take to send a request's head (its request line"
            " and headers), however slowly it trickles in; 0: no limit.",
        ],
        [
            "max-followers",
            None,
            "20000",
            "Most readers at once over all resources; more get 503 (0: no limit).",
        ],
        [
            "max-followers-per-resource",
            None,
            "5000",
            "Most readers of one resource at once; more get 503 (0: no limit).",
        ],
        [
            "admin",
            None,
            None,
            "Endpoint of the admin site (/metrics for Prometheus, /healthz, /readyz),"
            " e.g. tcp:9100:interface=127.0.0.1; a bare number means TCP. Off"
            " unless given.",
        ],
        [
            "max-age",
            None,
            "0",
            "Remove resources with no appender whose bytes have not changed for"
            " this long (e.g. 30d, 12h; units s, m, h, d, w), in a sweep every"
            " hour (or every tenth of it, if shorter). 0: keep everything.",
        ],
        [
            "redis",
            None,
            None,
            "Shared mode: several servers on one --root agree through this Redis"
            " (redis://[:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS); see"
            " docs/SCALING.md. Without it, one process, files only.",
        ],
        [
            "redis-password-file",
            None,
            None,
            "A file holding the Redis password (instead of one in the URL).",
        ],
        [
            "redis-lease",
            None,
            "10",
            "Shared mode: seconds an appender's lease lives unrenewed: the"
            " longest a dead server's resource stays taken and its followers"
            " elsewhere wait.",
        ],
        [
            "archive",
            None,
            None,
            "Keep finished resources in an S3 bucket (s3://BUCKET/PREFIX), one"
            " object each, the root then a cache of them; S3 is configured the"
            " standard way (the AWS credential chain, AWS_ENDPOINT_URL_S3,"
            " AWS_DEFAULT_REGION). See docs/SCALING.md.",
        ],
        [
            "cache-size",
            None,
            "10G",
            "With --archive: the most bytes of resources kept on local disk"
            " once archived; the least recently used go first (never one in"
            f" use or not yet archived). Suffixes {_SIZE_SUFFIXES}; 0: no limit.",
        ],
        [
            "archive-idle",
            None,
            "60",
            "With --archive: how long a resource whose session did not end well"
            " waits for its appender to resume before it is archived"
            " (incomplete); units s, m, h, d, w.",
        ],
        [
            "live-chunk",
            None,
            "8MiB",
            "With --redis and --archive: the bytes a live resource's chunks in"
            " Redis hold; each full one moves to the bucket as the session runs.",
        ],
        [
            "live-max",
            None,
            "64MiB",
            "With --redis and --archive: the most bytes of one live resource"
            " Redis holds while the bucket does not take its chunks; appends"
            " past it wait for it (30 s at most).",
        ],
        [
            "auth",
            None,
            None,
            "Token file: every request then needs a token that grants its verb"
            " (lines of TOKEN append|follow|append,follow [PATH-PREFIX]; see the"
            " README). Without it, every request is allowed.",
        ],
    ]

    _conversions: ClassVar[dict[str, Callable[[str], int]]] = {
        "max-message-size": parse_size,
        "max-resource-size": parse_size,
        "text-frame-size": parse_size,
        "ping-interval": _seconds,
        "ping-timeout": _seconds,
        "handshake-timeout": _seconds,
        "idle-timeout": _seconds,
        "header-timeout": _seconds,
        "max-followers": _count,
        "max-followers-per-resource": _count,
        "max-age": parse_duration,
        "redis-lease": _seconds,
        "cache-size": parse_size,
        "archive-idle": parse_duration,
        "live-chunk": parse_size,
        "live-max": parse_size,
    }

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []
        # usage.Options shows an opt_ method's docstring with its indentation.
        self.docs["port"] = (
            "Endpoint to listen on; give it once per endpoint, each serving the"
            " same resources: a Twisted server endpoint string such as tcp:8080,"
            " tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey="
            "cert.pem, unix:/run/httpfstream.sock or systemd:domain=INET:name=http;"
            " a bare number means TCP. [default: tcp:8080]"
        )

    def opt_port(self, endpoint: str) -> None:
        """Add an endpoint to listen on (see ``docs`` above)."""
        self["port"].append(f"tcp:{endpoint}" if endpoint.isdigit() else endpoint)

    opt_p = opt_port

    def postOptions(self) -> None:
        # Every value is converted here rather than by a coerce function in
        # optParameters (which usage.Options does not apply to defaults), so
        # a bad one is refused naming its option, in one line
        # (`_StartupError`: twistd would print its whole usage before a
        # usage.UsageError).
        for key, convert in self._conversions.items():
            if isinstance(self[key], str):
                try:
                    self[key] = convert(self[key])
                except usage.UsageError as e:
                    raise _StartupError(f"--{key}: {e}") from None
        if not self["port"]:
            self["port"] = ["tcp:8080"]
        if self["admin"] and self["admin"].isdigit():
            self["admin"] = f"tcp:{self['admin']}"
        try:
            self["fsync"] = FsyncPolicy(self["fsync"].lower())
        except ValueError:
            raise _StartupError(
                f"--fsync: {self['fsync']!r} is not a policy: give never, close"
                " or always"
            ) from None
        for key in ("ping-timeout", "handshake-timeout", "redis-lease"):
            if self[key] == 0:
                raise _StartupError(f"--{key}: 0 is too short: give at least 1 second")
        if self["redis-password-file"] and not self["redis"]:
            raise _StartupError("--redis-password-file needs --redis")
        chunk, most = self["live-chunk"], self["live-max"]
        if not 64 << 10 <= chunk <= 16 << 20:
            raise _StartupError("--live-chunk: give 64KiB to 16MiB")
        if most < 2 * chunk + self["max-message-size"]:
            raise _StartupError(
                "--live-max: give at least twice --live-chunk and one message more"
            )


def _check_root(path: str) -> None:
    """
    The storage root exists (or can be created), is a folder and can be
    written; otherwise stop with one line saying which.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise _StartupError(f"--root {path} is not a folder") from None
    except OSError as e:
        raise _StartupError(f"--root {path} cannot be created: {e.strerror}") from None
    if not os.path.isdir(path):
        raise _StartupError(f"--root {path} is not a folder")
    try:
        probe, probe_path = tempfile.mkstemp(prefix=".httpfstream-probe-", dir=path)
    except OSError as e:
        raise _StartupError(f"--root {path} is not writable: {e.strerror}") from None
    os.close(probe)
    os.unlink(probe_path)


_ENDPOINT_EXAMPLES = (
    "tcp:8080, tcp:8080:interface=127.0.0.1 or"
    " ssl:8443:privateKey=key.pem:certKey=cert.pem"
)


def _endpoint(option: str, description: str, reactor: Any) -> Any:
    """
    The server endpoint ``description`` names; one that Twisted cannot
    make (an unknown type, a port that is not a number, an ``ssl:`` key or
    certificate it cannot read) stops twistd with one line saying which
    option, what was wrong and what it takes.
    """
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        if isinstance(e, OSError) and e.strerror:
            reason = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        else:
            reason = str(e) or type(e).__name__
        number = re.fullmatch(r"invalid literal for int\(\) with base 10: (.*)", reason)
        if number:
            reason = f"{number.group(1)} is not a number"
        ssl = description.lower().startswith("ssl:")
        if ssl and not isinstance(e, OSError | ValueError):
            reason = f"its key or certificate cannot be loaded: {reason}"
        if ssl:
            expected = (
                "an ssl: endpoint needs PEM files it can read:"
                " ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem"
            )
        else:
            expected = f"give a Twisted server endpoint such as {_ENDPOINT_EXAMPLES}"
        raise _StartupError(
            f"--{option} {description}: {reason} ({expected})"
        ) from None


class _Listening(StreamServerEndpointService):
    """
    Listens at start-up, before twistd drops privileges, and stops it with
    one line naming the endpoint if it cannot (a port in use, say), instead
    of running on without listening.
    """

    _raiseSynchronously = True

    def __init__(self, description: str, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        self._description = description

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            reason = getattr(e, "socketError", None) or e
            raise _StartupError(
                f"cannot listen on {self._description}: {reason}"
            ) from None


class _Report(Service):
    """Says once at start-up (every port had) how followers are sent to."""

    def startService(self) -> None:
        super().startService()
        _log.info(fast_send_report())


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """
    Build the registry, the site and its listening ports.  An endpoint
    string Twisted cannot make, a root that cannot be used or a token file
    that cannot be read stops twistd with one line, before anything starts.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    # The cheap checks first: endpoint strings (and ssl: keys) before the
    # root, which this may create.
    ports = [(d, _endpoint("port", d, reactor)) for d in options["port"]]
    admin = options["admin"] and _endpoint("admin", options["admin"], reactor)
    tokens = None
    if options["auth"]:
        try:
            tokens = Tokens.load(options["auth"])
        except (OSError, TokenError) as e:
            raise _StartupError(f"--auth {options['auth']}: {e}") from None
    # After the cheap checks: this one may create the root.
    _check_root(options["root"])
    top = MultiService()
    try:
        shared = storage(options, reactor, top)
    except ModeError as e:
        raise _StartupError(str(e)) from None
    registry = StreamRegistry(
        options["root"],
        max_message_size=options["max-message-size"],
        max_resource_size=options["max-resource-size"],
        fsync=options["fsync"],
        max_followers=options["max-followers"],
        max_followers_per_resource=options["max-followers-per-resource"],
        max_age=options["max-age"],
        sweep_interval=min(3600, max(1, options["max-age"] // 10)),
        reactor=reactor,
        **shared,
    )
    # The registry first, the ports last: services stop in reverse order, so
    # the ports close before followers are told the server is going away.
    registry.setServiceParent(top)
    websocket = WebSocketOptions(
        ping_interval=options["ping-interval"],
        ping_timeout=options["ping-timeout"],
        handshake_timeout=options["handshake-timeout"],
        fin_ends_appender=bool(options["fin-ends-appender"]),
        text_frames=bool(options["text-frames"]),
        text_frame_size=options["text-frame-size"],
    )
    site = make_site(
        StreamResource(registry, tokens, websocket),
        registry,
        idle_timeout=options["idle-timeout"],
        header_timeout=options["header-timeout"],
    )
    # One site on every endpoint: the same resources, limits and access log.
    for description, endpoint in ports:
        _Listening(description, endpoint, site).setServiceParent(top)
    if admin:
        _Listening(options["admin"], admin, make_admin_site(registry)).setServiceParent(
            top
        )
    _Report().setServiceParent(top)
    return top
