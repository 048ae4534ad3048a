"""The `wspace` console command on local files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bot.cli import full_app
from engine.cli.commands import app
from engine.model.checkpoints import load_generator, save_native

runner = CliRunner()


@pytest.fixture(scope="module")
def native_model(tmp_path_factory, ada_pkl):
    path = tmp_path_factory.mktemp("model") / "ada.safetensors"
    G = load_generator(ada_pkl)
    save_native(G, path, G.provenance, model_id=G.model_id)
    return path


def test_help_lists_the_subcommands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("generate", "model"):
        assert name in result.output
    result = runner.invoke(app, ["model", "--help"])
    for name in ("import", "fetch", "info"):
        assert name in result.output


def test_generate_writes_singles_and_a_grid(tmp_path, native_model):
    result = runner.invoke(
        app, ["generate", "--seed", "3", "--count", "4", "-o", str(tmp_path), "-m", str(native_model)]
    )
    assert result.exit_code == 0, result.output
    singles = sorted(tmp_path.glob("seed*.png"))
    assert [p.name for p in singles] == ["seed0003.png", "seed0004.png", "seed0005.png", "seed0006.png"]
    assert Image.open(singles[0]).size == (32, 32)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)
    a, b = (np.asarray(Image.open(p)) for p in singles[:2])
    assert not np.array_equal(a, b), "different seeds draw different faces"


def test_truncation_zero_draws_the_average_face_for_every_seed(tmp_path, native_model):
    result = runner.invoke(
        app, ["generate", "--count", "3", "--psi", "0", "-o", str(tmp_path), "-m", str(native_model)]
    )
    assert result.exit_code == 0, result.output
    imgs = [np.asarray(Image.open(p)) for p in sorted(tmp_path.glob("seed*.png"))]
    assert all(np.array_equal(imgs[0], im) for im in imgs[1:])


def test_bad_inputs_get_one_clear_line(tmp_path):
    result = runner.invoke(app, ["generate", "-m", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "no model file" in result.output
    result = runner.invoke(app, ["generate", "--seed", "-5", "-m", str(tmp_path / "x"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "seeds must lie between" in result.output
    (tmp_path / "notes.jpg").write_text("not a photo")
    missing = str(tmp_path / "missing.safetensors")
    for command in ("project", "faces", "team", "lookalike"):  # told before any model loads (a missing model here)
        result = runner.invoke(app, [command, str(tmp_path / "notes.jpg"), "-m", missing])
        assert result.exit_code == 1 and "is not an image I can read" in result.output, (command, result.output)
        result = runner.invoke(app, [command, str(tmp_path / "absent.jpg"), "-m", missing])
        assert result.exit_code == 1 and "no file at" in result.output, (command, result.output)


def test_model_import_and_info(tmp_path, rosinality_pt):
    out = tmp_path / "r.safetensors"
    result = runner.invoke(app, ["model", "import", str(rosinality_pt), "-o", str(out)])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["model", "info", str(out)])
    assert '"resolution": 32' in info.output and '"num_ws": 8' in info.output


def test_project_then_every_latent_command(tmp_path, native_model):
    from tests.photos import encode, grace_hopper

    photo = tmp_path / "grace.jpg"
    photo.write_bytes(encode(grace_hopper(), "JPEG"))
    m = ["-m", str(native_model)]
    r = runner.invoke(app, ["project", str(photo), "--steps", "20", "-o", str(tmp_path / "me"), *m])
    assert r.exit_code == 0, r.output
    assert {"aligned.png", "projected.png", "side_by_side.png", "progress.gif", "latent.npz"} <= {
        p.name for p in (tmp_path / "me").iterdir()
    }
    assert "likeness" in r.output and "saw 1 face; used it." in r.output
    me = str(tmp_path / "me" / "latent.npz")
    r = runner.invoke(app, ["render", me, "-o", str(tmp_path / "again"), *m])
    assert r.exit_code == 0, r.output
    shown = np.asarray(Image.open(tmp_path / "me" / "projected.png"))
    redrawn = np.asarray(Image.open(tmp_path / "again" / "face.png"))
    assert redrawn.shape == shown.shape and np.array_equal(redrawn, shown), "the kept face is the face shown"
    with np.load(me) as data:
        assert data["noise"].dtype == np.float16, "the latent file keeps the noise maps"
    r = runner.invoke(app, ["generate", "--count", "1", "-o", str(tmp_path / "g"), *m])
    assert r.exit_code == 0
    for args, produced in [
        (["blend", me, me, "--ratio", "1.5", "--layers", "coarse"], "blend.png"),
        (["mix", me, me, "--split", "3"], "mix.png"),
        (["loop", me, "--frames", "8"], "loop.gif"),
        (["grid", me, me, me, "--size", "2"], "grid.png"),
        (["morph", me, me, "--frames", "8"], "morph.gif"),
    ]:
        out = tmp_path / args[0]
        r = runner.invoke(app, [*args, "-o", str(out), *m])
        assert r.exit_code == 0, (args, r.output)
        assert (out / produced).exists()
    other = str(tmp_path / "blend" / "latent.npz")  # a second kept face: the coarse blend at 1.5
    r = runner.invoke(app, ["swap", me, other, "--split", "3", "-o", str(tmp_path / "swap"), *m])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "swap" / "swap.png").exists() and "swapped" in r.output
    with (
        np.load(me) as a,
        np.load(other) as b,
        np.load(tmp_path / "swap" / "latent_1.npz") as ab,
        np.load(tmp_path / "swap" / "latent_2.npz") as ba,
    ):
        assert np.array_equal(ab["ws"][:3], a["ws"][:3]) and np.array_equal(ab["ws"][3:], b["ws"][3:])
        assert np.array_equal(ba["ws"][:3], b["ws"][:3]) and np.array_equal(ba["ws"][3:], a["ws"][3:])
    r = runner.invoke(app, ["edit", me, "--direction", "age", "-o", str(tmp_path / "e"), *m])
    assert r.exit_code == 1 and "don't know the direction" in r.output


def test_latent_of_another_model_is_refused(tmp_path, native_model):
    import numpy as np

    bad = tmp_path / "other.npz"
    np.savez(bad, ws=np.zeros((8, 64), np.float32), model_id=np.array("another-model"))
    r = runner.invoke(app, ["blend", str(bad), str(bad), "-o", str(tmp_path), "-m", str(native_model)])
    assert r.exit_code == 1 and "was made by model another-model" in r.output
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    r = runner.invoke(app, ["render", str(junk), "-o", str(tmp_path), "-m", str(native_model)])
    assert r.exit_code == 1 and "not a wspace latent file" in r.output and "Traceback" not in r.output


def test_directions_import_checks_shape_and_then_edits(tmp_path, native_model):
    import numpy as np

    from tests.photos import encode, grace_hopper

    m = ["-m", str(native_model)]
    np.save(tmp_path / "wrong.npy", np.ones(512, np.float32))
    r = runner.invoke(app, ["directions", "import", str(tmp_path / "wrong.npy"), "--name", "glasses", *m])
    assert r.exit_code == 1 and "does not fit" in r.output
    np.save(tmp_path / "ok.npy", np.ones(64, np.float32))
    r = runner.invoke(app, ["directions", "import", str(tmp_path / "ok.npy"), "--name", "glasses", *m])
    assert r.exit_code == 0, r.output
    photo = tmp_path / "g.jpg"
    photo.write_bytes(encode(grace_hopper(), "JPEG"))
    runner.invoke(app, ["project", str(photo), "--steps", "5", "-o", str(tmp_path / "me"), *m])
    r = runner.invoke(
        app,
        [
            "edit",
            str(tmp_path / "me" / "latent.npz"),
            "--direction",
            "glasses",
            "--strip",
            "-o",
            str(tmp_path / "e"),
            *m,
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "e" / "glasses_strip.png").exists()


def test_a_cuda_device_on_a_cpu_build_is_one_sentence(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    r = runner.invoke(app, ["generate", "--device", "cuda", "-o", str(tmp_path)])
    assert r.exit_code == 1 and "--device cuda:" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.fixture
def discord_globals(monkeypatch):
    """serve points discord.py's module-wide API root at the test's address; put it back."""
    import discord

    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    )


def serve_against(tmp_path, token: str, api_base: str, gateway_url: str):
    """`wspace serve` with a config pointing at ``api_base``; it must end with one line and exit 1."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[discord]\ntoken = "{token}"\napi_base = "{api_base}"\ngateway_url = "{gateway_url}"\n'
        '[storage]\ndatabase = "db.sqlite3"\n'
    )
    r = runner.invoke(full_app(), ["serve", "--config", str(cfg)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    return r


def test_serve_without_discord_is_one_sentence_and_a_nonzero_exit(tmp_path, discord_globals):
    """No network (here: nothing listening where Discord should be) ends the bot cleanly."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = serve_against(tmp_path, "x.y.z", f"http://127.0.0.1:{port}/api/v10", f"ws://127.0.0.1:{port}/")
    assert "Could not reach Discord" in r.output


def test_serve_with_a_refused_token_is_one_sentence_and_a_nonzero_exit(tmp_path, discord_globals):
    import asyncio
    import threading

    from tests.discord_sim import DiscordSimulator

    loop = asyncio.new_event_loop()
    sim = DiscordSimulator()
    sim.valid_tokens = {"the-real-token"}
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(10)
    try:
        r = serve_against(tmp_path, "a-wrong-token", sim.api_base, sim.gateway_url)
        assert "Discord refused the bot token" in r.output and "a-wrong-token" not in r.output
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def test_directions_layers_sets_what_edit_moves(tmp_path):
    import shutil

    from engine.latent.directions import load_directions
    from engine.model.checkpoints import DEFAULT_MODEL

    src = DEFAULT_MODEL.with_name(DEFAULT_MODEL.stem + ".directions.npz")
    path = tmp_path / "d.npz"
    shutil.copy(src, path)
    r = runner.invoke(app, ["directions", "layers", "smile", "2-5", "--directions", str(path)])
    assert r.exit_code == 0, r.output
    from engine.model.checkpoints import load_generator

    assert load_directions(path, load_generator(None).model_id)["smile"].layers == "2-5"
    r = runner.invoke(app, ["directions", "layers", "smile", "9-40", "--directions", str(path)])
    assert r.exit_code == 1 and "style range" in r.output
    r = runner.invoke(app, ["directions", "layers", "frown", "all", "--directions", str(path)])
    assert r.exit_code == 1 and "no direction 'frown'" in r.output
