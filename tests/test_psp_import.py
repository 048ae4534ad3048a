"""e4e and pSp encoders imported as the projector's first guess (engine/model/psp.py).

With ``../shared/fixtures/encoders`` (checkpoints written by e4e's own code, with its
outputs): the codes, e4e's w0 and the decoder's images match the reference; the engine
uses the encoder with its own decoder and refuses it with another model. Without them, a
checkpoint in the same layout written here still goes through import, save and load, and
hostile or foreign files are refused in one sentence.
"""

from __future__ import annotations

import lzma
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bot.cli import full_app
from engine.jobs.dispatch import run
from engine.model import psp

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "encoders"
runner = CliRunner()


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"encoder fixtures are not here ({path} is absent: run beside ../shared)")
    return path


@pytest.fixture(scope="module", params=["e4e_64", "psp_64"])
def imported(request, tmp_path_factory):
    """(checkpoint .pt, our encoder file, reference outputs) of one fixture."""
    xz, ref = fixture(f"{request.param}.pt.xz"), fixture(f"{request.param}_ref.npz")
    tmp = tmp_path_factory.mktemp(request.param)
    pt = tmp / f"{request.param}.pt"
    with lzma.open(xz) as src, open(pt, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
    out = tmp / "encoder.safetensors"
    r = runner.invoke(full_app(), ["encoder", "import", str(pt), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return pt, out, dict(np.load(ref))


def test_the_imported_encoder_gives_the_reference_codes(imported, tmp_path):
    pt, encoder, ref = imported
    np.save(tmp_path / "inputs.npy", ref["inputs"])
    r = runner.invoke(full_app(), ["encoder", "codes", str(encoder), "--inputs", str(tmp_path / "inputs.npy"),
                                   "-o", str(tmp_path / "codes.npy")])
    assert r.exit_code == 0, r.output
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == ref["codes"].shape
    assert np.abs(codes - ref["codes"]).max() < 1e-4, np.abs(codes - ref["codes"]).max()
    E = psp.load(encoder)
    with torch.no_grad():
        w0 = E.styles[0](E.features(torch.from_numpy(ref["inputs"]))[2]).numpy()
    assert np.abs(w0 - ref["w0"]).max() < 1e-4


def test_its_decoder_imports_as_the_model_and_draws_the_reference_images(imported, tmp_path):
    from engine.model.checkpoints import load_generator

    pt, encoder, ref = imported
    model = tmp_path / "decoder.safetensors"
    r = runner.invoke(full_app(), ["model", "import", str(pt), "-o", str(model)])
    assert r.exit_code == 0, r.output
    G = load_generator(model)
    with torch.no_grad():
        images = G.synthesis(torch.from_numpy(ref["codes"])).numpy()
    assert np.abs(images - ref["images"]).max() < 1e-4, np.abs(images - ref["images"]).max()
    assert psp.load(encoder).generator == G.model_id, "the encoder names the generator it belongs to"


def test_the_engine_starts_projections_from_it_and_refuses_it_with_another_model(imported, tmp_path):
    from engine.jobs.engine import Engine
    from engine.model.checkpoints import CheckpointError
    from engine.protocol import Progress, ProjectRequest
    from tests.photos import encode, grace_hopper

    pt, encoder, _ = imported
    model = tmp_path / "decoder.safetensors"
    assert runner.invoke(full_app(), ["model", "import", str(pt), "-o", str(model)]).exit_code == 0
    engine = Engine(model, encoder_path=encoder)
    heard: list[Progress] = []
    result = run(engine, ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=3), heard.append)
    assert result.figures["start"] == "encoder"
    assert heard[0].message.endswith("first guess") and heard[0].preview_png, "the member sees the encoder's face first"
    with pytest.raises(CheckpointError, match="belongs to generator") as err:
        Engine(None, encoder_path=encoder)
    assert "\n" not in str(err.value)


# --- without the fixtures -----------------------------------------------------------------------

def small_checkpoint(path: Path, kind: str = "Encoder4Editing", **opts) -> psp.FFHQEncoder:
    """A checkpoint in e4e's layout, written here: a short IR-SE body, ten styles, no decoder."""
    torch.manual_seed(0)
    spec = psp.Spec("e4e" if kind == "Encoder4Editing" else "psp", [64, 128, 256, 512], True, 10,
                    [4, 4, 4, 5, 5, 5, 5, 6, 6, 6])
    E = psp.FFHQEncoder(spec)
    with torch.no_grad():
        for name, t in E.state_dict().items():
            if t.is_floating_point() and "running_var" not in name:
                t.copy_(torch.randn_like(t) * 0.05)
        E.latent_avg.normal_()
    state = {f"encoder.{k}": v for k, v in E.state_dict().items() if k != "latent_avg"}
    torch.save({"state_dict": state, "opts": {"encoder_type": kind, "stylegan_size": 64, "start_from_latent_avg": True,
                                              **opts}, "latent_avg": E.latent_avg.clone()}, path)
    return E.eval()


def test_a_checkpoint_in_e4e_layout_imports_saves_and_loads_to_the_same_codes(tmp_path):
    for kind in ("Encoder4Editing", "GradualStyleEncoder"):
        E = small_checkpoint(tmp_path / "ck.pt", kind)
        got = psp.import_checkpoint(tmp_path / "ck.pt")
        psp.save(got, tmp_path / "enc.safetensors")
        again = psp.load(tmp_path / "enc.safetensors")
        x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 256, 256)).astype(np.float32)
        with torch.no_grad():
            want = E(torch.from_numpy(x)).numpy()
        assert np.abs(psp.codes(again, x) - want).max() < 1e-5
        assert again.generator == "unknown", "no decoder in the file: nothing to pair with"


def test_foreign_and_hostile_files_are_refused_in_one_sentence(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("code ran",))

    cases = {}
    small_checkpoint(tmp_path / "wrong_kind.pt", "ResNetBackboneEncoder")
    cases["wrong_kind.pt"] = "encoder_type"
    small_checkpoint(tmp_path / "odd_size.pt", stylegan_size=100)
    cases["odd_size.pt"] = "stylegan_size"
    small_checkpoint(tmp_path / "disagrees.pt", stylegan_size=1024)  # opts ask for 18 styles, the file has 10
    cases["disagrees.pt"] = "asks for 18 styles"
    torch.save({"g_ema": {"x": torch.zeros(1)}}, tmp_path / "generator.pt")
    cases["generator.pt"] = "not an e4e or pSp checkpoint"
    (tmp_path / "boom.pt").write_bytes(pickle.dumps({"state_dict": Boom()}))
    cases["boom.pt"] = ""
    raw = (tmp_path / "odd_size.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    cases["truncated.pt"] = ""
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": {"encoder_type": "Encoder4Editing",
                                                                      "stylegan_size": 64, "evil": [1, 2]}},
               tmp_path / "opts.pt")
    cases["opts.pt"] = "plain settings"
    for name, words in cases.items():
        out = str(tmp_path / "o.safetensors")

        r = runner.invoke(full_app(), ["encoder", "import", str(tmp_path / name), "-o", out])
        text = r.output.strip()
        assert r.exit_code == 1 and "Traceback" not in text and len(text.splitlines()) <= 2, (name, text)
        assert words in text and "code ran" not in text, (name, text)
        assert not (tmp_path / "o.safetensors").exists()


def test_an_encoder_spec_is_checked_before_anything_is_allocated(tmp_path):
    fine = dict(kind="e4e", widths=[64, 128, 256, 512], se=False, n_styles=10, head_convs=[4] * 10, w_dim=512)
    psp.Spec(**fine).check()
    for change in ({"n_styles": 10.0}, {"w_dim": 512.5}, {"widths": [64, 128, 256, True]}, {"se": 1}):
        with pytest.raises(psp.EncoderImportError, match="whole numbers"):
            psp.Spec(**{**fine, **change}).check()
    huge = psp.Spec(**{**fine, "widths": [128, 256] + [psp.MAX_WIDTH] * 40})  # each width allowed, 4 G weights in all
    huge.check()
    with pytest.raises(psp.EncoderImportError, match="million parameters"):
        psp.build(huge, {}, None)
