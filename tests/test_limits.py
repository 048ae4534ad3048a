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


@pytest.mark.asyncio
async def test_a_normal_session_through_the_real_bot_is_never_refused(tmp_path):
    """One member at the default limits: a projection, ten /me, five edits and two morphs,
    as fast as the engine answers (stricter than the five minutes a member would take)."""
    from tests.bot_harness import running_bot
    from tests.photos import encode, grace_hopper
    from tests.test_bot_e2e import ALICE, BOB, finished, option, project

    async with running_bot(tmp_path, member_rate=6, member_period=60, per_member_queued=2) as (sim, bot):
        other = await finished(sim, await project(sim, BOB, encode(grace_hopper(), "JPEG"), "b.jpg", "image/jpeg"), 180)
        share = await sim.invoke(BOB, "privacy", [option("share", "on", 3)])
        await sim.wait_for(lambda: share.messages, 10)
        answers = [
            await finished(sim, await project(sim, ALICE, encode(grace_hopper(), "JPEG"), "a.jpg", "image/jpeg"), 180)
        ]
        answers += [await finished(sim, await sim.invoke(ALICE, "me"), 60) for _ in range(10)]
        answers += [
            await finished(sim, await sim.invoke(ALICE, "age", [option("amount", float(a), 10)]), 60)
            for a in (1, 2, -1, -2, 3)
        ]
        answers += [
            await finished(
                sim,
                await sim.invoke(ALICE, "morph", [option("users", f"<@{ALICE}> <@{BOB}>", 3), option("frames", 8, 4)]),
                120,
            )
            for _ in range(2)
        ]
        refused = [
            a.last_content()
            for a in answers
            if "going a little fast" in a.last_content()
            or "busy with faces" in a.last_content()
            or "waiting" in a.last_content()
        ]
        assert not refused, refused
        assert all(a.all_files() for a in answers), [a.last_content() for a in answers if not a.all_files()]
        assert "likeness" in other.last_content()


def test_concurrent_commands_hold_their_places_while_they_look_members_up():
    """Six /morph at once all passed the pre-check before any had a job (276 member lookups): a
    command that passes holds one of the member's places until its job takes it or it ends."""
    from types import SimpleNamespace

    from bot.app import make_limits
    from bot.commands.common import Refusal, Services
    from bot.commands.running import precheck, release_hold
    from bot.config import parse_settings
    from bot.transport.local import LocalTransport

    settings = parse_settings({"discord": {"token": "t"}, "limits": {"per_member_queued": 2}})
    svc = Services(settings, None, LocalTransport(), make_limits(settings))

    def interaction():
        return SimpleNamespace(guild_id=1, user=SimpleNamespace(id=7), extras={})

    first, second, third = interaction(), interaction(), interaction()
    precheck(svc, first, "morph")
    precheck(svc, second, "morph")
    with pytest.raises(Refusal, match="2 jobs waiting"):
        precheck(svc, third, "morph")
    precheck(svc, SimpleNamespace(guild_id=1, user=SimpleNamespace(id=8), extras={}), "morph")  # others are not held up
    release_hold(svc, first)  # the first command ended (answered, or its job took the place over)
    precheck(svc, third, "morph")
    for done in (second, third, third):  # a second release gives back nothing more
        release_hold(svc, done)
    assert svc.queued[(1, 7)] == 0
