"""The request decision table (`httpfstream.web.decide`), on its own."""

from __future__ import annotations

import pytest

from httpfstream.web.auth import Right
from httpfstream.web.decide import Action, Asked, decide, prefers_html, wants_events


@pytest.mark.parametrize(
    ("method", "verb", "upgrade", "follow", "action", "right"),
    [
        (b"GET", "FOLLOW", True, False, Action.FOLLOW_WS, Right.FOLLOW),
        (b"GET", "FOLLOW", True, True, Action.FOLLOW_WS, Right.FOLLOW),
        (b"GET", "FOLLOW", False, True, Action.FOLLOW_HTTP, Right.FOLLOW),
        (b"GET", "FOLLOW", False, False, Action.SNAPSHOT, Right.FOLLOW),
        (b"GET", "APPEND", True, False, Action.APPEND_WS, Right.APPEND),
        (b"HEAD", "FOLLOW", False, False, Action.HEAD, Right.FOLLOW),
        # HEAD is a snapshot whatever its verb: `follow` covers it.
        (b"HEAD", "APPEND", False, False, Action.HEAD, Right.FOLLOW),
        (b"POST", "FOLLOW", False, False, Action.POST, Right.APPEND),
        # POST appends whatever the verb says, even one we do not know.
        (b"POST", "NONSENSE", False, False, Action.POST, Right.APPEND),
    ],
)
def test_actions(method, verb, upgrade, follow, action, right):
    decision = decide(Asked(method, verb, upgrade=upgrade, follow=follow))
    assert decision.refusal is None
    assert (decision.action, decision.right) == (action, right)
    assert decision.writes == (right is Right.APPEND)


@pytest.mark.parametrize(
    ("method", "verb", "upgrade", "code", "headers"),
    [
        (b"PUT", "FOLLOW", False, 405, {b"Allow": b"GET, HEAD, POST, DELETE"}),
        (b"OPTIONS", "FOLLOW", False, 405, {b"Allow": b"GET, HEAD, POST, DELETE"}),
        (b"GET", "DELETE", False, 400, {}),
        (b"HEAD", "X", False, 400, {}),
        (b"GET", "APPEND", False, 400, {}),
    ],
)
def test_refusals(method, verb, upgrade, code, headers):
    decision = decide(Asked(method, verb, upgrade=upgrade))
    assert decision.action is None
    assert decision.refusal is not None
    assert (decision.refusal.code, decision.refusal.headers) == (code, headers)
    assert decision.refusal.message  # a reason for the body


def test_a_plain_get_that_appends_is_a_write():
    # An invalid name is then 400, not 404, and the token needs `append`.
    decision = decide(Asked(b"GET", "APPEND"))
    assert decision.writes and decision.right is Right.APPEND


def test_delete_needs_the_append_right():
    decision = decide(Asked(b"DELETE"))
    assert (decision.action, decision.right) == (Action.DELETE, Right.APPEND)


@pytest.mark.parametrize(
    ("asked", "action"),
    [
        (Asked(b"GET", browser=True), Action.VIEW),
        # Anything that asks for bytes gets bytes, browser or not.
        (Asked(b"GET", browser=True, plain=False), Action.SNAPSHOT),
        (Asked(b"GET", "FOLLOW", verb_given=True, browser=True), Action.SNAPSHOT),
        (Asked(b"GET", browser=True, follow=True), Action.FOLLOW_HTTP),
        (Asked(b"HEAD", browser=True), Action.HEAD),
        (Asked(b"GET", folder=True), Action.LIST),
        (Asked(b"HEAD", folder=True), Action.LIST),
        (Asked(b"GET", folder=True, browser=True), Action.LIST),
    ],
)
def test_browsers_and_folders(asked, action):
    assert decide(asked).action is action


@pytest.mark.parametrize(
    ("asked", "code"),
    [
        (Asked(b"POST", folder=True), 400),
        (Asked(b"DELETE", folder=True), 400),
        (Asked(b"GET", "APPEND", upgrade=True, folder=True), 400),
        (Asked(b"GET", upgrade=True, folder=True), 404),
        (Asked(b"GET", follow=True, folder=True), 404),
    ],
)
def test_folders_are_not_resources(asked, code):
    refusal = decide(asked).refusal
    assert refusal is not None and refusal.code == code


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        (b"*/*", False),
        (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        (b"application/json, text/html", False),
        (b"Text/HTML; q=1", True),
    ],
)
def test_what_counts_as_a_browser(accept, html):
    assert prefers_html(accept) is html


@pytest.mark.parametrize(
    ("accept", "events"),
    [
        (None, False),
        (b"", False),
        (b"*/*", False),
        (b"text/*", False),
        (b"text/event-stream", True),
        (b"Text/Event-Stream; charset=utf-8", True),
        (b"application/json, text/event-stream;q=0.5", True),
        (b"text/event-stream, text/html", True),
        # A browser opening the link gets the page (section 12).
        (b"text/html, text/event-stream", False),
        (b"text/html,application/xhtml+xml,*/*;q=0.8", False),
        # q=0 means "not this one".
        (b"text/event-stream;q=0", False),
        (b"text/event-stream; q=0.000, */*", False),
        (b"text/event-stream;q=0.01", True),
        (b"text/event-streams", False),
    ],
)
def test_what_asks_for_an_event_stream(accept, events):
    assert wants_events(accept) is events


@pytest.mark.parametrize(
    ("asked", "action"),
    [
        (Asked(b"GET", events=True), Action.EVENTS),
        # Whatever else a GET says: offset=, follow=1, a verb.
        (Asked(b"GET", events=True, plain=False), Action.EVENTS),
        (Asked(b"GET", events=True, follow=True), Action.EVENTS),
        (Asked(b"GET", "FOLLOW", verb_given=True, events=True), Action.EVENTS),
        # A WebSocket is a WebSocket; HEAD is the snapshot's headers.
        (Asked(b"GET", upgrade=True, events=True), Action.FOLLOW_WS),
        (Asked(b"HEAD", events=True), Action.HEAD),
        (Asked(b"HEAD", events=True, folder=True), Action.LIST),
        (Asked(b"POST", events=True), Action.POST),
    ],
)
def test_event_streams(asked, action):
    decision = decide(asked)
    assert decision.refusal is None
    assert decision.action is action


def test_event_streams_need_the_follow_right_and_a_resource():
    decision = decide(Asked(b"GET", events=True))
    assert (decision.right, decision.writes) == (Right.FOLLOW, False)
    refusal = decide(Asked(b"GET", events=True, folder=True)).refusal
    assert refusal is not None and refusal.code == 404
    refusal = decide(Asked(b"GET", "APPEND", events=True)).refusal
    assert refusal is not None and refusal.code == 400
