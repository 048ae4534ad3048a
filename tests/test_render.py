"""Pictures: PNGs, montages, GIFs that loop and fit a byte budget, MP4s."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.model.images import from_uint8, gif_bytes, montage, mp4_bytes, png_bytes, to_uint8

rng = np.random.default_rng(0)
FRAMES = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(40)]


def test_uint8_round_trip():
    arr = FRAMES[0]
    assert np.array_equal(to_uint8(from_uint8(arr))[0], arr)


def test_png_and_montage():
    grid = montage(np.stack(FRAMES[:5]), cols=3, pad=2)
    assert grid.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2, 3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(grid)))), grid)


def test_gif_loops_forever_and_keeps_every_frame():
    gif = Image.open(io.BytesIO(gif_bytes(FRAMES, fps=10)))
    assert gif.n_frames == 40 and gif.info["loop"] == 0 and gif.info["duration"] == 100


def test_gif_shrinks_until_it_fits():
    big = gif_bytes(FRAMES)
    small = gif_bytes(FRAMES, max_bytes=len(big) // 4)
    assert len(small) <= len(big) // 4
    assert Image.open(io.BytesIO(small)).n_frames >= 8
    with pytest.raises(ValueError, match="cannot fit"):
        gif_bytes(FRAMES, max_bytes=100)


def test_mp4_is_an_mp4():
    data = mp4_bytes(FRAMES[:24], fps=24)
    assert data[4:8] == b"ftyp"
