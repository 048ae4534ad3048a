"""The encoder: belongs to one model, starts projections near the answer, falls back to w_avg."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from engine.jobs.answers import run_job
from engine.jobs.bundle import encoder_path_for
from engine.jobs.engine import Engine
from engine.latent.projector import psnr
from engine.model.checkpoints import DEFAULT_MODEL, load_generator
from engine.model.encoder import Encoder, EncoderConfig, encode, load_encoder, save_encoder
from engine.model.images import to_uint8
from engine.protocol import Progress, ProjectRequest, Result
from tests.photos import encode as encode_photo
from tests.photos import grace_hopper


@pytest.fixture(scope="module")
def tiny(tiny_model):
    G = load_generator(tiny_model)
    return tiny_model, G.model_id, G


def tiny_encoder(G) -> Encoder:
    E = Encoder(EncoderConfig(resolution=G.resolution, num_ws=G.num_ws, w_dim=G.w_dim, channels=[8, 16, 16]))
    E.w_avg.copy_(torch.randn(G.w_dim))
    return E


def test_an_untrained_encoder_answers_w_avg(tiny):
    _, _, G = tiny
    E = tiny_encoder(G)
    ws = encode(E, np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    assert ws.shape == (G.num_ws, G.w_dim)
    assert np.allclose(ws, E.w_avg.numpy()[None])


def test_encoder_round_trips_and_refuses_another_model(tiny, tmp_path):
    _, model_id, G = tiny
    E = tiny_encoder(G)
    torch.nn.init.normal_(E.head[-1].weight, std=0.01)
    path = tmp_path / "x.encoder.safetensors"
    save_encoder(E, path, model_id, {"note": "test"}, dtype=torch.float32)
    again = load_encoder(path, model_id)
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(E.eval()(img), again(img))
    assert again.provenance == {"note": "test"}
    assert load_encoder(path, "another-model") is None, "an encoder is never used with another model"
    assert load_encoder(tmp_path / "absent.safetensors", model_id) is None


def test_engine_shows_the_encoder_guess_first_then_refines(tiny, tmp_path):
    path, model_id, G = tiny
    model = tmp_path / "m.safetensors"
    shutil.copy(path, model)
    assert Engine(model).encoder is None
    save_encoder(tiny_encoder(G), encoder_path_for(model), model_id)
    engine = Engine(model)
    assert engine.encoder is not None
    events = []
    run_job(engine, ProjectRequest(image=encode_photo(grace_hopper(), "JPEG"), steps=10), events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    guess = [p for p in progress if p.step == 0 and p.preview_png]
    assert guess and guess[0].message == "first guess" and guess[0].preview_png[:4] == b"\x89PNG"
    assert progress.index(guess[0]) < min(i for i, p in enumerate(progress) if p.step > 0)
    result = events[-1]
    assert isinstance(result, Result) and result.figures["start"] == "encoder"
    events = []
    run_job(engine, ProjectRequest(image=encode_photo(grace_hopper(), "JPEG"), steps=5, encoder=False), events.append)
    assert events[-1].figures["start"] == "w_avg"


def test_the_shipped_encoder_draws_held_out_faces_far_better_than_w_avg():
    G = load_generator()
    E = load_encoder(encoder_path_for(None), G.model_id)
    assert E is not None, "the embedded model ships its encoder"
    z = torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(4242))
    with torch.no_grad():
        targets = to_uint8(G(z))
        avg = to_uint8(G.synthesis(G.w_avg.expand(1, G.num_ws, -1)))[0]
        guesses = to_uint8(G.synthesis(torch.from_numpy(np.stack([encode(E, t) for t in targets]))))
    enc = np.mean([psnr(g, t) for g, t in zip(guesses, targets)])
    base = np.mean([psnr(avg, t) for t in targets])
    assert enc > base + 3, f"encoder {enc:.1f} dB vs w_avg {base:.1f} dB"


def test_default_encoder_path_sits_beside_the_model():
    assert encoder_path_for(None) == DEFAULT_MODEL.with_name("wspace64.encoder.safetensors")
