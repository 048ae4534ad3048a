"""The `wspace` console command on local files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bot.cli import app
from engine.checkpoints import load_generator, save_native

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
    result = runner.invoke(app, ["generate", "--seed", "3", "--count", "4", "-o", str(tmp_path), "-m", str(native_model)])
    assert result.exit_code == 0, result.output
    singles = sorted(tmp_path.glob("seed*.png"))
    assert [p.name for p in singles] == ["seed0003.png", "seed0004.png", "seed0005.png", "seed0006.png"]
    assert Image.open(singles[0]).size == (32, 32)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2)
    a, b = (np.asarray(Image.open(p)) for p in singles[:2])
    assert not np.array_equal(a, b), "different seeds draw different faces"


def test_truncation_zero_draws_the_average_face_for_every_seed(tmp_path, native_model):
    result = runner.invoke(app, ["generate", "--count", "3", "--psi", "0", "-o", str(tmp_path), "-m", str(native_model)])
    assert result.exit_code == 0, result.output
    imgs = [np.asarray(Image.open(p)) for p in sorted(tmp_path.glob("seed*.png"))]
    assert all(np.array_equal(imgs[0], im) for im in imgs[1:])


def test_bad_inputs_get_one_clear_line(tmp_path):
    result = runner.invoke(app, ["generate", "-m", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "no model file" in result.output
    result = runner.invoke(app, ["generate", "--seed", "-5", "-m", str(tmp_path / "x"), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "seeds must lie between" in result.output


def test_model_import_and_info(tmp_path, rosinality_pt):
    out = tmp_path / "r.safetensors"
    result = runner.invoke(app, ["model", "import", str(rosinality_pt), "-o", str(out)])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["model", "info", str(out)])
    assert '"resolution": 32' in info.output and '"num_ws": 8' in info.output
