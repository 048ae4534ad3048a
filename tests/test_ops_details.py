"""Small things a member notices in the engine's answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.jobs.dispatch import run
from engine.jobs.engine import Engine
from engine.protocol import MorphRequest, RandomRequest, as_face
from engine.protocol.errors import BadArgument


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine(tiny_model)


def test_whole_number_bounds_are_printed_in_full(engine):
    with pytest.raises(BadArgument) as exc:
        run(engine, RandomRequest(seed=-1))
    assert str(exc.value) == "seed must lie between 0 and 4294967295."


def test_an_mp4_morph_lasts_as_long_as_the_gif(engine):
    import imageio.v3 as iio

    ws = engine.G.mapping(__import__("torch").randn(2, engine.G.z_dim)).detach().numpy()
    lengths = {}
    for fmt in ("gif", "mp4"):
        data = run(engine, MorphRequest(faces=(as_face(ws[0]), as_face(ws[1])), frames=24, format=fmt)).files[0].data
        if fmt == "gif":
            gif = Image.open(io.BytesIO(data))
            lengths[fmt] = sum(gif.info["duration"] for _ in _frames(gif)) / 1000
        else:
            meta = (
                iio.immeta(data, extension=".mp4", plugin="pyav") if _has_pyav() else iio.immeta(data, extension=".mp4")
            )
            lengths[fmt] = meta["duration"]
    assert lengths["mp4"] == pytest.approx(lengths["gif"], rel=0.1), lengths


def _frames(gif):
    for i in range(gif.n_frames):
        gif.seek(i)
        yield i


def _has_pyav() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


async def test_storage_stats_count_the_write_ahead_log(tmp_path):
    from bot.storage import Storage

    s = await Storage.open(tmp_path / "db.sqlite3")
    await s.save_latent(1, 2, "m", np.zeros((10, 256), np.float32), "project")
    wal = tmp_path / "db.sqlite3-wal"
    assert wal.exists() and wal.stat().st_size > 0
    stats = await s.stats()
    assert stats["database_bytes"] >= (tmp_path / "db.sqlite3").stat().st_size + wal.stat().st_size
    await s.close()
