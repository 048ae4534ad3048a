"""Where dlib's descriptor distance puts the same person and different people at the model's
resolution, on real photos: the calibration of the words members read (engine/jobs/lookalike.py
``BANDS``); printed as JSON.

Same person: each kept face against its own aligned photo (what /project compares). Different
people: every pair of kept faces, and every pair of aligned photos (what the nearest member and
the stranger compare). Kept faces from ``bench/survive.py --keep``; photos from ``bench/photos.py``.

    python -m bench.likeness_bands --faces out/bench/kept/shipped [--out FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.member_edits import load_faces
from bench.photos import real_faces
from bench.report import report
from engine.jobs.engine import Engine
from engine.jobs.lookalike import BANDS, descriptors, distance_in_words


def summary(values: list[float]) -> dict:
    v = np.sort(np.asarray(values))
    return {"n": len(v), "min": round(float(v[0]), 3), "median": round(float(np.median(v)), 3),
            "max": round(float(v[-1]), 3), "all": [round(float(x), 3) for x in v]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True, help="a folder of kept faces (.npz) named as bench/photos.py")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    engine = Engine(args.model)
    faces = load_faces(args.faces, engine)
    photos = real_faces(engine.G.resolution, engine.framing)
    names = [n for n in faces if n in photos]
    kept = descriptors(np.stack([engine.render(faces[n][0][None], faces[n][1])[0] for n in names]))
    shot = descriptors(np.stack([photos[n] for n in names]))
    n = len(names)
    pairs = [(i, j) for i in range(n) for j in range(i)]
    same = [float(np.linalg.norm(kept[i] - shot[i])) for i in range(n)]
    apart_kept = [float(np.linalg.norm(kept[i] - kept[j])) for i, j in pairs]
    apart_photos = [float(np.linalg.norm(shot[i] - shot[j])) for i, j in pairs]
    words = {}
    for label, values in (("same", same), ("different_kept", apart_kept), ("different_photos", apart_photos)):
        for d in values:
            w = distance_in_words(d)
            words.setdefault(label, {}).setdefault(w, 0)
            words[label][w] += 1
    report({"model_id": engine.model_id, "faces": names, "bands": BANDS,
            "same_person_kept_vs_photo": summary(same), "different_people_kept": summary(apart_kept),
            "different_people_photos": summary(apart_photos), "words": words}, args.out)


if __name__ == "__main__":
    main()
