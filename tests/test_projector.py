"""The projector finds a latent that redraws the target, reports progress, honours its schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.latent.batch import project
from engine.latent.projector import (
    INITIAL_LR,
    LR_RAMPUP,
    Schedule,
    latent_noise_scale,
    lr_schedule,
    noise_regularizer,
    psnr,
    ssim,
)
from engine.model.checkpoints import load_generator
from engine.model.images import to_uint8


@pytest.fixture(scope="module")
def G(ada_pkl):  # noqa: N802
    return load_generator(ada_pkl)


def test_schedule_ramps_up_and_down():
    assert lr_schedule(0.0) == 0.0
    assert lr_schedule(LR_RAMPUP) == pytest.approx(INITIAL_LR)
    assert lr_schedule(0.5) == pytest.approx(INITIAL_LR)
    assert lr_schedule(0.99) < 0.01 * INITIAL_LR
    assert latent_noise_scale(0.0, 2.0) == pytest.approx(0.1)
    assert latent_noise_scale(0.75, 2.0) == 0.0


def test_a_schedule_sets_its_ramp_down_and_the_noise_maps_lr(G):
    assert lr_schedule(0.7, 1.0, rampdown=0.25) == pytest.approx(1.0)
    assert lr_schedule(0.7, 1.0, rampdown=0.5) < 0.7
    torch.manual_seed(3)
    with torch.no_grad():
        target = to_uint8(G(torch.randn(1, G.z_dim)))[0]
    const = [
        layer.noise_const.detach().reshape(layer.resolution, layer.resolution).numpy()
        for layer in G.synthesis.noise_layers()
    ]
    every_map = {"noise_octaves": None}  # every noise map free, so the lr is seen on each
    frozen = project(G, target, steps=20, loss_kind="pixel", schedule=Schedule(noise_lr_mul=0.0, **every_map))
    moving = project(G, target, steps=20, loss_kind="pixel", schedule=Schedule(**every_map))
    normalised = [(c - c.mean()) / c.std() for c in const]
    fp16 = 4e-3  # the kept maps are rounded to float16 at the end (half an ulp below |4|)
    assert all(np.allclose(n, c, atol=fp16) for n, c in zip(frozen.noise, normalised))
    assert not all(np.allclose(n, c, atol=fp16) for n, c in zip(moving.noise, normalised))
    assert not np.allclose(frozen.ws, G.w_avg.expand(G.num_ws, -1).numpy()), "the latents still move"


def test_noise_regularizer_penalises_correlated_noise():
    white = [torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8), size=32, mode="bilinear")]
    assert noise_regularizer(smooth) > 10 * noise_regularizer(white)


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)
    assert (ssim(a, a + 0.3 * torch.randn_like(a)) < 0.9).all()


def test_projection_redraws_an_in_domain_target(G):
    torch.manual_seed(1)
    with torch.no_grad():
        w_true = G.mapping(torch.randn(1, G.z_dim))
        target = to_uint8(G.synthesis(w_true))[0]
        start = to_uint8(G.synthesis(G.w_avg.expand(1, G.num_ws, -1).contiguous()))[0]
    calls = []
    result = project(
        G,
        target,
        steps=80,
        every=20,
        loss_kind="pixel",
        progress=lambda k, n, loss, preview: calls.append((k, n, preview.shape)),
    )
    assert result.ws.shape == (G.num_ws, G.w_dim) and result.ws.dtype == np.float32
    assert result.psnr > psnr(start, target) + 6, "the projection is much closer than the starting face"
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert [c[0] for c in calls] == [1, 20, 40, 60, 80, 80] and calls[0][2] == (32, 32, 3)
    assert len(result.frames) == 6 and result.loss_kind == "pixel"
    assert [n.shape for n in result.noise] == [(r, r) for r in (4, 8, 8, 16, 16, 32, 32)]
    for n in result.noise:
        if n.shape[0] >= G.resolution // 2:  # the two finest octaves move (Schedule.noise_octaves)
            assert abs(n.mean()) < 1e-4 and abs(n.std() - 1) < 1e-2, "noise maps are renormalised"


def test_projection_starts_from_a_given_latent(G):
    torch.manual_seed(2)
    with torch.no_grad():
        w_true = G.mapping(torch.randn(1, G.z_dim))
        target = to_uint8(G.synthesis(w_true))[0]
    cold = project(G, target, steps=5)
    warm = project(G, target, steps=5, init_ws=w_true[0].numpy())
    assert warm.losses[0] < 0.8 * cold.losses[0]
    assert cold.figures["schedule"] == "rolux" and warm.figures["schedule"] == "refine"


def test_a_guess_that_fits_badly_is_refined_with_big_steps(G):
    """A real photo's first guess is far off: no gentle schedule for it."""
    torch.manual_seed(3)
    with torch.no_grad():
        w_true, w_other = G.mapping(torch.randn(2, G.z_dim)).split(1)
        target = to_uint8(G.synthesis(w_true))[0]
        far = to_uint8(G.synthesis(w_other))[0]
    assert psnr(far, target) < 25.0, "the test needs a guess that fits badly"
    result = project(G, target, steps=20, init_ws=w_other[0].numpy())
    assert result.figures["schedule"] == "refine_far"
    assert result.psnr > psnr(far, target) + 3, "it moved towards the target"


def test_offline_loss_with_ssim_is_reported(G):
    with torch.no_grad():
        target = to_uint8(G(torch.randn(1, G.z_dim)))[0]
    result = project(G, target, steps=3)
    assert result.loss_kind in ("pixel+ssim", "lpips-vgg")


def test_wrong_target_size_is_refused(G):
    with pytest.raises(ValueError, match="32×32"):
        project(G, np.zeros((64, 64, 3), np.uint8), steps=1)


def _const_maps(G):
    out = []
    for layer in G.synthesis.noise_layers():
        c = layer.noise_const.detach().reshape(layer.resolution, layer.resolution).numpy()
        out.append((c - c.mean()) / c.std())
    return out


def _target(G, seed=5):
    torch.manual_seed(seed)
    with torch.no_grad():
        return to_uint8(G(torch.randn(1, G.z_dim)))[0]


def test_only_the_finest_noise_maps_move_when_asked(G):
    """Coarse maps left at the model's own keep the face's features in W+: drawn with the model's
    maps, W+ alone is the face."""
    layers = G.synthesis.noise_layers()
    p = project(G, _target(G), steps=15, loss_kind="pixel", schedule=Schedule(noise_octaves=1))
    fp16 = 4e-3
    for layer, n, c in zip(layers, p.noise, _const_maps(G)):
        if layer.resolution < G.resolution:
            own = layer.noise_const.half().float().numpy().reshape(n.shape)  # as a kept face holds it
            assert np.array_equal(n, own), "the model's own map"
        else:
            assert not np.allclose(n, c, atol=fp16), "the finest map moved"


def test_tied_styles_move_as_one_w_then_apart(G):
    target = _target(G, 6)
    tied = project(G, target, steps=12, loss_kind="pixel", schedule=Schedule(w_first=1.0, noise_octaves=1))
    assert np.allclose(tied.ws, tied.ws[:1], atol=1e-5), "every style is the same w"
    assert not np.allclose(tied.ws[0], G.w_avg.numpy()), "and it moved"
    half = project(G, target, steps=12, loss_kind="pixel", schedule=Schedule(w_first=0.5, noise_octaves=1))
    assert not np.allclose(half.ws, half.ws[:1], atol=1e-5), "after the tied half, W+"


def test_the_realism_penalty_keeps_styles_near_w(G):
    from engine.latent.projector import realism_regularizer, w_gaussian

    mean, upper = w_gaussian(G)
    target = (np.random.default_rng(0).random((G.resolution, G.resolution, 3)) * 255).astype(np.uint8)  # no face
    free = project(G, target, steps=30, loss_kind="pixel", schedule=Schedule(noise_octaves=1))
    held = project(G, target, steps=30, loss_kind="pixel", schedule=Schedule(noise_octaves=1, realism_weight=1.0))

    def realism(p):
        return float(realism_regularizer(torch.from_numpy(p.ws)[None], mean, upper).mean())

    assert realism(held) < 0.5 * realism(free)
