"""The real bot, end to end: discord.py over a real websocket and HTTP to the local
Discord simulator, a real engine process, a real SQLite file."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE, BOB, CAROL = 800000000000000001, 800000000000000002, 800000000000000003
MANAGE_GUILD = 1 << 5
SHOWN: dict[int, np.ndarray] = {}  # the projected.png each member was shown


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    async with running_bot(tmp_path_factory.mktemp("bot"), engine={"batch": 2}, member_rate=50,
                           per_member_queued=3) as (sim, bot):
        yield sim, bot


def option(name, value, type_):
    return {"name": name, "type": type_, "value": value}


def user_option(name, user_id):
    return {"name": name, "type": 6, "value": str(user_id)}


async def project(sim, user_id, data: bytes, filename="me.png", content_type="image/png", steps=20):
    att = sim.add_attachment(data, filename, content_type)
    resolved = {"attachments": {att["id"]: att}}
    inter = await sim.invoke(user_id, "project", [option("image", att["id"], 11), option("steps", steps, 4)],
                             resolved=resolved)
    return inter


async def finished(sim, inter, timeout=120):
    """Wait until the bot's last message for an interaction is final (not progress)."""
    def done():
        if not inter.messages:
            return False
        last = inter.last_content()
        return last and not any(w in last for w in ("working on it", "queued", "step ", "frame ", "first guess"))
    await sim.wait_for(done, timeout)
    return inter


def png_of(files: dict, name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(files[name])))


async def test_commands_are_registered(env):
    sim, bot = env
    names = {c["name"] for c in sim.commands}
    assert {"project", "me", "blend", "average", "mix", "age", "edit", "morph", "loop", "random", "adopt",
            "grid", "swap", "privacy", "forget", "wspace"} <= names
    admin = next(c for c in sim.commands if c["name"] == "wspace")
    assert int(admin["default_member_permissions"]) & MANAGE_GUILD

    def option_of(command: str, name: str) -> dict:
        cmd = next(c for c in sim.commands if c["name"] == command)
        return next(o for o in cmd["options"] if o["name"] == name)

    # Discord itself refuses what this server's settings would refuse: the ranges it shows are the bot's.
    limits = bot.settings.limits
    assert option_of("project", "steps")["max_value"] == limits.max_project_steps
    assert option_of("morph", "frames")["max_value"] == option_of("team", "frames")["max_value"] == limits.max_frames
    assert option_of("edit", "attribute")["max_length"] == 64


async def test_the_bot_talks_to_discord_over_a_bounded_connection_pool(env):
    """A burst of interactions must reuse a few open connections, not open one each
    (discord.py's own default pool has no limit)."""
    sim, bot = env
    assert bot.http.connector.limit == bot.settings.discord.http_connections == 32
    dave = 800000000000000004
    inters = [await sim.invoke(dave, "me") for _ in range(3)]
    for inter in inters:
        await finished(sim, inter, 60)
    assert all(i.ack_seconds is not None for i in inters)
    assert "don't have a face yet" in inters[-1].last_content()
    assert bot.http.connector.limit == 32, "the pool the answers went through"


async def test_project_defers_at_once_then_delivers_pictures_and_stores_the_latent(env):
    sim, bot = env
    inter = await project(sim, ALICE, encode(grace_hopper(), "JPEG"), "grace.jpg", "image/jpeg")
    await sim.wait_for(lambda: inter.acked_at is not None, 10)
    assert inter.callback_type == 5 and inter.ack_seconds < 3
    await finished(sim, inter)
    final = inter.messages[-1]
    assert "likeness" in final.content, final.content
    assert {"side_by_side.png", "progress.gif", "aligned.png", "projected.png"} <= set(final.files)
    assert png_of(final.files, "projected.png").shape[2] == 3
    SHOWN[ALICE] = png_of(final.files, "projected.png")
    gif = Image.open(io.BytesIO(final.files["progress.gif"]))
    assert gif.n_frames > 2
    assert any("step" in (m.content or "") for m in inter.messages[:-1]), "progress was shown"
    assert final.payload.get("components"), "next-step buttons are attached"
    stored = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
    assert stored is not None and stored.ws.shape == (
        bot.services.transport.info.num_ws,
        bot.services.transport.info.w_dim,
    )
    # the selfie itself lives only in memory: nothing in the bot's directory holds its bytes
    photo = encode(grace_hopper(), "JPEG")
    workdir = Path(bot.services.settings.storage.database).parent
    for path in workdir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert photo[1000:1064] not in data, f"{path.name} holds the selfie"
            assert not data.startswith((b"\xff\xd8", b"\x89PNG")), f"{path.name} is an image"


async def test_me_renders_the_stored_face(env):
    sim, bot = env
    inter = await finished(sim, await sim.invoke(ALICE, "me"))
    assert "face.png" in inter.all_files()
    face = np.asarray(Image.open(io.BytesIO(inter.all_files()["face.png"])))
    assert np.array_equal(face, SHOWN[ALICE]), "/me draws exactly the face /project showed"
    stored = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
    assert stored.noise is not None, "the kept face holds its noise maps"


async def test_not_an_image_gets_one_sentence_and_nothing_changes(env):
    sim, bot = env
    before = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
    inter = await finished(sim, await project(sim, ALICE, b"definitely not a png", "x.png"))
    msg = inter.last_content()
    assert "not an image" in msg and "\n" not in msg
    after = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
    assert np.array_equal(before.ws, after.ws)


async def test_photo_without_a_face(env):
    sim, _ = env
    sky = np.full((200, 200, 3), (120, 170, 230), np.uint8)
    inter = await finished(sim, await project(sim, BOB, encode(sky)))
    assert "could not find a face" in inter.last_content()


async def test_non_image_content_type_is_refused_before_download(env):
    sim, _ = env
    inter = await finished(sim, await project(sim, BOB, b"%PDF-1.4", "cv.pdf", "application/pdf"))
    assert "not an image" in inter.last_content()


async def test_blend_respects_consent(env):
    sim, bot = env
    await bot.services.storage.save_latent(
        sim.guild_id,
        BOB,
        bot.services.model_id,
        np.random.default_rng(0)
        .standard_normal((bot.services.transport.info.num_ws, bot.services.transport.info.w_dim))
        .astype(np.float32),
        "test",
    )
    opts = [user_option("a", ALICE), user_option("b", BOB), option("ratio", 0.5, 10)]
    inter = await finished(sim, await sim.invoke(ALICE, "blend", opts, resolved=sim.member_resolved(ALICE, BOB)))
    assert "keeps their face private" in inter.last_content()
    await sim.invoke(BOB, "privacy", [option("share", "on", 3)])
    await sim.wait_for(lambda: bot.services is not None)
    await sim.wait_for(
        lambda: any(
            "Sharing is on" in (m.content or "")
            for i in sim.interactions.values()
            if i.user_id == BOB
            for m in i.messages
        ),
        10,
    )
    inter = await finished(sim, await sim.invoke(ALICE, "blend", opts, resolved=sim.member_resolved(ALICE, BOB)))
    assert "blend.png" in inter.all_files(), inter.last_content()


async def test_member_without_a_face(env):
    sim, _ = env
    opts = [user_option("a", ALICE), user_option("b", CAROL)]
    inter = await finished(sim, await sim.invoke(ALICE, "blend", opts, resolved=sim.member_resolved(ALICE, CAROL)))
    text = inter.last_content()
    assert "private" in text or "hasn't projected" in text


async def test_random_then_adopt(env):
    sim, bot = env
    inter = await finished(sim, await sim.invoke(CAROL, "random", [option("seed", 42, 4)]))
    assert "seed42.png" in inter.all_files()
    adopt = await sim.invoke(CAROL, "adopt")
    await sim.wait_for(lambda: adopt.messages, 10)
    assert "Adopted" in adopt.last_content()
    assert await bot.services.storage.latent(sim.guild_id, CAROL, bot.services.model_id) is not None


async def test_morph_of_everyone_who_shares_is_a_looping_gif(env):
    sim, bot = env
    await bot.services.storage.set_share(sim.guild_id, CAROL, True)
    inter = await finished(sim, await sim.invoke(ALICE, "morph", [option("frames", 16, 4)]), timeout=180)
    files = inter.all_files()
    assert "morph.gif" in files, inter.last_content()
    gif = Image.open(io.BytesIO(files["morph.gif"]))
    assert gif.n_frames >= 8 and gif.info.get("loop") == 0


async def test_a_member_who_left_is_never_used(env):
    sim, bot = env
    sharing = await bot.services.storage.sharing_members_with_latents(sim.guild_id, bot.services.model_id)
    assert BOB in sharing and CAROL in sharing
    sim.left_members.add(BOB)
    try:
        opts = [user_option("a", ALICE), user_option("b", BOB)]
        inter = await finished(sim, await sim.invoke(ALICE, "blend", opts, resolved=sim.member_resolved(ALICE, BOB)))
        assert "is not in this server any more" in inter.last_content()
        inter = await finished(sim, await sim.invoke(ALICE, "morph", [option("users", f"<@{BOB}> <@{CAROL}>", 3)]))
        assert "is not in this server any more" in inter.last_content()
        inter = await finished(sim, await sim.invoke(ALICE, "morph", [option("frames", 8, 4)]), timeout=180)
        assert f"morph of {len(set(sharing) | {ALICE}) - 1} faces" in inter.last_content(), inter.last_content()
    finally:
        sim.left_members.discard(BOB)


async def test_average_mix_grid_loop_and_age_answer_with_pictures(env):
    sim, bot = env
    everyone = sim.member_resolved(ALICE, BOB, CAROL)
    avg = await finished(
        sim, await sim.invoke(ALICE, "average", [option("users", f"<@{BOB}> <@{CAROL}> <@!{ALICE}>", 3)])
    )
    assert "average.png" in avg.all_files(), avg.last_content()
    mix = await finished(
        sim, await sim.invoke(ALICE, "mix", [user_option("coarse", BOB), user_option("fine", CAROL)], resolved=everyone)
    )
    assert "mix_strip.png" in mix.all_files(), mix.last_content()
    grid = await finished(
        sim,
        await sim.invoke(
            ALICE, "grid", [user_option("a", ALICE), user_option("b", BOB), user_option("c", CAROL)], resolved=everyone
        ),
    )
    assert "grid.png" in grid.all_files(), grid.last_content()
    swap = await finished(
        sim, await sim.invoke(ALICE, "swap", [user_option("a", BOB), user_option("b", CAROL)], resolved=everyone)
    )
    assert "swap.png" in swap.all_files() and "swapped" in swap.last_content(), swap.last_content()
    strip = png_of(swap.all_files(), "swap.png")
    quarter = strip.shape[1] // 4
    assert not np.array_equal(strip[:, 2 * quarter : 3 * quarter], strip[:, 3 * quarter :]), (
        "the two swapped faces differ"
    )
    loop = await finished(sim, await sim.invoke(ALICE, "loop"))
    gif = Image.open(io.BytesIO(loop.all_files()["loop.gif"]))
    assert gif.n_frames >= 8 and gif.info.get("loop") == 0
    age = await finished(sim, await sim.invoke(ALICE, "age", [option("amount", 3.0, 10)]))
    if "age" in bot.services.transport.info.directions:
        assert "age.png" in age.all_files(), age.last_content()
    else:
        assert "don't know the direction 'age'" in age.last_content()
    unknown = await finished(
        sim, await sim.invoke(ALICE, "edit", [option("attribute", "wings", 3), option("amount", 1.0, 10)])
    )
    assert "don't know the direction 'wings'" in unknown.last_content()
    too_few = await finished(sim, await sim.invoke(ALICE, "average", [option("users", "nobody", 3)]))
    assert "at least two" in too_few.last_content()


async def test_a_face_kept_by_the_old_projector_is_told_once_and_left_as_it_is(env):
    """A member whose face an older projector kept reads, once, that a fresh /project gives better
    blends and edits; their face is drawn exactly as before, and another member using it is not told."""
    sim, bot = env
    svc = bot.services
    info = svc.transport.info
    ws = np.random.default_rng(7).standard_normal((info.num_ws, info.w_dim)).astype(np.float32)
    await svc.storage.save_latent(sim.guild_id, CAROL, svc.model_id, ws, "project", projector=None)
    await svc.storage.set_share(sim.guild_id, CAROL, True)
    other = await finished(sim, await sim.invoke(ALICE, "me", [user_option("user", CAROL)],
                                                 resolved=sim.member_resolved(CAROL)))
    assert "face.png" in other.all_files() and "older projector" not in other.last_content()
    first = await finished(sim, await sim.invoke(CAROL, "me"))
    assert "older projector" in first.last_content() and "fresh /project" in first.last_content()
    again = await finished(sim, await sim.invoke(CAROL, "age", [option("amount", 1.0, 10)]))
    assert "older projector" not in again.last_content(), "said once"
    assert np.array_equal(first.all_files()["face.png"], other.all_files()["face.png"])
    stored = await svc.storage.latent(sim.guild_id, CAROL, svc.model_id)
    assert np.array_equal(stored.ws, ws) and stored.outdated and stored.refresh_told


async def test_admin_commands_need_manage_server(env):
    sim, _ = env
    denied = await sim.invoke(ALICE, "wspace", subcommand="stats")
    await sim.wait_for(lambda: denied.messages, 10)
    assert "Manage Server" in denied.last_content()
    allowed = await sim.invoke(ALICE, "wspace", subcommand="stats", permissions=MANAGE_GUILD)
    await sim.wait_for(lambda: allowed.messages, 10)
    assert "Queue" in allowed.last_content() and "model" in allowed.last_content()


async def test_forget_deletes_every_row(env):
    sim, bot = env
    assert await bot.services.storage.rows_about(sim.guild_id, ALICE) > 0
    inter = await sim.invoke(ALICE, "forget")
    await sim.wait_for(lambda: inter.messages, 10)
    assert "deleted" in inter.last_content()
    assert await bot.services.storage.rows_about(sim.guild_id, ALICE) == 0
    db = sqlite3.connect(bot.services.storage.path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for table in ("members", "latents", "pending_latents", "jobs"):
        assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", (ALICE,)).fetchone() == (0,)


async def test_buttons_under_a_projection_keep_working(env):
    sim, bot = env
    inter = await finished(sim, await project(sim, BOB, encode(grace_hopper(), "JPEG"), "g.jpg", "image/jpeg"))
    rows = inter.messages[-1].payload["components"]
    ids = [c["custom_id"] for row in rows for c in row["components"]]
    assert any(i.startswith("wspace:edit:age:") for i in ids)
    older = next(i for i in ids if i.startswith("wspace:edit:age:2"))
    click = await finished(sim, await sim.click(BOB, older, inter))
    if "age" in bot.services.transport.info.directions:
        assert "age.png" in click.all_files(), click.last_content()
    else:
        assert "don't know the direction" in click.last_content()


async def test_the_running_bot_keeps_a_fresh_heartbeat_for_health_checks(env, monkeypatch, tmp_path):
    import json as _json
    import time

    from typer.testing import CliRunner

    from bot.cli import app
    from bot.config import heartbeat_path

    sim, bot = env
    path = heartbeat_path(bot.settings)
    await sim.wait_for(path.exists, 10)
    beat = _json.loads(path.read_text())
    assert time.time() - beat["time"] < 60 and beat["engine_ready"]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[storage]\ndatabase = "{bot.settings.storage.database}"\n')
    monkeypatch.setenv("WSPACE_CONFIG", str(cfg))  # what the Docker image's HEALTHCHECK uses
    r = CliRunner().invoke(app, ["health"])
    assert r.exit_code == 0 and "healthy" in r.output, r.output
    path.write_text(_json.dumps({"time": time.time() - 3600}))
    r = CliRunner().invoke(app, ["health"])
    assert r.exit_code == 1 and "unhealthy" in r.output


async def test_queue_positions_move_while_members_wait(env):
    """Two projections fill the engine's two slots (this module's engine.batch = 2); of two
    members waiting behind them, the second sees "position 3" become "position 2" when one
    ahead of them finishes."""
    sim, _ = env
    dan, erin, fay, gus = 800000000000000011, 800000000000000012, 800000000000000013, 800000000000000014
    slow = await project(sim, dan, encode(grace_hopper(), "JPEG"), "d.jpg", "image/jpeg", steps=400)
    await sim.wait_for(lambda: any("step" in (m.content or "") for m in slow.messages), 60)
    first = await project(sim, erin, encode(grace_hopper(), "JPEG"), "e.jpg", "image/jpeg", steps=120)
    await sim.wait_for(lambda: any("step" in (m.content or "") for m in first.messages), 60)
    waiting = await project(sim, fay, encode(grace_hopper(), "JPEG"), "f.jpg", "image/jpeg", steps=60)
    await sim.wait_for(lambda: any("position 2" in (m.content or "") for m in waiting.messages), 30)
    second = await sim.invoke(gus, "random", [option("seed", 12, 4)])
    await finished(sim, second, 180)
    contents = [m.content or "" for m in second.messages]
    import re

    shown = [int(m.group(1)) for c in contents if (m := re.search(r"position (\d+)", c))]
    assert len(shown) >= 2 and shown == sorted(shown, reverse=True) and shown[0] == 3 and shown[-1] == 2, contents
    await finished(sim, waiting, 60)
    assert "seed12.png" in second.all_files()
    await finished(sim, first, 60)
    await finished(sim, slow, 120)


def stop_button(inter) -> str | None:
    """The custom id of the Stop button the member's message shows now, if any."""
    ids = [c.get("custom_id", "") for row in inter.components for c in row.get("components", [])]
    return next((i for i in ids if i.startswith("wspace:stop:")), None)


@pytest.mark.parametrize("who", ["owner", "moderator"])
async def test_a_running_projection_can_be_stopped_by_its_member_or_a_moderator(env, who):
    sim, bot = env
    member = {"owner": 800000000000000021, "moderator": 800000000000000022}[who]
    svc = bot.services
    confirmed = svc.transport.stops_confirmed
    inter = await project(sim, member, encode(grace_hopper(), "JPEG"), "s.jpg", "image/jpeg", steps=1000)
    custom_id = await sim.wait_for(lambda: stop_button(inter), 60)
    job_id = custom_id.rsplit(":", 1)[1]
    intruder = await sim.click(BOB, custom_id, inter)
    await sim.wait_for(lambda: intruder.messages, 10)
    assert intruder.messages[0].payload["data"]["flags"] & 64, "the refusal is private"
    assert "Only the member who started this job" in intruder.last_content()
    assert job_id in svc.stoppable, "someone else's press stops nothing"
    press = await sim.click(
        member if who == "owner" else CAROL, custom_id, inter, permissions=MANAGE_GUILD if who == "moderator" else 0
    )
    await sim.wait_for(lambda: press.acked_at is not None, 10)
    await sim.wait_for(lambda: "topped" in inter.last_content(), 30)
    assert inter.last_content() == ("Stopped, as you asked." if who == "owner" else "A moderator stopped this.")
    assert inter.components == [], "the Stop button is gone with the job"
    assert await svc.storage.latent(sim.guild_id, member, svc.model_id) is None, "nothing was kept"
    db = sqlite3.connect(svc.storage.path)
    assert db.execute("SELECT status, error FROM jobs WHERE id = ?", (job_id,)).fetchone() == ("failed", "cancelled")
    assert job_id not in svc.stoppable and not svc.queued[(sim.guild_id, member)]
    await sim.wait_for(lambda: svc.transport.stops_confirmed == confirmed + 1, 30)  # the engine gave up on it
    assert (await svc.storage.stats(sim.guild_id))["jobs"]["stopped"] == (1 if who == "owner" else 2)
