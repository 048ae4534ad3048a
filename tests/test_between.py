"""Between two faces, a person: the landmark-aligned morph, and the blends, averages and morphs
projected onto it, each a kept face that redraws exactly what was shown."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.face.align import align_face, aligned_landmarks
from engine.jobs.between import landmarks
from engine.jobs.dispatch import run
from engine.jobs.engine import Engine
from engine.latent.batch import project
from engine.latent.between import morph, sharpened, warp
from engine.protocol import AverageRequest, BlendRequest, MorphRequest, as_face
from tests.photos import astronaut, grace_hopper


@pytest.fixture(scope="module")
def engine():
    return Engine()


@pytest.fixture(scope="module")
def faces(engine):
    """The two offline photos, projected briefly."""
    out = []
    for photo in (grace_hopper(), astronaut()):
        proj = project(engine.G, align_face(photo, engine.G.resolution, engine.framing).image, 40, every=40)
        out.append(as_face(proj.ws, engine.pack(proj.noise)))
    return out


def test_a_warp_onto_its_own_points_is_the_image():
    from scipy.spatial import Delaunay

    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    pts = np.array([[0, 0], [31, 0], [0, 31], [31, 31], [10, 12], [20, 9], [16, 22]], float)
    out = warp(img, pts, pts, Delaunay(pts))
    assert np.abs(out - img).max() < 1e-6


def test_a_dissolve_gets_its_detail_back_and_one_face_stays_itself():
    rng = np.random.default_rng(1)
    a, b = ((rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(2))
    pts = [np.array([[8.0 + 16 * (i % 2), 8.0 + 16 * (i // 2)] for i in range(4)])] * 2
    plain, crisp = morph([a, b], pts, (0.5, 0.5)), morph([a, b], pts, (0.5, 0.5), sharpen=60)

    def detail(img):  # energy of the difference between neighbours
        return float(np.abs(np.diff(img.astype(float), axis=1)).mean())

    assert detail(crisp) > 1.2 * detail(plain), "the dissolve's lost detail is restored"
    assert np.array_equal(sharpened(a, 0), a)
    assert np.array_equal(morph([a, b], pts, (1.0, 0.0), sharpen=60), a), "one face alone is not sharpened"


def test_the_morph_puts_each_feature_in_one_place(engine, faces):
    drawn = [engine.render(ws[None], maps)[0] for ws, maps in (engine.face(f) for f in faces)]
    points = landmarks(np.stack(drawn))
    assert points is not None
    assert np.array_equal(morph(drawn, points, (1.0, 0.0)), drawn[0]), "all of one face is that face"
    mid = morph(drawn, points, (0.5, 0.5))
    found, ok = aligned_landmarks(mid)
    assert ok, "a face is found in the morph"
    mean = (points[0] + points[1]) / 2
    assert np.abs(found * mid.shape[0] / 256 - mean).mean() < 2.0, "its features sit at the mean shape"


def png(file) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(file.data)).convert("RGB"))


def test_a_blend_is_a_kept_face_that_redraws_what_was_shown(engine, faces):
    result = run(engine, BlendRequest(a=faces[0], b=faces[1], ratio=0.5))
    ws, maps = engine.face(result.face)
    shown = engine.render(ws[None], maps)[0]
    assert np.array_equal(png(result.files[0]), engine.display(shown)), "blend.png is the kept face"
    straight = engine.draw((faces[0].ws + (faces[1].ws - faces[0].ws) * 0.5)[None],
                           [engine.face(f)[1] for f in faces], np.full((1, 2), 0.5, np.float32))[0]
    assert not np.array_equal(shown, straight), "not the straight line in W+"
    assert aligned_landmarks(shown)[1], "a face is found in it"
    average = run(engine, AverageRequest(faces=tuple(faces)))
    ws, maps = engine.face(average.face)
    shown = engine.render(ws[None], maps)[0]
    assert np.array_equal(png(average.files[0]), engine.display(shown)) and aligned_landmarks(shown)[1]
    styles = run(engine, BlendRequest(a=faces[0], b=faces[1], ratio=0.5, layers="coarse"))
    assert np.array_equal(styles.face.ws[4:], faces[0].ws[4:]), "a blend of some styles stays a style blend"


def test_a_morph_walks_through_the_people_between(engine, faces):
    result = run(engine, MorphRequest(faces=tuple(faces), frames=8))
    gif = Image.open(io.BytesIO(result.files[0].data))
    assert gif.n_frames == 8
