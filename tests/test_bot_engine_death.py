"""An engine that dies takes no innocent member's job with it, through the real bot: two
members' projections in one batch survive a SIGKILL mid-step (each told that their job runs
again), and a job that kills the engine every time fails alone with one sentence while the
other member's job completes. /wspace stats counts both."""

from __future__ import annotations

import os
import signal

import pytest
import pytest_asyncio

from bot.transport.local import DIED_TWICE
from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper
from tests.test_bot_e2e import ALICE, BOB, MANAGE_GUILD, finished, project

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    async with running_bot(tmp_path_factory.mktemp("death"), engine={"batch": 4}, max_project_steps=2000,
                           member_period=3600) as (sim, bot):
        yield sim, bot


def photos() -> tuple[bytes, bytes]:
    """Two members' selfies (one face each): Grace Hopper, and her mirror image."""
    face = grace_hopper()
    return encode(face, "JPEG"), encode(face[:, ::-1].copy(), "JPEG")


def stepping(inter) -> bool:
    return any("step" in (m.content or "") for m in inter.messages)


def heard_rerun(inter) -> bool:
    return any("running your job again" in (m.content or "") for m in inter.messages)


async def test_two_members_in_one_batch_both_get_their_faces_after_the_engine_is_killed(env):
    sim, bot = env
    engine = bot.services.transport
    first, second = photos()
    a = await project(sim, ALICE, first, "a.jpg", "image/jpeg", steps=300)
    b = await project(sim, BOB, second, "b.jpg", "image/jpeg", steps=60)
    await sim.wait_for(lambda: stepping(a) and stepping(b) and len(engine.pending) == 2, 120)
    os.kill(engine.process.pid, signal.SIGKILL)
    for inter in (a, b):
        await sim.wait_for(lambda: heard_rerun(inter), 60)
        await finished(sim, inter, 300)
        assert "likeness" in inter.last_content(), inter.last_content()
        assert heard_rerun(inter), "the member saw that their job runs again"
    stats = await finished(sim, await sim.invoke(ALICE, "wspace", subcommand="stats", permissions=MANAGE_GUILD))
    assert "restarts 1 (2 jobs run again, 0 failed)" in stats.last_content(), stats.last_content()


async def test_a_job_that_kills_the_engine_twice_fails_alone_and_the_other_member_gets_their_face(env):
    sim, bot = env
    engine = bot.services.transport
    restarts = engine.restarts
    first, second = photos()
    poison = await project(sim, ALICE, first, "p.jpg", "image/jpeg", steps=400)
    other = await project(sim, BOB, second, "o.jpg", "image/jpeg", steps=40)
    await sim.wait_for(lambda: stepping(poison) and len(engine.pending) == 2, 120)
    os.kill(engine.process.pid, signal.SIGKILL)  # the poison's first death, beside the other member
    await sim.wait_for(lambda: engine.restarts == restarts + 1 and heard_rerun(poison), 60)
    seen = len(poison.messages)
    # The poison runs again alone, first (it came first); its first step kills the engine again.
    await sim.wait_for(lambda: any("step" in (m.content or "") for m in poison.messages[seen:]), 120)
    os.kill(engine.process.pid, signal.SIGKILL)
    await finished(sim, poison, 60)
    assert poison.last_content().endswith(DIED_TWICE), poison.last_content()
    await finished(sim, other, 300)
    assert "likeness" in other.last_content(), other.last_content()
    stats = await finished(sim, await sim.invoke(BOB, "wspace", subcommand="stats", permissions=MANAGE_GUILD))
    assert "restarts 3 (4 jobs run again, 1 failed)" in stats.last_content(), stats.last_content()
