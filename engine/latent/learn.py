"""Learning a model's attribute directions: sample, render, label, fit (InterFaceGAN),
condition age on gender, add SeFa factors. Used by ``scripts/learn_directions.py`` and
``wspace directions learn``."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from engine.face.labels import ATTRIBUTES, label_face
from engine.latent.directions import Direction, condition, fit_boundary, sefa
from engine.latent.edits import apply_direction
from engine.model.images import to_uint8
from engine.model.networks import Generator

# Where each attribute lives in the styles, from a layer scan on kept real faces
# (docs/benchmarks.md, "Kept face"): expression in the middle styles, head turn in styles
# 1-3; age and gender everywhere.
DEFAULT_LAYERS = {"age": "all", "gender": "all", "smile": "middle", "yaw": "1-3"}
AMOUNT_SPAN = 1.5  # one unit of a member's "amount" = 1.5 σ of W's spread along the normal


def sample_and_label(
    G: Generator, samples: int, seed: int, batch: int = 32, progress: Callable[[int, int], None] | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """``samples`` latents in W, every attribute's score for each, and the face-detection rate."""
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = torch.cat([G.mapping(z[i : i + 1000])[:, 0] for i in range(0, samples, 1000)])
    scores = {a: np.full(samples, np.nan) for a in ATTRIBUTES}
    detected = 0
    for i in range(0, samples, batch):
        with torch.no_grad():
            imgs = to_uint8(G.synthesis(w[i : i + batch, None].expand(-1, G.num_ws, -1).contiguous()))
        for j, img in enumerate(imgs):
            labels = label_face(img)
            detected += int(labels["detected"])
            for a in ATTRIBUTES:
                scores[a][i + j] = labels[a]
        if progress:
            progress(min(i + batch, samples), samples)
    return w.numpy(), scores, detected / samples


def learn_directions(
    G: Generator,
    samples: int = 10_000,
    keep: float = 0.02,
    seed: int = 7,
    attributes: tuple[str, ...] = ATTRIBUTES,
    sefa_count: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Direction], dict]:
    t0 = time.time()
    w, scores, detect_rate = sample_and_label(G, samples, seed, progress=progress)
    normals, report = {}, {"samples": samples, "face_detected_rate": round(detect_rate, 3)}
    for a in ATTRIBUTES:
        normals[a], figures = fit_boundary(w, scores[a], keep=keep, seed=seed)
        report[a] = figures | {
            "score_mean": round(float(np.nanmean(scores[a])), 3),
            "score_std": round(float(np.nanstd(scores[a])), 3),
        }
    if "age" in attributes:
        report["age"]["cos_with_gender_before_conditioning"] = round(float(normals["age"] @ normals["gender"]), 3)
        normals["age"] = condition(normals["age"], [normals["gender"]])
    spread = w - w.mean(0)
    out = []
    for a in attributes:
        scale = AMOUNT_SPAN * float(np.std(spread @ normals[a]))
        out.append(
            Direction(
                a,
                np.repeat(normals[a][None], G.num_ws, axis=0),
                G.model_id,
                DEFAULT_LAYERS[a],
                {
                    "method": "interfacegan" + ("+conditioned(gender)" if a == "age" else ""),
                    "scale": round(scale, 4),
                    **report[a],
                },
            )
        )
    for k, (vec, eigval) in enumerate(sefa(G, count=sefa_count)):
        scale = AMOUNT_SPAN * float(np.std(spread @ vec))
        out.append(
            Direction(
                f"sefa{k}",
                np.repeat(vec[None], G.num_ws, axis=0),
                G.model_id,
                "all",
                {"method": "sefa", "eigenvalue": round(eigval, 3), "scale": round(scale, 4)},
            )
        )
    report["unsupervised_scales"] = match_unsupervised_scales(G, out, seed=seed)
    report["seconds"] = round(time.time() - t0, 1)
    return out, report


# --- how far one unit of an unsupervised factor goes ------------------------------------------

CALIBRATION_FACES = 48


def image_change(G: Generator, w: torch.Tensor, d: Direction, scale: float) -> float:
    """Mean absolute change of the model's faces (uint8 levels) when ``w`` ``[N, w_dim]``
    moves ±``scale`` along ``d`` on its layers."""
    base = w[:, None].expand(-1, G.num_ws, -1).numpy()
    moved = np.stack([apply_direction(ws, d.vector, a * scale, d.layers) for a in (-1.0, 1.0) for ws in base])
    with torch.no_grad():
        ref = to_uint8(G.synthesis(torch.from_numpy(np.ascontiguousarray(base)))).astype(np.float32)
        out = to_uint8(G.synthesis(torch.from_numpy(moved))).astype(np.float32)
    return float(np.abs(out - np.concatenate([ref, ref])).mean())


def match_unsupervised_scales(
    G: Generator, directions: list[Direction], faces: int = CALIBRATION_FACES, seed: int = 7
) -> dict:
    """Give every unsupervised factor (SeFa) the unit the named directions have.

    A named direction's unit is 1.5 σ of W along its normal, which suits a boundary fitted
    to labels; the same rule made a SeFa factor's unit 3–6× stronger in the image (its
    axis is one of the model's main ones), and at ±2 dlib found no face in 40–50 % of
    kept faces (docs/benchmarks.md). So a factor's unit is set to change the model's faces
    by as much as the named directions' units do (their median mean change, in levels),
    found by two proportional corrections from its spread unit. Changes ``meta["scale"]`` in place;
    returns the figures.
    """
    named = [d for d in directions if d.meta.get("method", "").startswith("interfacegan")]
    factors = [d for d in directions if d.meta.get("method") == "sefa"]
    if not named or not factors:
        return {}
    z = torch.randn(faces, G.z_dim, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        w = G.mapping(z)[:, 0].cpu()
    target = float(np.median([image_change(G, w, d, float(d.meta["scale"])) for d in named]))
    report = {"target_levels_per_unit": round(target, 3)}
    for d in factors:
        scale = float(d.meta["scale"])
        for _ in range(2):  # the change grows a little faster than linearly: correct twice
            scale *= target / max(image_change(G, w, d, scale), 1e-6)
        d.meta["scale"] = round(scale, 4)
        d.meta["scale_rule"] = f"one unit changes the model's faces by {target:.2f} levels, as the named directions do"
        report[d.name] = {"scale": d.meta["scale"], "levels_per_unit": round(image_change(G, w, d, scale), 3)}
    return report
