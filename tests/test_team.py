"""The whole team from one photo, through the real bot and the simulator: choosing one's
face from a group photo, /team, /claim, /forget and expiry of unclaimed team faces, and
/lookalike; plus the engine's and the CLI's side of the same."""

from __future__ import annotations

import asyncio
import io
import sqlite3

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from typer.testing import CliRunner

from engine.jobs.dispatch import run
from engine.protocol import BadArgument, FacesRequest, ProjectRequest, TeamRequest
from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper, group_photo
from tests.test_bot_e2e import ALICE, BOB, CAROL, finished, option

on_the_bot = pytest.mark.asyncio(loop_scope="module")
GROUP = encode(group_photo()[0], "JPEG", quality=92)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    async with running_bot(tmp_path_factory.mktemp("team"), team_steps=5, stranger_seconds=5,
                           team_face_hours=0.01) as pair:
        yield pair


async def upload(sim, user_id: int, command: str, data: bytes, *options):
    att = sim.add_attachment(data, "group.jpg", "image/jpeg")
    return await sim.invoke(user_id, command, [option("image", att["id"], 11), *options],
                            resolved={"attachments": {att["id"]: att}})


def select_of(inter) -> tuple[str, list[str]]:
    rows = inter.messages[-1].payload["components"]
    menu = next(c for row in rows for c in row["components"] if c["type"] == 3)
    return menu["custom_id"], [o["value"] for o in menu["options"]]


@on_the_bot
async def test_a_group_photo_asks_which_face_and_projects_the_one_chosen(env):
    sim, bot = env
    inter = await upload(sim, ALICE, "project", GROUP)
    await sim.wait_for(lambda: "Which one is you?" in inter.last_content(), 60)
    assert "I found 6 faces" in inter.last_content() and "faces.png" in inter.all_files()
    menu = inter.messages[-1]  # the montage and the menu: for the sender's eyes only
    assert menu.kind == "followup" and menu.payload.get("flags", 0) & 64, menu.payload
    assert not any("faces.png" in m.files for m in inter.messages[:-1]), "nothing of the group photo went public"
    custom_id, values = select_of(inter)
    assert values == [str(i) for i in range(1, 7)], "one option per face, largest first"
    intruder = await sim.click(BOB, custom_id, inter, values=["2"])
    await sim.wait_for(lambda: intruder.messages, 10)
    assert "Only the member who sent the photo" in intruder.last_content()
    choice = await sim.click(ALICE, custom_id, inter, values=["3"])
    await sim.wait_for(lambda: choice.callback_type is not None, 10)
    await finished(sim, inter, 120)
    assert "face 3" in inter.last_content() and "likeness" in inter.last_content(), inter.last_content()
    assert "side_by_side.png" in inter.all_files()
    aligned_shown = np.asarray(Image.open(io.BytesIO(inter.all_files()["side_by_side.png"])))
    kept = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
    assert kept is not None and kept.noise is not None
    assert aligned_shown.shape[1] > aligned_shown.shape[0], "the photo's face 3 beside the kept face"
    late = await sim.click(ALICE, custom_id, inter, values=["2"])  # the menu again, after its job ended
    await sim.wait_for(lambda: late.messages, 10)
    assert "expired" in late.last_content() and late.messages[-1].payload.get("data", {}).get("flags", 0) & 64


@on_the_bot
async def test_a_single_face_goes_straight_to_the_projection(env):
    sim, _ = env
    inter = await upload(sim, CAROL, "project", encode(grace_hopper(), "JPEG"))
    await finished(sim, inter, 120)
    assert "likeness" in inter.last_content() and "Which one" not in " ".join(m.content or "" for m in inter.messages)


@on_the_bot
async def test_team_morphs_every_face_and_claim_adopts_one(env):
    sim, bot = env
    inter = await upload(sim, ALICE, "team", GROUP, option("frames", 12, 4))
    await finished(sim, inter, 240)
    files = inter.all_files()
    assert "team.gif" in files and "team_faces.png" in files, inter.last_content()
    tiles = Image.open(io.BytesIO(files["team_faces.png"]))  # six 2:1 pairs (photo | kept face) in a row
    assert tiles.width / tiles.height > 9, "each pair keeps its aspect, not squeezed into a square"
    gif = Image.open(io.BytesIO(files["team.gif"]))
    assert gif.n_frames >= 8 and gif.info.get("loop") == 0
    text = inter.last_content()
    assert "6 faces projected" in text and "/claim" in text and "nobody's face until claimed" in text, text
    db = sqlite3.connect(bot.services.storage.path)
    assert db.execute("SELECT COUNT(*) FROM team_faces").fetchone() == (6,)
    assert bot.services.storage and await bot.services.storage.latent(sim.guild_id, BOB, bot.services.model_id) is None
    claim = await sim.invoke(BOB, "claim", [option("number", 2, 4)])
    await sim.wait_for(lambda: claim.messages, 10)
    assert "is your face now" in claim.last_content(), claim.last_content()
    mine = await bot.services.storage.latent(sim.guild_id, BOB, bot.services.model_id)
    assert mine is not None and mine.source == "team"
    again = await sim.invoke(CAROL, "claim", [option("number", 2, 4)])
    await sim.wait_for(lambda: again.messages, 10)
    assert "not one of the unclaimed faces" in again.last_content()
    from tests.test_bot_faults import private

    assert private(again), "a refused /claim is told to the member alone, as every refusal"
    assert db.execute("SELECT COUNT(*) FROM team_faces").fetchone() == (5,)
    # Two members claim face 3 at the same moment: one gets it, the other one sentence.
    dave = 800000000000000004
    race = await asyncio.gather(sim.invoke(CAROL, "claim", [option("number", 3, 4)]),
                                sim.invoke(dave, "claim", [option("number", 3, 4)]))
    await sim.wait_for(lambda: all(r.messages for r in race), 10)
    won = [r for r in race if "is your face now" in r.last_content()]
    lost = [r for r in race if "is your face now" not in r.last_content()]
    assert len(won) == 1 and len(lost) == 1, [r.last_content() for r in race]
    assert ("a moment before you" in lost[0].last_content() or "not one of the unclaimed" in lost[0].last_content())
    kept = [await bot.services.storage.latent(sim.guild_id, u, bot.services.model_id) for u in (CAROL, dave)]
    assert sum(k is not None for k in kept) == 1, "only the winner keeps the face"
    assert db.execute("SELECT COUNT(*) FROM team_faces").fetchone() == (4,)
    forget = await sim.invoke(ALICE, "forget")
    await sim.wait_for(lambda: forget.messages, 10)
    assert db.execute("SELECT COUNT(*) FROM team_faces").fetchone() == (0,), "/forget by whoever ran /team deletes them"
    assert await bot.services.storage.latent(sim.guild_id, BOB, bot.services.model_id) is not None, (
        "a claimed face is Bob's"
    )


@on_the_bot
async def test_unclaimed_team_faces_expire(env):
    sim, bot = env
    inter = await upload(sim, CAROL, "team", GROUP, option("frames", 8, 4))
    await finished(sim, inter, 240)
    db = sqlite3.connect(bot.services.storage.path)
    assert db.execute("SELECT COUNT(*) FROM team_faces").fetchone()[0] == 6
    await sim.wait_for(lambda: db.execute("SELECT COUNT(*) FROM team_faces").fetchone()[0] == 0, 60)  # 36 s lifetime
    claim = await sim.invoke(BOB, "claim", [option("number", 1, 4)])
    await sim.wait_for(lambda: claim.messages, 10)
    assert "no /team photo in this channel" in claim.last_content()


@on_the_bot
async def test_lookalike_names_the_nearest_member_and_finds_a_stranger(env):
    sim, bot = env
    share = await sim.invoke(BOB, "privacy", [option("share", "on", 3)])
    await sim.wait_for(lambda: share.messages, 10)
    inter = await finished(sim, await sim.invoke(CAROL, "lookalike"), 120)
    text = inter.last_content()
    assert "Nearest member" in text and "stranger" in text.lower(), text
    assert "stranger.png" in inter.all_files() and "search_curve.png" in inter.all_files()
    assert "lookalike.png" in inter.all_files(), "the nearest member's picture is shown (both share)"


def test_a_lookalike_among_many_members_answers_with_the_nearest_few(tiny_model):
    """Any number of members (here more than a wire list holds): the answer crosses the wire."""
    import torch

    from engine.jobs.engine import Engine
    from engine.protocol import LookalikeRequest, Result, as_face, wire

    engine = Engine(tiny_model)
    G = engine.G
    ws = G.mapping(torch.randn(71, G.z_dim, generator=torch.Generator().manual_seed(2))).detach().numpy()
    req = LookalikeRequest(face=as_face(ws[0]), others=tuple(as_face(w) for w in ws[1:]))
    result = wire.loads(wire.dumps(run(engine, req)), expect=Result)
    assert 1 <= result.figures["nearest"] <= 70 and len(result.figures["nearest_distances"]) <= 8
    assert result.figures["nearest_distances"] == sorted(result.figures["nearest_distances"])


def test_the_engine_numbers_faces_and_projects_the_one_asked(tiny_model):
    from engine.jobs.engine import Engine

    engine = Engine(tiny_model)
    found = run(engine, FacesRequest(image=GROUP))
    assert found.figures["faces"] == 6 and len(found.files) == 7
    third = run(engine, ProjectRequest(image=GROUP, steps=2, face=3))
    crop = next(f for f in found.files if f.name == "face_3.png").data
    assert next(f for f in third.files if f.name == "aligned.png").data == crop, "face 3 is the montage's face 3"
    assert third.figures["face_used"] == "number 3" and "used number 3" in third.text
    ask = run(engine, ProjectRequest(image=GROUP, steps=2, ask_if_several=True))
    assert ask.choose == ask.figures["faces"] == 6 and not ask.faces, (
        "several faces: the member chooses first"
    )
    one = run(engine, ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=2, ask_if_several=True))
    assert len(one.faces) == 1 and not one.choose, "one face: projected in the same job"
    with pytest.raises(BadArgument, match="choose a number from 1 to 6"):
        run(engine, ProjectRequest(image=GROUP, steps=2, face=7))
    team = run(engine, TeamRequest(image=GROUP, steps=2, frames=8))
    assert len(team.faces) == 6 and team.files[0].name == "team.gif"


def test_faces_too_small_are_skipped_with_a_reason(tiny_model):
    from engine.jobs.engine import Engine

    img, _ = group_photo()
    half = np.asarray(Image.fromarray(img).resize((img.shape[1] // 2, img.shape[0] // 2), Image.Resampling.LANCZOS))
    found = run(Engine(tiny_model), FacesRequest(image=encode(half, "PNG")))
    skipped = found.figures["skipped"]
    assert found.figures["faces"] + len(skipped) == 6 and found.figures["faces"] >= 3, found.figures
    assert skipped and all("too small to align" in s for s in skipped), found.figures
    assert "Skipped" in found.text


def test_cli_faces_project_face_team_and_lookalike(tmp_path, tiny_model):
    from engine.cli.commands import app

    runner = CliRunner()
    photo = tmp_path / "group.jpg"
    photo.write_bytes(GROUP)
    m = ["-m", str(tiny_model)]
    r = runner.invoke(app, ["faces", str(photo), "-o", str(tmp_path / "faces"), *m])
    assert r.exit_code == 0 and "I found 6 faces" in r.output, r.output
    assert (tmp_path / "faces" / "faces.png").exists() and (tmp_path / "faces" / "face_6.png").exists()
    r = runner.invoke(app, ["project", str(photo), "--face", "4", "--steps", "2", "-o", str(tmp_path / "p4"), *m])
    assert r.exit_code == 0 and "used number 4" in r.output, r.output
    assert (tmp_path / "p4" / "aligned.png").read_bytes() == (tmp_path / "faces" / "face_4.png").read_bytes()
    r = runner.invoke(app, ["project", str(photo), "--steps", "2", "-o", str(tmp_path / "p1"), *m])
    assert "used the largest (choose another with --face N" in r.output, r.output
    r = runner.invoke(app, ["team", str(photo), "--steps", "2", "--frames", "8", "-o", str(tmp_path / "team"), *m])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "team" / "team.gif").exists() and len(list((tmp_path / "team").glob("latent_*.npz"))) == 6
    r = runner.invoke(
        app, ["lookalike", str(tmp_path / "p4" / "latent.npz"), "--seconds", "5", "-o", str(tmp_path / "l"), *m]
    )
    assert r.exit_code == 0 and "A stranger who does not exist" in r.output and "-#" not in r.output, r.output
    assert (tmp_path / "l" / "stranger.png").exists() and (tmp_path / "l" / "latent.npz").exists()
