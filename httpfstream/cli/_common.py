"""
What both tools share: their common options (`tool_parser`), and the one
`client.Client` of a run (`make_client`).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import Any

from .. import __version__, client


def _epilog(codes: dict[int, str]) -> str:
    """The exit statuses, one a line (for a `RawDescriptionHelpFormatter`)."""
    lines = ["exit status:"]
    for code, text in codes.items():
        wrapped = textwrap.wrap(text, 70)
        lines.append(f"  {code:<4} {wrapped[0]}")
        lines.extend(f"       {more}" for more in wrapped[1:])
    return "\n".join(lines)


#: What ``--progress`` does where the data is on a terminal, by ``data``.
_FORCED = {
    "stdout": " (on the terminal the output goes to, it is cleared before each write)",
    "stdin": " (on the terminal you type into, it mixes with what you type)",
}


def tool_parser(
    prog: str,
    description: str,
    codes: dict[int, str],
    *,
    data: str,
    waits: bool = False,
) -> argparse.ArgumentParser:
    """
    A parser with the options both tools take, and ``codes`` (the tool's
    exit statuses) at the end of its ``--help``.

    :param data: where the tool's data passes, which no progress line is
        shown on by default (``stdin``, ``stdout``).
    :param waits: the tool has ``--wait``, which ``--retry-for`` bounds too.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=_epilog(codes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the resource, e.g. http://localhost:8080/a.log")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="show the progress line on stderr even where it is not by default"
        + _FORCED[data],
    )
    shown.add_argument(
        "-q",
        "--quiet",
        dest="progress",
        action="store_false",
        help="no progress line (shown by default when stderr is a terminal and"
        f" {data} is not, so that it never mixes with the data)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("HTTPFSTREAM_TOKEN"),
        help="bearer token for a server with access control"
        " (default: $HTTPFSTREAM_TOKEN)",
    )
    parser.add_argument(
        "--cafile",
        help="PEM file of the certificate authority to trust for https:// URLs",
    )
    parser.add_argument(
        "--retry",
        action="store_true",
        help="keep trying while the server cannot be reached at start-up, and"
        " reconnect and resume after a dropped connection or a server restart",
    )
    parser.add_argument(
        "--retry-for",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help=f"how long --retry{' and --wait keep' if waits else ' keeps'} trying"
        " before giving up (default: 300)",
    )
    return parser


def _seconds(text: str) -> float:
    """A positive number of seconds (an ``argparse`` type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def make_client(reactor: Any, args: argparse.Namespace) -> client.Client:
    """
    The one `client.Client` of a run: ``--token``, and ``--cafile`` as the
    authority it trusts for whatever host the URL names.
    """
    return client.Client(reactor, token=args.token, trust_root=args.cafile or None)
