"""Do the shipped directions do what their names say? Printed as JSON.

On latents from held-out seeds: age predicted along amount -3…+3 (mean Spearman);
identity kept (dlib distance between amount 0 and ±2, for every named direction);
gender flips between -3 and +3; smile and yaw labeller scores move with the sign.
Also the size of a 16-frame, 8-face morph GIF at 256 px, and each direction's measured
effect from -3 to +3 in its labeller's own units; an unnamed factor (SeFa) is measured in
all four (and its identity at ±2), so members are told what it does. With ``--write-effects`` that effect
goes into the directions file as one sentence per direction, which /edit, /age and
``wspace edit`` show with every result (members must not be told more than the model does).

    python -m bench.directions [--count 100] [--write-effects]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from engine.face.align import face_descriptor
from engine.face.labels import label_face
from engine.jobs.bundle import directions_path_for
from engine.jobs.engine import Engine
from engine.latent.directions import save_directions
from engine.latent.edits import apply_direction, morph_sequence
from engine.model.images import gif_bytes, resize
from engine.model.sampling import ws_from_seeds

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
    ap.add_argument("--directions", type=Path, default=None, help="a directions .npz (default: the model's own)")
    ap.add_argument("--write-effects", action="store_true", help="record each direction's measured effect in the file")
    args = ap.parse_args()
    t0 = time.time()
    engine = Engine(args.model, directions_path=args.directions)
    latents = ws_from_seeds(engine.G, list(HELD_OUT_SEEDS[: args.count]), 0.7).numpy()
    spearman, flips, smile_ok, yaw_ok = [], [], [], []
    identity = {name: [] for name in ("age", "gender", "smile", "yaw")}
    gender_ends, ages, smiles, yaws = [], [], [], []
    for ws in tqdm(latents, desc="faces"):
        faces = {name: edited(engine, ws, name, AMOUNTS) for name in identity}
        for name, row in faces.items():  # amount 0 is row 3; ±2 are rows 1 and 5
            base = face_descriptor(row[3])
            identity[name].append(np.mean([np.linalg.norm(face_descriptor(row[i]) - base) for i in (1, 5)]))
        age_row = [label_face(im)["age"] for im in faces["age"]]
        ages.append((age_row[0], age_row[-1]))
        rho = spearmanr(AMOUNTS, age_row).statistic
        spearman.append(0.0 if np.isnan(rho) else rho)
        g = [label_face(faces["gender"][i])["gender"] for i in (0, 6)]
        gender_ends.append(g)
        flips.append(bool(np.isfinite(g).all() and np.sign(g[0]) != np.sign(g[1])))
        s = [label_face(faces["smile"][i])["smile"] for i in (1, 5)]
        smile_ok.append(s[1] > s[0])
        smiles.append([label_face(faces["smile"][i])["smile"] for i in (0, 6)])
        y = [label_face(faces["yaw"][i])["yaw"] for i in (1, 5)]
        yaw_ok.append(y[1] > y[0])
        yaws.append([label_face(faces["yaw"][i])["yaw"] for i in (0, 6)])
    unnamed = {name: unnamed_effect(engine, latents, name) for name in engine.directions if name not in identity}
    morph = engine.render(morph_sequence(latents[:8], 16))
    gif = gif_bytes([resize(f, 256) for f in morph], fps=12)
    result = {
        "model_id": engine.model_id, "count": args.count,
        "age_spearman_mean": round(float(np.mean(spearman)), 3),
        "identity_distance_at_pm2": {name: round(float(np.mean(v)), 3) for name, v in identity.items()},
        "gender_flip_rate": round(float(np.mean(flips)), 3),
        "gender_log_odds_at_minus3_plus3": [round(float(x), 2) for x in np.nanmean(gender_ends, axis=0)],
        "smile_moves_with_sign": round(float(np.mean(smile_ok)), 3),
        "yaw_moves_with_sign": round(float(np.mean(yaw_ok)), 3),
        "morph_gif_16f_8faces_256px_bytes": len(gif),
    }
    result["unnamed"] = unnamed
    result["effects"] = effects(engine, result, np.nanmean(ages, axis=0), np.nanmean(smiles, axis=0),
                                np.nanmean(yaws, axis=0))
    if args.write_effects:
        for name, text in result["effects"].items():
            engine.directions[name].meta["effect"] = text
        path = args.directions or directions_path_for(args.model)
        save_directions(list(engine.directions.values()), path)
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=2))


def effects(engine: Engine, r: dict, age, smile, yaw) -> dict[str, str]:
    """One sentence per direction: what -3 to +3 measurably does on this model's faces."""
    n = r["count"]
    out = {
        "age": f"On this model, age -3 to +3 moves the predicted age by about {age[1] - age[0]:.0f} years "
        f"({age[0]:.0f} to {age[1]:.0f}, mean of {n} faces); it reads as faint shading more than ageing.",
        "gender": f"On this model, gender -3 to +3 flips the labeller's verdict on {r['gender_flip_rate']:.0%} "
        f"of {n} faces.",
        "smile": f"On this model, smile -3 to +3 raises the smile measure (mouth width and corner lift over eye "
        f"distance) by {100 * (smile[1] / smile[0] - 1):.0f}% (the right way on {r['smile_moves_with_sign']:.0%} "
        f"of {n} faces).",
        "yaw": f"On this model, yaw -3 to +3 turns the head: the nose moves {100 * (yaw[1] - yaw[0]):.0f}% "
        f"of the face width (the right way on {r['yaw_moves_with_sign']:.0%} of {n} faces).",
    }
    for name, d in engine.directions.items():
        if name in out:
            continue
        u = r.get("unnamed", {}).get(name)
        if u is None:
            out[name] = (
                f"{name} is an unnamed factor of this model ({d.meta.get('method', 'imported')}); "
                "what it changes was not measured."
            )
            continue
        out[name] = (
            f"{name} is an unnamed factor of this model ({d.meta.get('method', 'imported')}). Measured on "
            f"{n} faces, -3 to +3 moves the predicted age by {signed(u['age_years'])} years, flips the "
            f"gender verdict on {u['gender_flip_rate']:.0%} of faces, changes the smile measure by "
            f"{signed(u['smile_percent'])}% and moves the nose {signed(u['yaw_percent'])}% of the face width."
        )
    return out


def signed(x: float) -> str:
    return f"{int(round(x)):+d}"  # "+0", never "-0"


def unnamed_effect(engine: Engine, latents: np.ndarray, name: str) -> dict:
    """What an unnamed factor does from -3 to +3, in the named directions' measures, and
    how much identity it keeps at ±2."""
    ends, ident, flips = [], [], []
    for ws in latents:
        row = edited(engine, ws, name, (-3, -2, 0, 2, 3))
        base = face_descriptor(row[2])
        ident.append(np.mean([np.linalg.norm(face_descriptor(row[i]) - base) for i in (1, 3)]))
        lo, hi = label_face(row[0]), label_face(row[4])
        ends.append([[lo[a], hi[a]] for a in ("age", "smile", "yaw")])
        g = [lo["gender"], hi["gender"]]
        flips.append(bool(np.isfinite(g).all() and np.sign(g[0]) != np.sign(g[1])))
    (age0, age1), (smile0, smile1), (yaw0, yaw1) = np.nanmean(np.asarray(ends, dtype=float), axis=0)
    return {
        "age_years": round(float(age1 - age0), 1),
        "gender_flip_rate": round(float(np.mean(flips)), 3),
        "smile_percent": round(float(100 * (smile1 / smile0 - 1)), 1),
        "yaw_percent": round(float(100 * (yaw1 - yaw0)), 1),
        "identity_distance_at_pm2": round(float(np.mean(ident)), 3),
    }


if __name__ == "__main__":
    main()
