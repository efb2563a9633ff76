"""The request decision table (`httpfstream.decide`), on its own."""

from __future__ import annotations

import pytest

from httpfstream.auth import Right
from httpfstream.decide import Action, decide


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
    decision = decide(method, verb, upgrade, follow)
    assert decision.refusal is None
    assert (decision.action, decision.right) == (action, right)
    assert decision.writes == (right is Right.APPEND)


@pytest.mark.parametrize(
    ("method", "verb", "upgrade", "code", "headers"),
    [
        (b"PUT", "FOLLOW", False, 405, {b"Allow": b"GET, HEAD, POST"}),
        (b"OPTIONS", "FOLLOW", False, 405, {b"Allow": b"GET, HEAD, POST"}),
        (b"GET", "DELETE", False, 400, {}),
        (b"HEAD", "X", False, 400, {}),
        (b"GET", "APPEND", False, 400, {}),
    ],
)
def test_refusals(method, verb, upgrade, code, headers):
    decision = decide(method, verb, upgrade, False)
    assert decision.action is None
    assert decision.refusal is not None
    assert (decision.refusal.code, decision.refusal.headers) == (code, headers)
    assert decision.refusal.message  # a reason for the body


def test_a_plain_get_that_appends_is_a_write():
    # An invalid name is then 400, not 404, and the token needs `append`.
    decision = decide(b"GET", "APPEND", False, False)
    assert decision.writes and decision.right is Right.APPEND
