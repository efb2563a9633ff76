"""
What a browser gets (docs/PROTOCOL.md sections 10 and 12): the page that shows a
resource and follows it live, and the index of a folder; and the JSON
listing for programs.

Pages are built here from the resource's *name* and state only; the
resource's bytes never enter the HTML: the page's script (`SCRIPTS`, one
after the other: the SGR state machine, the line model and store, the
sections, the server I/O, the view) fetches them, the last lines first and
the others as they are about to be seen, and draws them as text nodes and
spans.  Every page is sent with a strict Content-Security-Policy whose only
script and style are the page's own, allowed by a per-response nonce.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import NamedTuple
from urllib.parse import quote

from twisted.web.server import Request

from ..core.names import Name
from ..core.store import Entry

__all__ = ["Page", "listing_json", "listing_page", "resource_page", "send_page"]


@dataclass(frozen=True)
class Page:
    body: bytes
    nonce: str


def _asset(name: str) -> str:
    return (
        resources.files("httpfstream.web").joinpath("assets", name).read_text("utf-8")
    )


_FIELD = re.compile(r"\{(\w+)\}")


def _template(name: str, nonce: str, **fields: str) -> bytes:
    """
    The asset ``name`` with each ``{field}`` replaced, in one pass over the
    template alone: a value (a resource's name, the script) is never
    searched for further fields.
    """
    values = {"nonce": nonce, **fields}
    text = _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), _asset(name))
    return text.encode("utf-8")


#: The page's script, in this order: each file uses those before it.
SCRIPTS = ("ansi.js", "lines.js", "sections.js", "net.js", "viewer.js")


def resource_page(name: Name, token: bytes | None) -> Page:
    """
    The live view of ``name``: its script follows the resource's own URL
    (with ``access_token`` if the page was opened with one).  The same page
    is served for a resource not written yet (with a 404): it waits for it.
    """
    nonce = secrets.token_urlsafe(18)
    config = {"name": "/".join(name), "token": (token or b"").decode("latin-1")}
    body = _template(
        "viewer.html",
        nonce,
        title=html.escape("/".join(name)),
        filename=html.escape(name[-1]),
        style=_asset("viewer.css"),
        script="\n".join(_asset(script) for script in SCRIPTS),
        # JSON in a script element: escape "<" so "</script>" cannot close it.
        config=json.dumps(config).replace("<", "\\u003c"),
    )
    return Page(body, nonce)


def _state(active: bool, complete: bool) -> str:
    if active:
        return "live"
    return "finished" if complete else "interrupted"


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class Listed(NamedTuple):
    """A resource of a listing, with what this server knows of it now."""

    entry: Entry
    active: bool
    followers: int


def listing_json(entries: list[Listed], folders: list[str]) -> bytes:
    """Section 10's JSON: resources (with their state) and folders, by name."""
    return json.dumps(
        {
            "resources": [
                {
                    "name": entry.name,
                    "size": entry.size,
                    "active": active,
                    "complete": entry.complete and not active,
                    "modified": _rfc3339(entry.modified),
                    "followers": followers,
                }
                for entry, active, followers in entries
            ],
            "folders": folders,
        },
        indent=1,
    ).encode()


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def listing_page(
    folder: Name, entries: list[Listed], folders: list[str], now: float
) -> Page:
    """The HTML index of ``folder``: each resource links to its viewer."""
    nonce = secrets.token_urlsafe(18)
    rows = []
    if folder:
        rows.append(
            '<tr><td><a href="../">../</a></td><td></td><td></td><td></td></tr>'
        )
    for sub in folders:
        link = html.escape(quote(sub))
        rows.append(
            f'<tr><td><a href="{link}">{html.escape(sub)}</a></td>'
            "<td></td><td></td><td></td></tr>"
        )
    for entry, active, _ in entries:
        link = html.escape(quote(entry.name))
        state = _state(active, entry.complete)
        rows.append(
            f'<tr><td><a href="{link}">{html.escape(entry.name)}</a></td>'
            f'<td class="size">{entry.size}</td>'
            f'<td class="{state}">{state}</td>'
            f'<td title="{_rfc3339(entry.modified)}">{_age(now - entry.modified)}</td>'
            "</tr>"
        )
    title = html.escape("/" + "/".join(folder) + ("/" if folder else ""))
    body = _template(
        "listing.html",
        nonce,
        title=title,
        style=_asset("viewer.css"),
        rows="\n".join(rows),
    )
    return Page(body, nonce)


def send_page(request: Request, page: Page) -> None:
    """Answer with ``page`` under a strict Content-Security-Policy."""
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{page.nonce}'; style-src 'nonce-{page.nonce}'; "
        # data: images: the page's own icon, inline, so that a browser
        # never asks for /favicon.ico (a 404, counted as a refusal).
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", policy.encode())
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    # A page opened with ?access_token= must not hand it on.
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Vary", b"Accept")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", b"%d" % len(page.body))
    request.write(b"" if request.method == b"HEAD" else page.body)
    request.finish()
