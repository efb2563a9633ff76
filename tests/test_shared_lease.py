"""
Shared mode's appender lease as a state machine (`httpfstream.shared.lease`)
and the shutdown's wait for the last release (`shared.slots`), on a
`Clock`, with Redis replaced by what each step answers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from httpfstream.core.coordination import Unavailable
from httpfstream.protocol import APPENDER_LOST
from httpfstream.shared.config import RedisConfig, Settings
from httpfstream.shared.lease import Lease, LeaseState
from httpfstream.shared.slots import LeaseSlots

LENGTH = 4.0  # seconds: renewed every 1, valid for 3 after a renewal


class Owner:
    """What a lease tells its owner, and what its renewals answer."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.answers: list[Any] = []  # True, False or an exception, in turn
        self.renewals = 0
        self.released: list[Lease] = []
        self.ended: list[tuple[int, int, str]] = []
        self.lost: list[str] = []

    def renew(self, lease: Lease) -> Deferred[bool]:
        self.renewals += 1
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def lease(self) -> Lease:
        lease = Lease(
            "a/b",
            "7",
            "7 me",
            LENGTH,
            self.clock.seconds(),
            self.clock,
            renew=self.renew,
            released=self.released.append,
            ended=lambda _, size, code, reason: self.ended.append((size, code, reason)),
        )
        lease.when_lost(self.lost.append)
        return lease


def test_a_held_lease_is_renewed_every_quarter_and_stays_valid() -> None:
    o = Owner()
    lease = o.lease()
    for _ in range(10):
        o.clock.advance(LENGTH / 4)
    assert o.renewals == 10
    assert lease.state is LeaseState.HELD and lease.valid()
    assert not o.lost


def test_unanswered_renewals_lose_the_lease_at_three_quarters() -> None:
    o = Owner()
    o.answers = [Unavailable("down")] * 10
    lease = o.lease()
    o.clock.advance(0.75 * LENGTH - 0.01)
    assert lease.valid()
    o.clock.advance(0.01)
    assert not lease.valid()
    assert lease.state is LeaseState.LOST
    assert o.lost == ["Redis unreachable: the appender's lease could not be renewed"]
    renewals = o.renewals
    o.clock.advance(LENGTH)
    assert o.renewals == renewals  # a lost lease is not renewed any more


def test_a_refused_renewal_loses_the_lease_at_once() -> None:
    o = Owner()
    o.answers = [True, False]
    lease = o.lease()
    o.clock.advance(LENGTH / 4)
    assert lease.state is LeaseState.HELD
    o.clock.advance(LENGTH / 4)
    assert lease.state is LeaseState.LOST and not lease.valid()
    assert len(o.lost) == 1 and "lost" in o.lost[0]


def test_a_release_ends_with_its_sessions_end_in_the_same_turn() -> None:
    o = Owner()
    lease = o.lease()
    lease.release()
    assert lease.state is LeaseState.RELEASING and not lease.valid()
    assert o.released == [lease]
    lease.end(12, 1000, "")
    assert lease.state is LeaseState.RELEASED
    o.clock.advance(LENGTH)
    assert o.ended == [(12, 1000, "")]  # once: the lone end never comes
    assert o.renewals == 0


def test_a_release_without_a_session_ends_alone_on_the_next_turn() -> None:
    o = Owner()
    lease = o.lease()
    lease.release()
    lease.release()  # once only
    assert o.released == [lease] and not o.ended
    o.clock.advance(0)
    assert lease.state is LeaseState.RELEASED
    assert o.ended == [(-1, APPENDER_LOST, "the claim was given back")]


def test_a_lost_lease_is_released_too_and_nothing_goes_back() -> None:
    o = Owner()
    lease = o.lease()
    lease.lose("gone")
    lease.lose("again")
    assert o.lost == ["gone"]
    lease.release()
    assert lease.state is LeaseState.RELEASING
    lease.end(5, 1013, "lease lost")
    lease.release()
    lease.lose("late")
    lease.end(6, 1000, "")
    assert lease.state is LeaseState.RELEASED
    assert o.lost == ["gone"] and o.ended == [(5, 1013, "lease lost")]


class _Link:
    """Redis for `LeaseSlots`: a claim wins, anything else succeeds."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def run(self, script: str, keys: list[str], args: list[str]) -> Any:
        self.ran.append(keys[0])
        return [1, 7] if len(keys) == 5 else 1

    def track(self, d: Deferred[Any], what: str) -> None:
        pass


def test_stopping_waits_for_the_last_release() -> None:
    clock = Clock()
    slots = LeaseSlots(Settings(RedisConfig(lease=LENGTH)), _Link(), clock)  # type: ignore[arg-type]
    assert slots.idle().called  # nothing held
    a = Deferred.fromCoroutine(slots.claim("a")).result
    b = Deferred.fromCoroutine(slots.claim("b")).result
    idle = slots.idle()
    a.release()
    slots.ended("a", 3, 1001, "server stopping")
    assert not idle.called
    b.lose("gone")
    assert not idle.called  # lost, but its session has not ended yet
    b.release()
    assert not idle.called
    clock.advance(0)  # b had no session end: it ends alone
    assert idle.called
