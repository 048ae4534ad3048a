"""Do the shipped directions do what their names say? Printed as JSON.

On latents from held-out seeds: age predicted along amount -3…+3 (mean Spearman);
identity kept (dlib distance between amount 0 and ±2); gender flips between -3 and +3;
smile and yaw labeller scores move with the sign. Also the size of a 16-frame,
8-face morph GIF at 256 px.

    python bench/directions.py [--count 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.align import face_descriptor  # noqa: E402
from engine.edits import apply_direction, morph_sequence  # noqa: E402
from engine.labels import label_face  # noqa: E402
from engine.ops import Engine  # noqa: E402
from engine.render import gif_bytes, resize  # noqa: E402
from engine.sampling import ws_from_seeds  # noqa: E402

HELD_OUT_SEEDS = range(900_000, 901_000)
AMOUNTS = np.arange(-3, 4)


def edited(engine: Engine, ws: np.ndarray, name: str, amounts) -> np.ndarray:
    d = engine.directions[name]
    scale = float(d.meta.get("scale", engine.w_std / 3))
    return engine.render(np.stack([apply_direction(ws, d.vector, a * scale, d.layers) for a in amounts]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.time()
    engine = Engine(args.model)
    latents = ws_from_seeds(engine.G, list(HELD_OUT_SEEDS[: args.count]), 0.7).numpy()
    spearman, identity, flips, smile_ok, yaw_ok = [], [], [], [], []
    for ws in tqdm(latents, desc="faces"):
        ages = edited(engine, ws, "age", AMOUNTS)
        labels = [label_face(im) for im in ages]
        rho = spearmanr(AMOUNTS, [lb["age"] for lb in labels]).statistic
        spearman.append(0.0 if np.isnan(rho) else rho)
        base = face_descriptor(ages[3])
        identity.append(np.mean([np.linalg.norm(face_descriptor(ages[i]) - base) for i in (1, 5)]))
        g = [label_face(im)["gender"] for im in edited(engine, ws, "gender", [-3, 3])]
        flips.append(np.sign(g[0]) != np.sign(g[1]))
        s = [label_face(im)["smile"] for im in edited(engine, ws, "smile", [-2, 2])]
        smile_ok.append(s[1] > s[0])
        y = [label_face(im)["yaw"] for im in edited(engine, ws, "yaw", [-2, 2])]
        yaw_ok.append(y[1] > y[0])
    faces = engine.render(morph_sequence(latents[:8], 16))
    gif = gif_bytes([resize(f, 256) for f in faces], fps=12)
    result = {
        "model_id": engine.model_id, "count": args.count,
        "age_spearman_mean": round(float(np.mean(spearman)), 3),
        "identity_distance_at_pm2": round(float(np.mean(identity)), 3),
        "gender_flip_rate": round(float(np.mean(flips)), 3),
        "smile_moves_with_sign": round(float(np.mean(smile_ok)), 3),
        "yaw_moves_with_sign": round(float(np.mean(yaw_ok)), 3),
        "morph_gif_16f_8faces_256px_bytes": len(gif),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
