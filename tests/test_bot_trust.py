"""What members can trust, through the real bot against the simulator: echoed text pings
nobody, consent is per server (a DM has nobody's), a refused command looks nobody up, and
a photo refused for its content costs nothing. (The /claim race is in tests/test_team.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from tests.bot_harness import running_bot
from tests.discord_sim import user_payload
from tests.photos import encode, grace_hopper
from tests.test_bot_e2e import ALICE, BOB, CAROL, finished, option, project, user_option

pytestmark = pytest.mark.asyncio(loop_scope="module")
DAVE, EVE = 800000000000000004, 800000000000000005
PHOTO = encode(grace_hopper(), "JPEG")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    async with running_bot(tmp_path_factory.mktemp("trust"), member_rate=3, member_period=3600, per_member_queued=1,
                           max_project_steps=2000, stranger_seconds=5.0) as (sim, bot):
        yield sim, bot


def allowed_mentions(message) -> dict | None:
    payload = message.payload or {}
    return payload.get("allowed_mentions", (payload.get("data") or {}).get("allowed_mentions"))


async def test_a_mention_typed_into_an_option_pings_nobody(env):
    sim, _ = env
    mine = (await finished(sim, await project(sim, ALICE, PHOTO, "a.jpg", "image/jpeg"))).last_content()
    plain, details = mine.split("\n-# details: ")  # plain words first; the technical figures on a small line
    assert "a short projection, so no verdict" in plain, "20 steps (the harness's) earn a number, not a word"
    assert "dlib" not in plain and "PSNR" not in plain, mine
    assert "likeness" in details and "PSNR" in details, mine
    typed = ("@everyone <@&555555555555555555> @here [free nitro](https://evil.example/x) </wspace stats:1> ||x||\n"
             "# HEADER " + "x" * 6000)  # Discord allows 6 000 characters in an option; a fake sends it
    inter = await finished(
        sim, await sim.invoke(ALICE, "edit", [option("attribute", typed, 3), option("amount", 1.0, 10)])
    )
    assert inter.messages, "answered"
    for m in inter.messages:
        text = m.content or ""
        assert "@everyone" not in text and "@here" not in text and "<@&" not in text, text
        assert len(text) <= 2000 and "x" * 200 not in text, "what a member typed is echoed bounded"
        assert "[free nitro](" not in text.replace("\\[free nitro](", ""), "no masked link"
        assert "\n# HEADER" not in text and "||x||" not in text and "</wspace" not in text.replace("\\</", ""), text
        mentions = allowed_mentions(m)
        assert mentions is None or (mentions.get("parse") == [] and not mentions.get("roles")), mentions


async def test_consent_is_per_server_and_a_dm_has_nobodys(env):
    sim, bot = env
    bob_dm = await finished(sim, await project(sim, BOB, PHOTO, "b.jpg", "image/jpeg"))  # Bob's face in the server…
    assert "likeness" in bob_dm.last_content()
    share = await sim.invoke(BOB, "privacy", [option("share", "on", 3)], dm=True)  # …sharing asked for in a DM
    await sim.wait_for(lambda: share.messages, 10)
    assert "per server" in share.last_content(), share.last_content()
    assert not await bot.services.storage.shares(0, BOB)
    await bot.services.storage.set_share(0, BOB, True)  # a row an older release wrote: still nobody's consent
    ws = np.zeros((bot.services.transport.info.num_ws, bot.services.transport.info.w_dim), np.float32)
    await bot.services.storage.save_latent(0, BOB, bot.services.model_id, ws, "project")
    await bot.services.storage.save_latent(0, CAROL, bot.services.model_id, ws + 0.1, "project")
    blend = await finished(
        sim,
        await sim.invoke(
            CAROL,
            "blend",
            [user_option("a", CAROL), user_option("b", BOB)],
            resolved={"users": {str(u): user_payload(u) for u in (CAROL, BOB)}},
            dm=True,
        ),
    )
    assert "only your own face" in blend.last_content() and not blend.all_files(), blend.last_content()
    morph = await finished(sim, await sim.invoke(CAROL, "morph", dm=True))
    assert "direct message" in morph.last_content() and not morph.all_files(), morph.last_content()
    me = await finished(sim, await sim.invoke(CAROL, "me", dm=True))
    assert me.all_files(), "a member's own face works in a DM"


async def test_a_refused_command_looks_nobody_up(env):
    sim, bot = env
    await bot.services.storage.set_share(sim.guild_id, ALICE, True)  # someone to look up
    long = await project(sim, EVE, PHOTO, "e.jpg", "image/jpeg", steps=600)
    await sim.wait_for(lambda: any("step" in (m.content or "") for m in long.messages), 120)
    lookups = sum(1 for _, path in sim.requests if "/members/" in path)
    refused = await finished(sim, await sim.invoke(EVE, "morph"))
    assert "already have a job waiting" in refused.last_content(), refused.last_content()
    assert sum(1 for _, path in sim.requests if "/members/" in path) == lookups, "no member was looked up"
    refused = await finished(sim, await sim.invoke(EVE, "lookalike"))
    assert "already have a job waiting" in refused.last_content()
    assert sum(1 for _, path in sim.requests if "/members/" in path) == lookups
    await finished(sim, long, 300)


async def test_photos_refused_for_their_content_cost_nothing(env):
    sim, _ = env
    no_face = encode(np.full((240, 240, 3), 128, np.uint8), "PNG")
    for i in range(4):  # the budget is 3 projections: without refunds the fourth would wait an hour
        refused = await finished(sim, await project(sim, DAVE, no_face, f"n{i}.png", "image/png"))
        assert "face" in refused.last_content() and "try again in" not in refused.last_content(), refused.last_content()
    good = await finished(sim, await project(sim, DAVE, PHOTO, "d.jpg", "image/jpeg"))
    assert "likeness" in good.last_content(), good.last_content()


async def test_mix_offers_the_splits_the_loaded_model_takes(env):
    sim, bot = env
    focused = [
        {"name": "coarse", "type": 6, "value": str(ALICE)},
        {"name": "fine", "type": 6, "value": str(BOB)},
        {"name": "split", "type": 4, "value": "", "focused": True},
    ]
    inter = await sim.invoke(ALICE, "mix", focused, autocomplete=True)
    await sim.wait_for(lambda: inter.messages, 10)
    assert inter.callback_type == 8, inter.callback_type
    values = [c["value"] for c in inter.messages[0].payload["data"]["choices"]]
    assert values == list(range(1, bot.services.transport.info.num_ws))[:25], values


async def test_the_astronauts_sleeve_patch_is_not_a_face(env):
    """One face in the astronaut photo: the member is not asked "which one is you?"."""
    from tests.photos import astronaut

    sim, _ = env
    inter = await finished(sim, await project(sim, CAROL, encode(astronaut(), "JPEG"), "astro.jpg", "image/jpeg"), 180)
    text = " ".join(m.content or "" for m in inter.messages)
    assert "likeness" in inter.last_content() and "Which one" not in text, text


async def test_lookalike_among_seventy_sharing_members_answers_and_a_quiet_search_is_never_silent(env, monkeypatch):
    """More sharing members than a wire list holds: the nearest is found and shown. The search
    for a stranger reports little; the member's message still moves every few seconds."""
    import bot.commands.running as running

    sim, bot = env
    storage, info = bot.services.storage, bot.services.transport.info
    rng = np.random.default_rng(4)
    for i in range(70):
        member = 810000000000000000 + i
        ws = (rng.standard_normal((info.num_ws, info.w_dim)) * 0.3).astype(np.float32)
        await storage.save_latent(sim.guild_id, member, bot.services.model_id, ws, "project")
        await storage.set_share(sim.guild_id, member, True)
    monkeypatch.setattr(running, "QUIET_SECONDS", 1.5)
    before = sum(1 for _, path in sim.requests if "/members/" in path)
    inter = await finished(sim, await sim.invoke(ALICE, "lookalike"), 240)
    assert "Nearest member" in inter.last_content() and "lookalike.png" in inter.all_files(), inter.last_content()
    lookups = sum(1 for _, path in sim.requests if "/members/" in path) - before
    assert lookups <= 2 * 64, lookups
    times = [m.at for m in inter.messages]
    assert max(b - a for a, b in zip(times, times[1:])) < 1.5 + 2.5, "never long without an edit"


async def test_a_stop_button_pressed_after_its_job_ended_gets_a_private_answer(env):
    from tests.test_bot_e2e import stop_button

    sim, _ = env
    inter = await project(sim, BOB, PHOTO, "s.jpg", "image/jpeg", steps=200)
    custom_id = await sim.wait_for(lambda: stop_button(inter), 60)
    await finished(sim, inter, 180)
    late = await sim.click(BOB, custom_id, inter)
    await sim.wait_for(lambda: late.messages, 10)
    assert "already finished" in late.last_content() and late.messages[0].payload["data"]["flags"] & 64
