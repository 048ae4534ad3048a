"""Fair limits: jobs cost what they ask of the engine; refusals cost nothing."""

from __future__ import annotations

import pytest

from bot.limits import Budget, Limits, RateLimited


def test_a_normal_session_is_never_refused_at_the_defaults():
    """A projection, ten /me, five edits and two morphs inside one minute (the issue's
    five-minute session, squeezed) fit the default 6 a minute."""
    lim = Limits(6, 60.0, 60, 60.0)
    for kind in ["project"] + ["render"] * 10 + ["edit"] * 5 + ["morph"] * 2:
        lim.check(1, 2, kind)
        lim.charge(1, 2, kind)


def test_projections_are_dear_and_renders_free():
    lim = Limits(2, 60.0, 100, 60.0)
    for _ in range(2):
        lim.check(1, 2, "project")
        lim.charge(1, 2, "project")
    with pytest.raises(RateLimited) as exc:
        lim.check(1, 2, "edit")
    assert exc.value.scope == "member" and 0 < exc.value.retry_after <= 60
    lim.check(1, 2, "render")  # drawing a kept face costs nothing
    lim.check(1, 3, "project")  # another member has their own budget


def test_the_wait_is_until_enough_has_expired():
    b = Budget(1.0, 10.0)
    b.charge("k", 0.5, now=0.0)
    b.charge("k", 0.5, now=4.0)
    assert b.retry_after("k", 0.5, now=5.0) == pytest.approx(5.0), "the first charge frees room at t=10"
    assert b.retry_after("k", 1.0, now=5.0) == pytest.approx(9.0), "a whole unit needs both to expire"
    assert b.retry_after("k", 0.5, now=10.5) == 0.0
    assert b.retry_after("k", 2.0, now=0.0) == 10.0, "dearer than the whole budget: never fits"


def test_a_refund_takes_back_a_charge_that_never_started():
    lim = Limits(1, 60.0, 100, 60.0)
    lim.charge(1, 2, "project")
    lim.refund(1, 2, "project")
    lim.check(1, 2, "project")


def test_server_budget_is_shared_by_its_members():
    lim = Limits(10, 60.0, 1, 60.0)
    lim.charge(1, 2, "project")
    with pytest.raises(RateLimited) as exc:
        lim.check(1, 3, "project")
    assert exc.value.scope == "server"
    lim.check(9, 3, "project")  # another server
