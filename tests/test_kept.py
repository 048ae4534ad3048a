"""The kept face: W+ and noise maps, redrawn exactly by every command that starts from it."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from engine.jobs.dispatch import run
from engine.jobs.engine import Engine
from engine.latent.batch import project
from engine.latent.kept import KeptFaceError, load_npz, mix_noise, noise_size, pack_noise, save_npz, unpack_noise
from engine.latent.projector import psnr
from engine.model.images import to_uint8
from engine.protocol import BlendRequest, EditRequest, RenderRequest, as_face

RES = [4, 8, 8, 16, 16]

def maps(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((r, r)).astype(np.float32) for r in RES]

def test_noise_packs_to_float16_and_back():
    m = [x.astype(np.float16).astype(np.float32) for x in maps(0)]  # as the projector leaves them
    flat = pack_noise(m)
    assert flat.dtype == np.float16 and flat.size == noise_size(RES)
    assert all(np.array_equal(a, b) for a, b in zip(unpack_noise(flat, RES), m)), "rounded maps survive exactly"
    with pytest.raises(KeptFaceError, match="different model"):
        unpack_noise(flat[:-1], RES)
    bad = flat.copy()
    bad[3] = np.nan
    with pytest.raises(KeptFaceError, match="damaged"):
        unpack_noise(bad, RES)
    with pytest.raises(KeptFaceError):
        unpack_noise(np.array(["x"] * flat.size), RES)

def test_noise_between_faces_follows_the_style_weights():
    a, b = maps(1), maps(2)
    assert all(x is y for x, y in zip(mix_noise([a, b], np.array([1.0, 0.0])), a)), "all of a: a's own maps"
    assert all(np.allclose(x, y) for x, y in zip(mix_noise([a, a], np.array([0.3, 0.7])), a)), "a with itself is a"
    mid = mix_noise([a, b], np.array([0.5, 0.5]))
    for m, x, y in zip(mid, a, b):
        rms = lambda v: np.sqrt(np.mean(v ** 2))  # noqa: E731
        assert rms(m) == pytest.approx((rms(x) + rms(y)) / 2, rel=1e-4), "no texture lost at the midpoint"
        assert np.corrcoef(m.ravel(), x.ravel())[0, 1] > 0.5
    per_layer = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]], np.float32)  # mix at style 2
    mixed = mix_noise([a, b], per_layer)
    assert mixed[0] is a[0] and mixed[1] is a[1] and mixed[2] is b[2]
    near = mix_noise([a, b], np.array([0.4, 0.6]), rule="nearest")
    assert all(x is y for x, y in zip(near, b))
    assert all(x is y for x, y in zip(mix_noise([a, b], np.array([-0.5, 1.5])), b)), "extrapolation keeps b's maps"

def test_latent_files_round_trip_and_refuse_what_is_not_a_face(tmp_path):
    ws = np.ones((6, 8), np.float32)
    flat = pack_noise(maps(3))
    save_npz(tmp_path / "a.npz", ws, flat, "m1")
    got_ws, got_noise, model_id = load_npz(tmp_path / "a.npz")
    assert np.array_equal(got_ws, ws) and np.array_equal(got_noise, flat) and model_id == "m1"
    save_npz(tmp_path / "old.npz", ws, None, "m1")
    assert load_npz(tmp_path / "old.npz")[1] is None, "a latent from before noise was kept still reads"
    with pytest.raises(KeptFaceError, match="not a wspace latent"):
        load_npz(b"not a zip at all")
    buf = io.BytesIO()
    np.savez(buf, ws=np.array([object()], dtype=object), model_id=np.array("m"))
    with pytest.raises(KeptFaceError):
        load_npz(buf.getvalue())
    big = io.BytesIO()  # a zip member that claims to be huge is refused before it is read
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ws.npy", b"\0" * (65 * 2**20))
    with pytest.raises(KeptFaceError, match="too large"):
        load_npz(big.getvalue())

@pytest.fixture(scope="module")
def engine():
    return Engine()

@pytest.fixture(scope="module")
def projected(engine):
    """A teacher-like target the model cannot draw exactly, projected briefly."""
    import torch

    from engine.model.images import resize
    from engine.model.teacher import load_teacher

    with torch.no_grad():
        img = to_uint8(load_teacher()(torch.randn(1, 100, generator=torch.Generator().manual_seed(5))))[0]
    target = resize(img, engine.G.resolution)
    return target, project(engine.G, target, 40, every=40)

def test_the_kept_face_redraws_what_the_projection_showed(engine, projected):
    target, proj = projected
    face = as_face(proj.ws, engine.pack(proj.noise))
    redraw = run(engine, RenderRequest(face=face, model_id=engine.model_id)).files[0]
    drawn = engine.render(proj.ws[None], engine.face(face)[1])[0]
    assert psnr(drawn, proj.image) >= 40, "what the member saw is what they keep"
    assert np.array_equal(drawn, proj.image)
    assert redraw.name == "face.png"
    w_only = engine.render(proj.ws[None])[0]
    assert psnr(w_only, proj.image) < psnr(drawn, proj.image), "the noise maps are part of the face"

def test_every_command_starts_from_the_kept_face(engine, projected):
    _, proj = projected
    face = as_face(proj.ws, engine.pack(proj.noise))
    ws, kept_maps = engine.face(face)
    shown = engine.render(ws[None], kept_maps)[0]
    blend = run(engine, BlendRequest(a=face, b=as_face(proj.ws * 0 + engine.G.w_avg.numpy()), ratio=0.0)).face
    assert np.array_equal(blend.ws, proj.ws) and np.array_equal(blend.noise, face.noise), \
        "a blend at ratio 0 is the first face, noise and all"
    result = run(engine, EditRequest(face=face, direction="age", amount=0.0))
    edit = result.face
    again = engine.render(edit.ws[None], engine.face(edit)[1])[0]
    assert np.array_equal(again, shown), "an edit by 0 keeps the member's face exactly"
    assert result.text, "an edit says what its direction measurably does on this model"

def test_old_latents_without_noise_still_render_with_the_constant_maps(engine):
    ws = engine.G.mapping(__import__("torch").zeros(1, engine.G.z_dim))[0].detach().numpy()
    old = run(engine, RenderRequest(face=as_face(ws)))
    assert old.files[0].data == engine.png(engine.render(ws[None])[0], "x").data
    with pytest.raises(Exception, match="different model"):
        run(engine, RenderRequest(face=as_face(ws, np.zeros(7, np.float16))))

def test_a_large_model_keeps_only_its_coarser_noise_maps(tiny_model):
    """Above the kept resolution the projector leaves the model's constant maps, so the
    smaller kept face still redraws what was shown (here: a 32-px model keeping up to 16 px)."""

    small = Engine(tiny_model, kept_noise_max_res=16)
    assert [small.noise_res[i] for i in small.kept_layers] == [4, 8, 8, 16, 16]
    target = small.render(small.G.mapping(__import__("torch").randn(1, small.G.z_dim))[0].detach().numpy()[None])[0]
    target = np.ascontiguousarray(target[:, ::-1])  # something the model did not draw exactly
    proj = project(small.G, target, 30, every=30, kept_noise_max_res=16)
    for i, layer in enumerate(small.G.synthesis.noise_layers()):
        if layer.resolution > 16:
            assert np.array_equal(proj.noise[i], small.const_noise[i]), "finer maps stay the model's own"
    face = as_face(proj.ws, small.pack(proj.noise))
    assert face.noise.size == 16 + 2 * (64 + 256)
    drawn = small.render(proj.ws[None], small.face(face)[1])[0]
    assert np.array_equal(drawn, proj.image)


@pytest.mark.parametrize("shape", [(100_000, 100_000, 300), (40_000_000_000,), (2**20, 2**20)])
def test_a_latent_file_whose_array_header_declares_gigabytes_is_one_sentence(shape):
    """A 100-byte member can declare terabytes: the array's header is read before numpy allocates."""
    import warnings

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("ws.npy", header.getvalue() + bytes(48))
        z.writestr("model_id.npy", b"")
    with pytest.raises(KeptFaceError, match="declares an array too large") as err:
        load_npz(data.getvalue())
    assert "\n" not in str(err.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one sentence, and no RuntimeWarning beside it
        with pytest.raises(KeptFaceError, match="non-numbers"):
            unpack_noise(np.full(16, 1e300, np.float64), [4])
