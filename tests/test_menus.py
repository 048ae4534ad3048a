"""Right-click commands and user installs, end to end: the real bot over the simulator's
websocket and HTTP, a real engine. A menu is its slash command: the same consent, budgets,
refunds and answers."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.bot_harness import running_bot
from tests.discord_sim import snowflake
from tests.photos import encode, grace_hopper

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE, BOB, CAROL = 800000000000000011, 800000000000000012, 800000000000000013
USER_MENU, MESSAGE_MENU = 2, 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    async with running_bot(tmp_path_factory.mktemp("menus"), engine={"batch": 2}, member_rate=50,
                           per_member_queued=3, stranger_seconds=5) as (sim, bot):
        yield sim, bot


async def finished(sim, inter, timeout=120):
    def done():
        last = inter.last_content() if inter.messages else None
        return last and not any(w in last for w in ("working on it", "queued", "step ", "frame ", "first guess"))
    await sim.wait_for(done, timeout)
    return inter


async def on_member(sim, user_id: int, menu: str, target: int):
    return await finished(sim, await sim.invoke(user_id, menu, target=target,
                                                resolved=sim.member_resolved(target)))


async def on_message(sim, user_id: int, author: int, attachments: list[dict]):
    message_id = snowflake()
    return await finished(sim, await sim.invoke(user_id, "Project this photo", target=message_id,
                                                resolved=sim.message_resolved(message_id, author, attachments)))


async def test_the_menus_and_installs_are_registered(env):
    sim, _ = env
    kinds = {c["name"]: c["type"] for c in sim.commands}
    assert kinds["Blend with me"] == kinds["Morph with me"] == kinds["Look-alike"] == USER_MENU
    assert kinds["Project this photo"] == MESSAGE_MENU
    project = next(c for c in sim.commands if c["name"] == "project")
    assert sorted(project["integration_types"]) == [0, 1] and sorted(project["contexts"]) == [0, 1, 2]
    admin = next(c for c in sim.commands if c["name"] == "wspace")
    assert admin["integration_types"] == [0] and admin["contexts"] == [0], "administration stays in servers"


async def test_project_this_photo_keeps_the_face_of_ones_own_message(env):
    sim, bot = env
    photo = sim.add_attachment(encode(grace_hopper(), "JPEG"), "me.jpg", "image/jpeg")
    someone_elses = await on_message(sim, BOB, ALICE, [photo])
    assert "only a photo you posted yourself" in someone_elses.last_content()
    assert await bot.services.storage.latent(sim.guild_id, BOB, bot.services.model_id) is None
    no_photo = await on_message(sim, ALICE, ALICE, [sim.add_attachment(b"notes", "notes.txt", "text/plain")])
    assert "no photo attached" in no_photo.last_content()
    inter = await on_message(sim, ALICE, ALICE, [photo])
    assert "projected.png" in inter.all_files(), inter.last_content()
    assert await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id) is not None


async def test_blend_with_me_asks_consent_and_charges_the_blends_budget(env):
    sim, bot = env
    photo = sim.add_attachment(encode(grace_hopper()[:, ::-1].copy(), "PNG"), "bo.png", "image/png")
    assert "projected.png" in (await on_message(sim, BOB, BOB, [photo])).all_files()
    private = await on_member(sim, ALICE, "Blend with me", BOB)
    assert "keeps their face private" in private.last_content()
    assert "your own face" in (await on_member(sim, ALICE, "Blend with me", ALICE)).last_content()
    share = await sim.invoke(BOB, "privacy", [{"name": "share", "type": 3, "value": "on"}])
    await sim.wait_for(lambda: share.messages, 10)
    budget = bot.services.limits.member
    before = sum(c for _, c in budget.spent.get((sim.guild_id, ALICE), ()))
    blend = await on_member(sim, ALICE, "Blend with me", BOB)
    assert "blend.png" in blend.all_files(), blend.last_content()
    spent = sum(c for _, c in budget.spent.get((sim.guild_id, ALICE), ())) - before
    assert spent == pytest.approx(bot.services.limits.cost("blend"))


async def test_morph_with_me_and_look_alike(env):
    sim, _ = env
    morph = await on_member(sim, ALICE, "Morph with me", BOB)
    assert "morph.gif" in morph.all_files(), morph.last_content()
    assert "needs two faces" in (await on_member(sim, ALICE, "Morph with me", ALICE)).last_content()
    look = await on_member(sim, ALICE, "Look-alike", BOB)
    assert "stranger.png" in look.all_files(), look.last_content()
    assert "keeps their face private" in (await on_member(sim, BOB, "Look-alike", CAROL)).last_content()


async def test_a_user_install_works_in_dms_and_is_refused_in_a_server_without_the_bot(env):
    sim, _ = env
    elsewhere = await sim.invoke(CAROL, "me", user_install=True)
    await sim.wait_for(lambda: elsewhere.messages, 10)
    assert "not a member of this server" in elsewhere.last_content()
    group = await finished(sim, await sim.invoke(CAROL, "me", dm="group"))
    assert "in direct messages" in group.last_content(), group.last_content()
    photo = sim.add_attachment(encode(grace_hopper(), "JPEG"), "me.jpg", "image/jpeg")
    inter = await finished(sim, await sim.invoke(
        CAROL, "project", [{"name": "image", "type": 11, "value": photo["id"]}],
        resolved={"attachments": {photo["id"]: photo}}, dm="group"))
    assert "projected.png" in inter.all_files(), inter.last_content()
    mine = await finished(sim, await sim.invoke(CAROL, "me", dm=True))
    assert "face.png" in mine.all_files(), "a group DM's face is the member's DM face"


async def test_discord_is_told_the_split_range_the_loaded_model_takes(env):
    sim, bot = env
    most = bot.services.transport.info.num_ws - 1

    def split_max(name: str):
        command = next((c for c in sim.commands if c["name"] == name), None)
        option = next((o for o in (command or {}).get("options", []) if o["name"] == "split"), None)
        return option and option.get("max_value")

    await sim.wait_for(lambda: split_max("mix") == split_max("swap") == most, 30)
