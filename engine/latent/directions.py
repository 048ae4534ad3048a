"""Attribute directions in W: learn (InterFaceGAN), factorise (SeFa), import, store.

A direction belongs to the model that made it (``model_id``) and is never applied to
another. Stored as one ``.npz`` per model: ``{name}`` arrays ``[num_ws, w_dim]`` and a
JSON ``meta`` entry (method, default layers, validation accuracy, …).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.model.networks import Generator
from engine.protocol.errors import ModelMismatch, UnknownDirection


@dataclass
class Direction:
    name: str
    vector: np.ndarray  # [num_ws, w_dim] float32, unit norm per style row
    model_id: str
    layers: str = "all"
    meta: dict = field(default_factory=dict)


class DirectionError(ValueError):
    pass


def unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def broadcast(vector: np.ndarray, num_ws: int, w_dim: int) -> np.ndarray:
    """``(w_dim,)``, ``(1, w_dim)`` or ``(num_ws, w_dim)`` -> ``[num_ws, w_dim]``; anything else is refused."""
    v = np.asarray(vector, dtype=np.float32)
    if v.shape == (w_dim,) or v.shape == (1, w_dim):
        return np.repeat(v.reshape(1, w_dim), num_ws, axis=0)
    if v.shape == (num_ws, w_dim):
        return v
    raise DirectionError(f"a direction of shape {v.shape} does not fit this model "
                         f"(expected ({w_dim},), (1, {w_dim}) or ({num_ws}, {w_dim}))")


def import_npy(path: str | Path, G: Generator, name: str | None = None, layers: str = "all") -> Direction:
    """A direction saved by another tool (InterFaceGAN, GANSpace, …) as ``.npy``."""
    try:
        v = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 (any failure to read a hostile file is one sentence)
        raise DirectionError(f"{Path(path).name} is not a readable .npy array ({exc})") from None
    if not np.isfinite(v).all():
        raise DirectionError(f"{Path(path).name} contains NaN or infinite values")
    vector = broadcast(v, G.num_ws, G.w_dim)
    norms = np.linalg.norm(vector, axis=1, keepdims=True)
    vector = vector / np.maximum(norms, 1e-12)
    return Direction(name or Path(path).stem, vector.astype(np.float32), G.model_id, layers,
                     {"method": "imported", "source": Path(path).name})


# --- SeFa ----------------------------------------------------------------------------------


def style_affines(G: Generator, layers: range | None = None) -> list[torch.nn.Module]:
    """The affine (style) layers of every synthesis layer, indexed like ``ws``."""
    affines = []
    for block in G.synthesis.blocks():
        affines += [layer.affine for layer in block.layers()]
    affines.append(G.synthesis.blocks()[-1].torgb.affine)
    return [affines[i] for i in (layers if layers is not None else range(len(affines)))]


def sefa(G: Generator, layers: range | None = None, count: int = 5) -> list[tuple[np.ndarray, float]]:
    """Closed-form factorisation (Shen & Zhou 2021): the top eigenvectors of AᵀA, where A
    stacks the (per-channel normalised) style weights of the chosen layers."""
    weight = torch.cat([a.weight.detach().float() * a.weight_gain for a in style_affines(G, layers)], dim=0)
    weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)  # each style channel
    eigvals, eigvecs = torch.linalg.eigh(weight.T @ weight)
    order = torch.argsort(eigvals, descending=True)[:count]
    return [(eigvecs[:, i].numpy().astype(np.float32), float(eigvals[i])) for i in order]


# --- InterFaceGAN ----------------------------------------------------------------------------



def fit_boundary(w: np.ndarray, scores: np.ndarray, keep: float = 0.02, val_fraction: float = 0.3,
                 seed: int = 0) -> tuple[np.ndarray, dict]:
    """Linear SVM on the top and bottom ``keep`` of the scores; returns the unit normal
    pointing towards higher scores, and figures (validation accuracy, counts)."""
    from sklearn.svm import LinearSVC

    ok = np.isfinite(scores)
    w, scores = w[ok], scores[ok]
    n = max(2, int(round(len(scores) * keep)))
    order = np.argsort(scores)
    idx = np.concatenate([order[:n], order[-n:]])
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(idx))
    idx, labels = idx[perm], labels[perm]
    n_val = int(len(idx) * val_fraction)
    x_mean = w.mean(0)
    x = w[idx] - x_mean
    clf = LinearSVC(C=1.0, max_iter=20_000).fit(x[n_val:], labels[n_val:])
    accuracy = float(clf.score(x[:n_val], labels[:n_val])) if n_val else float("nan")
    normal = unit(clf.coef_.reshape(-1))
    return normal, {"validation_accuracy": round(accuracy, 4), "train": len(idx) - n_val, "validation": n_val,
                    "samples": int(ok.sum()), "keep": keep}


def condition(direction: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Remove the components along other boundaries (e.g. age without gender drift)."""
    basis: list[np.ndarray] = []
    for o in others:  # Gram-Schmidt, so several conditions compose
        o = o.astype(np.float64)
        for b in basis:
            o = o - (o @ b) * b
        if np.linalg.norm(o) > 1e-8:
            basis.append(o / np.linalg.norm(o))
    d = direction.astype(np.float64)
    for b in basis:
        d = d - (d @ b) * b
    return unit(d)


# --- storage -------------------------------------------------------------------------------


def save_directions(directions: list[Direction], path: str | Path) -> None:
    meta = {d.name: {"model_id": d.model_id, "layers": d.layers, **d.meta} for d in directions}
    arrays = {d.name: d.vector.astype(np.float32) for d in directions}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def load_directions(path: str | Path, model_id: str) -> dict[str, Direction]:
    """Directions of ``path`` that belong to ``model_id``; others are skipped."""
    path = Path(path)
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        out = {}
        for name, m in meta.items():
            if m.get("model_id") == model_id:
                rest = {k: v for k, v in m.items() if k not in ("model_id", "layers")}
                out[name] = Direction(name, data[name], model_id, m.get("layers", "all"), rest)
    return out


def get_direction(directions: dict[str, Direction], name: str, model_id: str) -> Direction:
    if name not in directions:
        known = ", ".join(sorted(directions)) or "none"
        raise UnknownDirection(f"I don't know the direction '{name[:40]}'; this model has: {known}.")
    d = directions[name]
    if d.model_id != model_id:
        raise ModelMismatch(f"The direction '{name}' belongs to another model.")
    return d
