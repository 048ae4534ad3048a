"""Limits and faults through the real bot: rate limits, caps, a full queue, an expired
interaction, and an engine killed in the middle of a projection (the job runs again)."""

from __future__ import annotations

import os
import signal

import pytest
import pytest_asyncio

from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper
from tests.test_bot_e2e import ALICE, BOB, CAROL, finished, option, project
from tests.test_storage import fill_to_the_brim

pytestmark = pytest.mark.asyncio(loop_scope="module")
DAVE, EVE, FRANK = (
    800000000000000004,
    800000000000000005,
    800000000000000006,
)  # each test's member stays inside member_rate=2
GINA = 800000000000000007


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    # member_period: a slow machine must not see the budget refill during the 600-step projection.
    async with running_bot(
        tmp_path_factory.mktemp("faults"),
        member_rate=2,
        member_period=3600,
        per_member_queued=1,
        queue_size=2,
        max_project_steps=2000,
        costs={"random": 1.0},
    ) as (sim, bot):
        yield sim, bot


def private(inter) -> bool:
    """Only the member saw the answer: an ephemeral reply as the acknowledgement itself, or
    (refused after deferring) the public "thinking…" removed and an ephemeral follow-up."""
    last = inter.messages[-1]
    if inter.callback_type == 4:  # answered at once
        return len(inter.messages) == 1 and bool((last.payload.get("data") or {}).get("flags", 0) & 64)
    return inter.original_deleted and last.kind == "followup" and bool(last.payload.get("flags", 0) & 64)


async def test_caps_queue_bound_and_rate_limit(env):
    sim, bot = env
    photo = encode(grace_hopper(), "JPEG")
    slow_a = await project(sim, ALICE, photo, "a.jpg", "image/jpeg", steps=600)
    await sim.wait_for(lambda: bot.services.transport.position(next(iter(bot.services.transport.pending), "")) == 1, 30)
    capped = await finished(sim, await sim.invoke(ALICE, "random", [option("seed", 1, 4)]))
    assert "already have a job waiting" in capped.last_content()
    assert private(capped), "a refusal is for the member's eyes only"
    slow_b = await project(sim, BOB, photo, "b.jpg", "image/jpeg", steps=50)
    await sim.wait_for(lambda: len(bot.services.transport.pending) == 2, 30)
    full = await finished(sim, await sim.invoke(CAROL, "random", [option("seed", 2, 4)]))
    assert "queue is full" in full.last_content() and private(full)
    await sim.wait_for(lambda: any("position 2" in (m.content or "") for m in slow_b.messages), 30)
    await finished(sim, slow_a, 300)
    await finished(sim, slow_b, 300)
    assert "likeness" in slow_b.last_content()
    # Refusals cost nothing: Alice's refused /random did not eat into her budget (project 1 + random 1 = 2).
    ok = await finished(sim, await sim.invoke(ALICE, "random", [option("seed", 3, 4)]))
    assert "seed3.png" in ok.all_files(), ok.last_content()
    limited = await finished(sim, await sim.invoke(ALICE, "random", [option("seed", 4, 4)]))
    import re

    assert re.search(r"try again in (\d+ seconds?|a minute|\d+ minutes|\d+ hours)\.", limited.last_content()), (
        limited.last_content())
    assert private(limited)
    me = await finished(sim, await sim.invoke(ALICE, "me"))
    assert "face.png" in me.all_files(), "drawing one's kept face never hits the budget"
    for inter in (slow_a, slow_b, capped, full, limited):
        assert inter.ack_seconds is not None and inter.ack_seconds < 3, "every command was acknowledged in time"


async def test_expired_interaction_gets_its_result_in_the_channel(env):
    sim, _ = env
    inter = await project(sim, DAVE, encode(grace_hopper(), "JPEG"), "d.jpg", "image/jpeg", steps=60)
    await sim.wait_for(lambda: inter.acked_at is not None, 10)
    inter.expired = True  # 15 minutes have passed, as far as Discord is concerned
    msg = await sim.wait_for(
        lambda: next((m for m in sim.channel_messages if str(DAVE) in (m.content or "")), None), 120
    )
    assert "likeness" in msg.content and "side_by_side.png" in msg.files


async def test_engine_killed_mid_projection_the_member_is_told_and_gets_their_face(env):
    sim, bot = env
    inter = await project(sim, CAROL, encode(grace_hopper(), "JPEG"), "c.jpg", "image/jpeg", steps=300)
    await sim.wait_for(lambda: any("step" in (m.content or "") for m in inter.messages), 60)
    pid = bot.services.transport.process.pid
    os.kill(pid, signal.SIGKILL)
    await sim.wait_for(lambda: any("restarted" in (m.content or "") for m in inter.messages), 60)
    await finished(sim, inter, 300)
    assert "likeness" in inter.last_content(), "the job ran again and the member got their face"
    await bot.services.transport.wait_ready(60)
    assert bot.services.transport.process.pid != pid
    again = await finished(sim, await sim.invoke(BOB, "random", [option("seed", 5, 4)]), 60)
    assert "seed5.png" in again.all_files(), again.last_content()
    status = await bot.services.storage._rows("SELECT COUNT(*) FROM jobs WHERE status = 'running'")
    assert status[0][0] == 0, "the killed job is not left running"


async def test_deleted_message_while_editing_progress_posts_the_result_in_the_channel(env):
    sim, _ = env
    before = len(sim.channel_messages)
    inter = await project(sim, EVE, encode(grace_hopper(), "JPEG"), "e.jpg", "image/jpeg", steps=60)
    await sim.wait_for(lambda: inter.acked_at is not None, 10)
    inter.original_deleted = True  # the member deleted the "thinking…" message (10008 on edit)
    msg = await sim.wait_for(
        lambda: next((m for m in sim.channel_messages[before:] if str(EVE) in (m.content or "")), None), 120
    )
    assert "likeness" in msg.content


async def test_forget_while_a_projection_is_queued_keeps_nothing(env):
    sim, bot = env
    svc = bot.services
    inter = await project(sim, DAVE, encode(grace_hopper(), "JPEG"), "d.jpg", "image/jpeg", steps=200)
    await sim.wait_for(lambda: any(p.job.kind == "project" for p in svc.transport.pending.values()), 30)
    forget = await sim.invoke(DAVE, "forget")
    await sim.wait_for(lambda: forget.messages, 10)
    await sim.wait_for(lambda: not svc.transport.pending, 120)
    await sim.wait_for(
        lambda: (
            "nothing was kept" in inter.last_content()
            or any("nothing was kept" in (m.content or "") for m in sim.channel_messages)
        ),
        30,
    )
    assert await svc.storage.latent(sim.guild_id, DAVE, svc.model_id) is None
    said = [m.content for m in (*inter.messages, *sim.channel_messages) if "nothing was kept" in (m.content or "")]
    assert said and not any("yours now" in t for t in said), "no face is promised that was not kept"


async def test_a_full_database_gets_one_sentence_and_the_bot_recovers(env):
    sim, bot = env
    db = bot.services.storage.db
    await fill_to_the_brim(db)
    full = await finished(sim, await sim.invoke(FRANK, "random", [option("seed", 7, 4)]), 60)
    assert full.last_content() == "My database is having trouble right now; try again in a minute."
    await db.execute("DELETE FROM filler")
    await db.commit()
    again = await finished(sim, await sim.invoke(FRANK, "random", [option("seed", 8, 4)]), 60)
    assert "seed8.png" in again.all_files(), again.last_content()
    cur = await db.execute("PRAGMA integrity_check")
    assert (await cur.fetchone())[0] == "ok"


async def test_the_invite_asks_for_what_the_bot_calls_and_nothing_more(env):
    """Every REST call the bot made in this module (a channel post included: the deleted
    message above) is one bot/invite.py lists with what it needs; the invite asks for exactly
    the union of those needs."""
    import re

    from bot.invite import ROUTES, permissions

    sim, _ = env
    patterns = {route: re.compile("^/api/v10" + re.sub(r"\{[^}]+\}", "[^/]+", route[1]) + "$") for route in ROUTES}
    called = {(method, path) for method, path in sim.requests if path.startswith("/api/v10/")}
    used = {
        route
        for route, pattern in patterns.items()
        for method, path in called
        if method == route[0] and pattern.match(path)
    }
    unknown = {(m, p) for m, p in called if not any(m == r[0] and patterns[r].match(p) for r in ROUTES)}
    assert not unknown, f"calls bot/invite.py does not list (say what they need there): {unknown}"
    assert ("POST", "/channels/{channel_id}/messages") in used, "the channel post was exercised"
    needed = {name for route in used for name in ROUTES[route]}
    granted = {name for name, on in permissions() if on}
    assert needed <= granted | {"view_channel"} and permissions().view_channel
    assert not (permissions().administrator or permissions().manage_messages or permissions().mention_everyone)
