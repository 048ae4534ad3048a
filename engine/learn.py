"""Learning a model's attribute directions: sample, render, label, fit (InterFaceGAN),
condition age on gender, add SeFa factors. Used by ``scripts/learn_directions.py`` and
``wspace directions learn``."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from engine.directions import Direction, condition, fit_boundary, sefa
from engine.labels import ATTRIBUTES, label_face
from engine.networks import Generator
from engine.render import to_uint8

# Where each attribute lives in the styles, from a layer scan on kept real faces
# (docs/benchmarks.md, "Kept face"): expression in the middle styles, head turn in styles
# 1-3; age and gender everywhere.
DEFAULT_LAYERS = {"age": "all", "gender": "all", "smile": "middle", "yaw": "1-3"}
AMOUNT_SPAN = 1.5  # one unit of a member's "amount" = 1.5 σ of W's spread along the normal


def sample_and_label(G: Generator, samples: int, seed: int, batch: int = 32,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """``samples`` latents in W, every attribute's score for each, and the face-detection rate."""
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = torch.cat([G.mapping(z[i:i + 1000])[:, 0] for i in range(0, samples, 1000)])
    scores = {a: np.full(samples, np.nan) for a in ATTRIBUTES}
    detected = 0
    for i in range(0, samples, batch):
        with torch.no_grad():
            imgs = to_uint8(G.synthesis(w[i:i + batch, None].expand(-1, G.num_ws, -1).contiguous()))
        for j, img in enumerate(imgs):
            labels = label_face(img)
            detected += int(labels["detected"])
            for a in ATTRIBUTES:
                scores[a][i + j] = labels[a]
        if progress:
            progress(min(i + batch, samples), samples)
    return w.numpy(), scores, detected / samples


def learn_directions(G: Generator, samples: int = 10_000, keep: float = 0.02, seed: int = 7,
                     attributes: tuple[str, ...] = ATTRIBUTES, sefa_count: int = 3,
                     progress: Callable[[int, int], None] | None = None) -> tuple[list[Direction], dict]:
    t0 = time.time()
    w, scores, detect_rate = sample_and_label(G, samples, seed, progress=progress)
    normals, report = {}, {"samples": samples, "face_detected_rate": round(detect_rate, 3)}
    for a in ATTRIBUTES:
        normals[a], figures = fit_boundary(w, scores[a], keep=keep, seed=seed)
        report[a] = figures | {"score_mean": round(float(np.nanmean(scores[a])), 3),
                               "score_std": round(float(np.nanstd(scores[a])), 3)}
    if "age" in attributes:
        report["age"]["cos_with_gender_before_conditioning"] = round(float(normals["age"] @ normals["gender"]), 3)
        normals["age"] = condition(normals["age"], [normals["gender"]])
    spread = w - w.mean(0)
    out = []
    for a in attributes:
        scale = AMOUNT_SPAN * float(np.std(spread @ normals[a]))
        out.append(Direction(a, np.repeat(normals[a][None], G.num_ws, axis=0), G.model_id, DEFAULT_LAYERS[a],
                             {"method": "interfacegan" + ("+conditioned(gender)" if a == "age" else ""),
                              "scale": round(scale, 4), **report[a]}))
    for k, (vec, eigval) in enumerate(sefa(G, count=sefa_count)):
        scale = AMOUNT_SPAN * float(np.std(spread @ vec))
        out.append(Direction(f"sefa{k}", np.repeat(vec[None], G.num_ws, axis=0), G.model_id, "all",
                             {"method": "sefa", "eigenvalue": round(eigval, 3), "scale": round(scale, 4)}))
    report["seconds"] = round(time.time() - t0, 1)
    return out, report
