"""The generator reproduces the reference codebases' own outputs, and its API holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model.checkpoints import load_generator
from engine.model.networks import Generator, GeneratorConfig, channel_schedule

TOL = 1e-3


def max_err(a: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(a.detach().numpy() - ref).max())


@pytest.mark.parametrize("fused", [False, True])
def test_ada_pickle_reproduces_reference_images(ada_pkl, fused):
    G = load_generator(ada_pkl)
    ref = np.load(ada_pkl.with_name("ada_tiny_ref.npz"))
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        assert max_err(G.mapping(z), ref["w"]) <= TOL
        assert max_err(G.w_avg, ref["w_avg"]) <= TOL
        assert G.num_ws == int(ref["num_ws"])
        assert max_err(G.synthesis(G.mapping(z), fused=fused), ref["img"]) <= TOL
        assert max_err(G.synthesis(G.mapping(z, truncation_psi=0.7), fused=fused), ref["img_trunc"]) <= TOL
        assert max_err(G.synthesis(torch.from_numpy(ref["ws_plus"]), fused=fused), ref["img_wplus"]) <= TOL
        assert max_err(G(z, truncation_psi=0.7), ref["img_trunc"]) <= TOL


@pytest.mark.parametrize("fused", [False, True])
def test_rosinality_checkpoint_reproduces_reference_images(rosinality_pt, fused):
    G = load_generator(rosinality_pt)
    ref = np.load(rosinality_pt.with_name("rosinality_tiny_ref.npz"))
    z = torch.from_numpy(ref["z"])
    with torch.no_grad():
        assert max_err(G.mapping(z)[:, 0], ref["w"]) <= TOL
        assert G.num_ws == int(ref["n_latent"])
        assert max_err(G.synthesis(G.mapping(z), fused=fused), ref["img"]) <= TOL
        assert max_err(G.synthesis(G.mapping(z, 0.7), fused=fused), ref["img_trunc"]) <= TOL
        k = int(ref["inject_index"])
        mixed = torch.cat([G.mapping(z[0:2])[:, :k], G.mapping(z[2:4])[:, k:]], dim=1)
        assert max_err(G.synthesis(mixed, fused=fused), ref["img_mix"]) <= TOL
        assert max_err(G.synthesis(torch.from_numpy(ref["wplus"]), fused=fused), ref["img_wplus"]) <= TOL


@pytest.mark.parametrize("resolution", [4, 8, 64, 1024])
def test_any_power_of_two_resolution_builds_and_draws(resolution):
    channels = {r: 8 for r in channel_schedule(resolution)}
    G = Generator(GeneratorConfig(resolution=resolution, z_dim=16, w_dim=16, mapping_layers=2, channels=channels))
    assert G.num_ws == 2 * int(np.log2(resolution)) - 2
    with torch.no_grad():
        img = G(torch.randn(2, 16))
    assert img.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(img).all()


@pytest.mark.parametrize("resolution", [3, 2, 48, 2048])
def test_bad_resolution_is_refused(resolution):
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=resolution)


def test_noise_modes_and_shape_checks():
    G = Generator(GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8, 16: 8}))
    for layer in G.synthesis.noise_layers():
        layer.noise_strength.data.fill_(1.0)
    ws = G.mapping(torch.randn(1, 8))
    with torch.no_grad():
        const_a, const_b = G.synthesis(ws, "const"), G.synthesis(ws, "const")
        rand_a, rand_b = G.synthesis(ws, "random"), G.synthesis(ws, "random")
        none = G.synthesis(ws, "none")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(rand_a, rand_b)
    assert not torch.allclose(none, const_a)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, "loud")
    with pytest.raises(ValueError, match="shape"):
        G.synthesis(ws[:, :-1])


def test_explicit_noise_maps_replace_the_constant_ones():
    G = Generator(GeneratorConfig(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channels={4: 8, 8: 8}))
    for layer in G.synthesis.noise_layers():
        layer.noise_strength.data.fill_(1.0)
    ws = G.mapping(torch.randn(1, 8))
    consts = [layer.noise_const[None, None] for layer in G.synthesis.noise_layers()]
    with torch.no_grad():
        assert torch.allclose(G.synthesis(ws, noise=consts), G.synthesis(ws, "const"))
        zeros = [torch.zeros_like(c) for c in consts]
        assert torch.allclose(G.synthesis(ws, noise=zeros), G.synthesis(ws, "none"))


def small_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(resolution=32, z_dim=16, w_dim=32, mapping_layers=2,
                                  channels={4: 32, 8: 32, 16: 16, 32: 8}))
    with torch.no_grad():  # a trained-looking net: non-zero noise strengths and biases
        for layer in G.synthesis.noise_layers():
            layer.noise_strength.fill_(0.1)
            layer.bias.normal_(0, 0.1)
    return G


def test_inference_path_draws_what_the_autograd_path_draws_and_leaves_inputs_alone():
    """Without a graph the layers scale activations in place, cache weight tensors and use
    the matrix-product toRGB; with a graph (projection, training) none of that may happen."""
    G = small_generator()
    ws = G.mapping(torch.randn(3, G.z_dim)).detach()
    kept = ws.clone()
    with torch.no_grad():
        fast = G.synthesis(ws)
        again = G.synthesis(ws)  # second call: served from the weight caches
    w_leaf = ws.clone().requires_grad_(True)
    slow = G.synthesis(w_leaf)
    slow.square().mean().backward()  # the graph is intact
    assert w_leaf.grad is not None and torch.isfinite(w_leaf.grad).all()
    assert torch.equal(ws, kept), "the caller's latents were modified"
    assert torch.allclose(fast, slow.detach(), atol=1e-5) and torch.equal(fast, again)
    ref = G.synthesis(ws, fused=True).detach()  # the grouped-convolution reference maths
    assert torch.allclose(fast, ref, atol=1e-4)


def test_changed_weights_are_never_served_from_the_cache():
    G, other = small_generator(0), small_generator(1)
    ws = G.mapping(torch.randn(2, G.z_dim)).detach()
    with torch.no_grad():
        before = G.synthesis(ws)
        G.load_state_dict(other.state_dict())  # copies into the same tensors in place
        after = G.synthesis(ws)
        expected = other.synthesis(ws)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, expected, atol=1e-6)
    layer = G.synthesis.noise_layers()[1]
    with torch.no_grad():
        layer.weight.mul_(-1.5)  # an in-place edit of one weight
        edited = G.synthesis(ws)
    layer.cache = type(layer.cache)()  # a cold cache computes from scratch
    with torch.no_grad():
        cold = G.synthesis(ws)
    assert torch.allclose(edited, cold, atol=1e-6) and not torch.allclose(edited, after)
    with torch.no_grad():
        layer.weight = torch.nn.Parameter(torch.randn_like(layer.weight))  # a new tensor, perhaps at a freed address
        replaced = G.synthesis(ws)
    layer.cache = type(layer.cache)()
    with torch.no_grad():
        assert torch.allclose(replaced, G.synthesis(ws), atol=1e-6)


def test_the_engine_process_keeps_large_blocks_in_the_heap():
    from engine.model.runtime import tune_allocator

    assert tune_allocator() is True  # glibc (this project's Linux hosts) accepts both settings
