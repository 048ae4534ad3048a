"""Members projected together get what they would alone: the batch shares only the forward
and backward passes, never a member's state.

Not bit for bit: with several threads, or other CPU kernels, a batched convolution rounds
differently from a lone one (bench/numerics.py, docs/benchmarks.md), so the promise tested
is the one that holds on any CPU: over these short projections a member's W+, noise maps,
picture and losses stay within a hair of the lone ones (a member whose state leaked into
another's would be off by whole units). tests/test_numerics.py runs this under several
thread counts and CPU kernel settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.jobs.bundle import load_bundle
from engine.latent.batch import Member, ProjectionBatch, project
from engine.latent.projector import REFINE_FAR
from engine.model.encoder import encode
from engine.model.images import to_uint8
from tests.closeness import IMAGE_LEVELS, close_arrays


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(None, "cpu", None)


@pytest.fixture(scope="module")
def faces(bundle):
    G = bundle.G
    with torch.no_grad():
        return to_uint8(G(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(11))))


def same(a, b) -> None:
    """``b`` is ``a`` up to the rounding a different batch brings, not a different projection."""
    assert close_arrays(a.ws, b.ws) and all(close_arrays(x, y) for x, y in zip(a.noise, b.noise))
    assert np.abs(a.image.astype(int) - b.image).max() <= IMAGE_LEVELS
    assert len(a.losses) == len(b.losses) and np.allclose(a.losses, b.losses, rtol=1e-3, atol=1e-5)


def test_a_member_gets_their_projection_alone_or_joining_a_batch_midway(bundle, faces):
    G, E = bundle.G, bundle.encoder
    asks = [dict(steps=12, init_ws=encode(E, faces[0]), seed=0),  # a close guess: the gentle schedule
            dict(steps=16, init_ws=None, seed=1),  # from w_avg: the published schedule, with latent noise
            dict(steps=9, init_ws=encode(E, faces[2]), seed=2, schedule=REFINE_FAR),
            dict(steps=7, init_ws=None, seed=3)]
    alone = [project(G, faces[i], **ask) for i, ask in enumerate(asks)]

    batch = ProjectionBatch(G)
    members = [Member(faces[i], **ask) for i, ask in enumerate(asks)]
    got = {}
    batch.add(members[0])
    batch.add(members[1])
    for _ in range(5):  # two members run five steps, then two more join
        assert batch.step() == []
    batch.add(members[2])
    batch.add(members[3])
    assert len(batch) == 4
    for member, projection in batch.run():
        got[id(member)] = projection
    assert len(got) == 4 and len(batch) == 0
    for i, member in enumerate(members):
        same(got[id(member)], alone[i])
        assert got[id(member)].steps == asks[i]["steps"]


def test_members_leave_when_done_and_a_removed_member_changes_nobody(bundle, faces):
    G = bundle.G
    alone = project(G, faces[1], steps=8, seed=5)
    batch = ProjectionBatch(G)
    short, kept, dropped = Member(faces[0], steps=3), Member(faces[1], steps=8, seed=5), Member(faces[2], steps=8)
    for m in (short, kept, dropped):
        batch.add(m)
    finished = []
    for _ in range(3):
        finished += batch.step()
    assert [m for m, _ in finished] == [short] and len(batch) == 2
    batch.remove(dropped)  # its job failed: the others carry on
    [(member, projection)] = batch.run()
    assert member is kept
    same(projection, alone)


def test_each_member_hears_its_own_progress(bundle, faces):
    heard: dict[str, list[int]] = {"a": [], "b": []}
    batch = ProjectionBatch(bundle.G)
    batch.add(Member(faces[0], steps=6, every=2, progress=lambda k, n, loss, img: heard["a"].append(k)))
    batch.add(Member(faces[1], steps=4, every=3, progress=lambda k, n, loss, img: heard["b"].append(k)))
    batch.run()
    assert heard["a"] == [1, 2, 4, 6, 6]  # the first step, every second, and the final render
    assert heard["b"] == [1, 3, 4]


def test_a_target_of_the_wrong_size_is_refused_before_it_joins(bundle):
    batch = ProjectionBatch(bundle.G)
    with pytest.raises(ValueError):
        batch.add(Member(np.zeros((32, 32, 3), np.uint8)))
    assert len(batch) == 0
