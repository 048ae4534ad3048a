"""Directions: shapes checked on import, SeFa is orthonormal, SVM finds a planted boundary,
conditioning removes the other attribute, storage keeps each direction with its model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.latent.directions import (
    Direction,
    DirectionError,
    condition,
    fit_boundary,
    get_direction,
    import_npy,
    load_directions,
    save_directions,
    sefa,
)
from engine.model.networks import Generator, GeneratorConfig
from engine.protocol.errors import UnknownDirection


@pytest.fixture(scope="module")
def G():  # noqa: N802
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8}))
    g.model_id = "test-model"
    return g


@pytest.mark.parametrize("shape", [(16,), (1, 16), (6, 16)])
def test_import_accepts_the_usual_shapes(tmp_path, G, shape):
    np.save(tmp_path / "d.npy", np.ones(shape, np.float32))
    d = import_npy(tmp_path / "d.npy", G)
    assert d.vector.shape == (G.num_ws, G.w_dim) and d.model_id == "test-model"
    assert np.allclose(np.linalg.norm(d.vector, axis=1), 1)


@pytest.mark.parametrize("shape", [(512,), (18, 512), (6, 15), (2, 3, 16)])
def test_import_refuses_shapes_that_do_not_fit(tmp_path, G, shape):
    np.save(tmp_path / "d.npy", np.ones(shape, np.float32))
    with pytest.raises(DirectionError, match="does not fit"):
        import_npy(tmp_path / "d.npy", G)


def test_import_refuses_pickles_and_nans(tmp_path, G):
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionError, match="readable"):
        import_npy(tmp_path / "p.npy", G)
    np.save(tmp_path / "n.npy", np.full(16, np.nan, np.float32))
    with pytest.raises(DirectionError, match="NaN"):
        import_npy(tmp_path / "n.npy", G)


def test_sefa_factors_are_orthonormal(G):
    factors = sefa(G, count=4)
    V = np.stack([v for v, _ in factors])
    assert np.allclose(V @ V.T, np.eye(4), atol=1e-5)
    eig = [e for _, e in factors]
    assert eig == sorted(eig, reverse=True)


def test_svm_recovers_a_planted_boundary():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2000, 16))
    truth = np.zeros(16)
    truth[5] = 1
    scores = w @ truth + 0.1 * rng.standard_normal(2000)
    normal, fig = fit_boundary(w, scores, keep=0.1)
    assert normal @ truth > 0.9 and fig["validation_accuracy"] > 0.95


def test_conditioning_removes_the_other_attribute():
    rng = np.random.default_rng(1)
    age, gender = rng.standard_normal(16), rng.standard_normal(16)
    gender /= np.linalg.norm(gender)
    c = condition(age, [gender])
    assert abs(c @ gender) < 1e-6 and np.isclose(np.linalg.norm(c), 1)


def test_directions_are_kept_with_their_model(tmp_path, G):
    vec = np.ones((G.num_ws, G.w_dim), np.float32)
    save_directions([Direction("age", vec, "test-model", "all", {"validation_accuracy": 0.9}),
                     Direction("age2", vec, "other-model")], tmp_path / "d.npz")
    got = load_directions(tmp_path / "d.npz", "test-model")
    assert list(got) == ["age"] and got["age"].meta["validation_accuracy"] == 0.9
    assert get_direction(got, "age", "test-model").name == "age"
    with pytest.raises(UnknownDirection, match="this model has: age"):
        get_direction(got, "age2", "test-model")


def test_unsupervised_factors_get_the_named_directions_unit():
    """The shipped SeFa factors change the model's faces per unit as much as the named
    directions do, and re-deriving a wrong unit brings it back (engine/latent/learn.py)."""
    import copy

    import torch as th

    from engine.jobs.bundle import load_bundle
    from engine.latent.learn import image_change, match_unsupervised_scales

    bundle = load_bundle()
    G, shipped = bundle.G, list(bundle.directions.values())
    z = th.randn(16, G.z_dim, generator=th.Generator().manual_seed(99))  # faces the calibration did not use
    with th.no_grad():
        w = G.mapping(z)[:, 0]
    change = {d.name: image_change(G, w, d, float(d.meta["scale"])) for d in shipped}
    named = np.median([change[d.name] for d in shipped if d.meta["method"].startswith("interfacegan")])
    factors = [d for d in shipped if d.meta["method"] == "sefa"]
    assert factors, "the embedded model ships SeFa factors"
    for d in factors:
        assert abs(change[d.name] / named - 1) < 0.2, (d.name, change[d.name], named)
    wrong = [copy.deepcopy(d) for d in shipped]
    for d in wrong:
        if d.meta["method"] == "sefa":
            d.meta["scale"] = 5 * float(d.meta["scale"])
    match_unsupervised_scales(G, wrong, faces=16)
    for before, after in zip(shipped, wrong):
        if before.meta["method"] == "sefa":
            assert abs(after.meta["scale"] / before.meta["scale"] - 1) < 0.2
        else:
            assert after.meta["scale"] == before.meta["scale"], "named directions keep their unit"
