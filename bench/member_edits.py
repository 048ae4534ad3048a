"""What the edits do to members' kept faces, measured on projected real photos; printed as JSON.

Reads kept faces (latent files, e.g. ``bench/survive.py --keep``) and, for every direction,
draws amounts -3…+3 with each face's own noise maps, then measures what the sentence a member
reads promises: age (the labeller's years; how many faces move ≥ 5 y from -3 to +3), gender
(verdict flips between -3 and +3), smile and yaw (the landmark measures), and identity drift
from the kept face by the judge (FaceNet, ``bench/judge.py``; ≥ 0.85 reads as another person)
at every amount: the sentence says past which amount the usual face (mean drift) reads as
someone else. ``--sweep`` tries each named direction's styles and scale; ``--write-effects``
records one sentence per direction in the directions file (what /edit and /age show).

    python -m bench.member_edits --faces out/bench/kept/CHOSEN [--sweep] [--write-effects] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench import judge
from bench.report import report
from engine.face.labels import label_face
from engine.jobs.bundle import directions_path_for
from engine.jobs.engine import Engine
from engine.latent import edits
from engine.latent.directions import save_directions
from engine.latent.kept import load_npz
from engine.protocol import as_face

AMOUNTS = (-3, -2, -1, 0, 1, 2, 3)
OTHER_PERSON = 0.85  # the judge's different-people range starts here (bench/judge.py)
SWEEP = {"age": [("all", 1.0), ("all", 1.5), ("0-5", 1.5), ("4-9", 1.5), ("0-7", 1.5)],
         "gender": [("all", 1.0), ("all", 1.5), ("0-5", 1.5), ("0-7", 1.5)]}


def load_faces(folder: Path, engine: Engine) -> dict:
    return {p.stem: engine.face(as_face(*load_npz(p)[:2])) for p in sorted(folder.glob("*.npz"))}


def measure(engine: Engine, faces: dict, name: str, layers: str, scale_mul: float = 1.0) -> dict:
    d = engine.directions[name]
    scale = float(d.meta.get("scale", engine.w_std / 3)) * scale_mul
    rows = {k: engine.render(np.stack([edits.apply_direction(ws, d.vector, a * scale, layers) for a in AMOUNTS]), maps)
            for k, (ws, maps) in faces.items()}
    imgs = np.concatenate(list(rows.values()))
    emb = judge.embed(imgs).reshape(len(rows), len(AMOUNTS), -1)
    zero = AMOUNTS.index(0)
    drift = judge.distance(emb, emb[:, zero:zero + 1])  # [faces, amounts]
    labels = [[label_face(row[i]) for i in (0, len(AMOUNTS) - 1)] for row in rows.values()]
    n = len(rows)
    out = {"layers": layers, "scale": round(scale, 3), "n": n,
           "drift_by_amount": {str(a): round(float(drift[:, i].mean()), 3) for i, a in enumerate(AMOUNTS)},
           "drift_max_by_amount": {str(a): round(float(drift[:, i].max()), 3) for i, a in enumerate(AMOUNTS)}}
    out["same_person_within"] = within(drift.mean(axis=0))  # the usual face
    out["every_face_within"] = within(drift.max(axis=0))
    moves = [hi["age"] - lo["age"] for lo, hi in labels]
    out.update(years=[round(float(m), 1) for m in moves], moved_5y=int(sum(m >= 5 for m in moves)),
               years_median=round(float(np.median(moves)), 1),
               flips=int(sum(np.sign(lo["gender"]) != np.sign(hi["gender"]) for lo, hi in labels)))
    for attr in ("smile", "yaw"):
        change = [hi[attr] - lo[attr] for lo, hi in labels]
        out[f"{attr}_right_way"] = int(sum(c > 0 for c in change))
        out[f"{attr}_change"] = round(float(np.mean(change)), 3)
    out["smile_percent"] = round(float(100 * out["smile_change"] / np.mean([lo["smile"] for lo, _ in labels])), 1)
    return out


def within(drift: np.ndarray) -> int:
    """The largest amount on both sides, up to which ``drift`` (per amount) stays the same person."""
    ok = 0
    for a in range(1, max(AMOUNTS) + 1):
        if max(drift[AMOUNTS.index(a)], drift[AMOUNTS.index(-a)]) >= OTHER_PERSON:
            break
        ok = a
    return ok


def sentence(name: str, m: dict) -> str:
    """What -3 to +3 measurably does to members' faces, in one sentence (what /edit shows)."""
    n = m["n"]
    on = f"On {n} real photos projected here, {name} -3 to +3"
    if name == "age":
        what = (f"{on} moves the age a classifier reads by {m['years_median']:+.0f} years (median; 5 or more "
                f"on {m['moved_5y']} of {n})")
    elif name == "gender":
        what = f"{on} changes how a gender classifier reads the face on {m['flips']} of {n}"
    elif name == "smile":
        what = (f"{on} changes the smile measure by {m['smile_percent']:+.0f}% (the right way on "
                f"{m['smile_right_way']} of {n})")
    elif name == "yaw":
        what = (f"{on} turns the head: the nose moves {100 * m['yaw_change']:+.0f}% of the face width (the right "
                f"way on {m['yaw_right_way']} of {n})")
    else:
        what = (f"{name} is an unnamed factor of this model: on {n} real photos projected here, -3 to +3 moves the "
                f"age a classifier reads by {m['years_median']:+.0f} years (median), changes how it reads gender on "
                f"{m['flips']} of {n}, changes the smile measure by {m['smile_percent']:+.0f}% and moves the nose "
                f"{100 * m['yaw_change']:+.0f}% of the face width")
    same = m["same_person_within"]
    if same >= 3:
        return what + "; the face stays the same person throughout."
    if same == 0:
        return what + "; even ±1 usually makes the face read as someone else."
    return what + f"; beyond ±{same} the face usually reads as someone else."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True, help="a folder of kept faces (.npz)")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--sweep", action="store_true", help="try each named direction's styles and scale")
    ap.add_argument("--write-effects", action="store_true", help="record each direction's sentence in its file")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.time()
    engine = Engine(args.model)
    faces = load_faces(args.faces, engine)
    out = {"model_id": engine.model_id, "faces": list(faces), "directions": {}}
    for name, d in engine.directions.items():
        m = measure(engine, faces, name, d.layers)
        m["sentence"] = sentence(name, m)
        out["directions"][name] = m
        if args.write_effects:
            d.meta["effect"] = m["sentence"]
    if args.sweep:
        out["sweep"] = {name: [measure(engine, faces, name, layers, mul) for layers, mul in tries]
                        for name, tries in SWEEP.items()}
    if args.write_effects:
        save_directions(list(engine.directions.values()), directions_path_for(args.model))
    out["seconds"] = round(time.time() - t0, 1)
    report(out, args.out)


if __name__ == "__main__":
    main()
