"""In-between faces drawn as people, for blends, averages and morphs.

Each in-between face is the projection of its parents' landmark-aligned morph
(``engine/latent/between.py``), started from their blend in W+. A morph's frames walk through
the members and, between each two, through that projected midpoint, so no frame is far from a
face the generator drew as a person. Where dlib finds no face in a parent, the straight blend in
W+ stands (it is what there is).

``bench/between.py`` judges the ways of finding it side by side with FaceNet, which nothing here
sees (``Rule``).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from engine.face.align import DESCRIPTOR_SIZE, aligned_landmarks
from engine.jobs.asks import Draw
from engine.jobs.engine import Engine
from engine.latent.batch import Member
from engine.latent.between import BETWEEN_STEPS, SHARPEN, morph
from engine.latent.projector import Projection
from engine.protocol import Face, as_face

MAX_MIDPOINTS = 16  # a morph of more faces walks the straight lines (each pair gets few frames anyway)


@dataclass(frozen=True)
class Rule:
    """How an in-between face is found: the dissolve sharpened (percent), the projection's steps.
    ``RULE`` is what members get."""

    sharpen: int = SHARPEN
    steps: int = BETWEEN_STEPS


RULE = Rule()


def landmarks(images: np.ndarray) -> list[np.ndarray] | None:
    """Each image's 68 landmarks in its own pixels, or None when dlib finds no face in one."""
    out = []
    for img in images:
        points, found = aligned_landmarks(img)
        if not found:
            return None
        out.append(points * img.shape[0] / DESCRIPTOR_SIZE)
    return out


def asked(images: np.ndarray, points: list[np.ndarray], weights, latents, rule: Rule = RULE) -> Member:
    """The projection of the parents' morph for ``weights``, from the parents' W+ ``latents``
    blended with the same weights."""
    start = sum(np.float32(w) * np.asarray(ws, np.float32) for w, ws in zip(weights, latents))
    target = morph(list(images), points, weights, rule.sharpen)
    return Member(target, rule.steps, start, every=rule.steps)


def kept(engine: Engine, projection: Projection) -> tuple[Face, np.ndarray]:
    """The in-between face a member may keep, and its image drawn from exactly that."""
    face = as_face(projection.ws, engine.pack(projection.noise))
    ws, maps = engine.face(face)
    return face, engine.render(ws[None], maps)[0]


def between(
    engine: Engine, parents: np.ndarray, weights, latents, rule: Rule = RULE
) -> Generator[Member, Projection, tuple[Face, np.ndarray] | None]:
    """The face between the faces drawn in ``parents`` (their W+ ``latents``) with ``weights``
    (summing to one): a kept face and its image; None where dlib finds no face in a parent. Use
    ``yield from``."""
    points = landmarks(parents)
    if points is None:
        return None
    projection = yield asked(parents, points, weights, latents, rule)
    return kept(engine, projection)


def morph_keys(
    engine: Engine, latents: list[np.ndarray], maps: list
) -> Generator[Draw | list[Member], object, tuple[list[np.ndarray], list]]:
    """A looping morph's key faces: each member, then the projected midpoint between it and the
    next (two members share one midpoint). The members alone where a face is not found, or past
    ``MAX_MIDPOINTS`` members. Use ``yield from``."""
    n = len(latents)
    if not 2 <= n <= MAX_MIDPOINTS:
        return latents, maps
    parents = yield Draw(np.stack(latents), maps, np.eye(n, dtype=np.float32))
    points = landmarks(parents)
    if points is None:
        return latents, maps
    pairs = [(0, 1)] if n == 2 else [(i, (i + 1) % n) for i in range(n)]
    projections = yield [asked(parents[[a, b]], [points[a], points[b]], (0.5, 0.5), [latents[a], latents[b]])
                         for a, b in pairs]
    mids = [engine.face(kept(engine, p)[0]) for p in projections]
    if n == 2:
        mids = mids * 2
    keys, key_maps = [], []
    for i in range(n):
        keys += [latents[i], mids[i][0]]
        key_maps += [maps[i], mids[i][1]]
    return keys, key_maps
