"""Latent arithmetic: blends, mixes, morphs and loops do what a member expects."""

from __future__ import annotations

import numpy as np
import pytest

from engine.latent import edits

rng = np.random.default_rng(0)
A, B, C = (rng.standard_normal((10, 16)).astype(np.float32) for _ in range(3))


def test_layer_groups_partition_the_styles():
    for num_ws in (8, 10, 14, 18):
        r = edits.layer_ranges(num_ws)
        covered = list(r["coarse"]) + list(r["middle"]) + list(r["fine"])
        assert covered == list(range(num_ws)) and all(len(r[g]) for g in ("coarse", "middle", "fine"))
    assert edits.layer_ranges(18)["fine"] == range(8, 18), "StyleGAN's fine styles at 1024 px"


def test_blend_endpoints_midpoint_and_extrapolation():
    assert np.allclose(edits.blend(A, B, 0.0), A) and np.allclose(edits.blend(A, B, 1.0), B)
    assert np.allclose(edits.blend(A, B, 0.5), (A + B) / 2)
    assert np.allclose(edits.blend(A, B, 1.5), B + 0.5 * (B - A)), "ratio 1.5 = 50% more like b"


def test_blend_on_some_layers_leaves_the_others():
    out = edits.blend(A, B, 1.0, "coarse")
    assert np.allclose(out[:4], B[:4]) and np.allclose(out[4:], A[4:])
    with pytest.raises(ValueError, match="layers"):
        edits.blend(A, B, 0.5, "toes")
    with pytest.raises(ValueError, match="finite"):
        edits.blend(A, B, float("nan"))


def test_average_and_mix():
    assert np.allclose(edits.average([A, B, C]), (A + B + C) / 3)
    m = edits.mix(A, B, 4)
    assert np.array_equal(m[:4], A[:4]) and np.array_equal(m[4:], B[4:])
    with pytest.raises(ValueError):
        edits.mix(A, B, 11)
    with pytest.raises(ValueError):
        edits.average([])


def test_direction_moves_only_the_chosen_layers_by_the_amount():
    d = np.zeros(16, np.float32)
    d[3] = 1
    out = edits.apply_direction(A, d, 2.0, "fine")
    assert np.allclose(out[8:, 3] - A[8:, 3], 2.0) and np.allclose(out[:8], A[:8])
    strip = edits.strip(A, d, 1.0, count=5)
    assert strip.shape == (5, 10, 16) and np.allclose(strip[2], A)
    assert np.allclose(strip[0, :, 3] - A[:, 3], -1) and np.allclose(strip[4, :, 3] - A[:, 3], 1)


def test_morph_rests_on_each_face_and_loops_back():
    seq = edits.morph_sequence(np.stack([A, B, C]), 30, loop=True)
    assert seq.shape == (30, 10, 16)
    assert np.allclose(seq[0], A) and np.allclose(seq[10], B) and np.allclose(seq[20], C)
    # The frame after the last would be A again: the step from the last frame to the first is small.
    step_wrap = np.abs(seq[0] - seq[-1]).max()
    step_mid = np.abs(seq[5] - seq[4]).max()
    assert step_wrap < step_mid, "eased: slow near the faces, no jump at the seam"
    open_seq = edits.morph_sequence(np.stack([A, B]), 11, loop=False)
    assert np.allclose(open_seq[0], A) and np.allclose(open_seq[-1], B)


def test_deform_loop_is_seamless_and_stays_on_its_layers():
    seq = edits.deform_loop(A, 24, "middle", w_std=1.0, seed=1)
    r = edits.layer_ranges(10)["middle"]
    assert np.allclose(seq[:, : r.start], A[: r.start]) and np.allclose(seq[:, r.stop:], A[r.stop:])
    frames_per_step = np.abs(np.diff(seq, axis=0)).max()
    assert np.abs(seq[0] - seq[-1]).max() <= frames_per_step * 1.01, "the last frame leads into the first"
    assert np.abs(seq - A).max() > 0.05, "it moves"


def test_plane_grid_corners_are_the_three_faces():
    grid = edits.plane_grid(A, B, C, n=3)
    assert grid.shape == (9, 10, 16)
    assert np.allclose(grid[0], A) and np.allclose(grid[2], B) and np.allclose(grid[6], C)
    assert np.allclose(grid[8], B + C - A)


def test_a_style_range_names_the_styles_it_moves():
    from engine.latent.edits import layer_mask, parse_layers

    assert parse_layers(10, "1-3") == range(1, 4)
    assert layer_mask(10, "1-3")[:, 0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert parse_layers(10, "middle") == range(4, 8)
    for bad in ("3-1", "0-10", "a-b", "-", "1-", "everything"):
        with pytest.raises(ValueError, match="style range A-B below 10"):
            parse_layers(10, bad)
