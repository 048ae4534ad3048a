"""Do the labellers read the embedded model's faces as they read the teacher's? Printed as JSON.

Draws ``--count`` z from a held-out seed, renders each with the teacher DCGAN and with the
embedded student (the same z, so the same intended face), labels both with the labellers
the directions are learned and judged with, and reports per attribute the mean and spread
of each side's scores and their correlation across faces. The age and gender directions
can only be as good as the student's faces are legible to these networks.

    python -m bench.labeller_agreement [--count 400]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.face.labels import ATTRIBUTES, label_face
from engine.model.checkpoints import load_generator
from engine.model.images import to_uint8
from engine.model.teacher import NZ, load_teacher

HELD_OUT_SEED = 31337


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    teacher, G = load_teacher(), load_generator(args.model)
    z = torch.randn(args.count, NZ, generator=torch.Generator().manual_seed(HELD_OUT_SEED))
    with torch.no_grad():
        sides = {"teacher": to_uint8(teacher(z)), "student": to_uint8(G(z))}
    scores = {side: {a: np.array([np.nan] * args.count) for a in ATTRIBUTES} for side in sides}
    for side, images in sides.items():
        for i, image in enumerate(tqdm(images, desc=side)):
            labels = label_face(image)
            for a in ATTRIBUTES:
                scores[side][a][i] = labels[a]
    result = {"model_id": G.model_id, "count": args.count}
    for a in ATTRIBUTES:
        t, s = scores["teacher"][a], scores["student"][a]
        ok = np.isfinite(t) & np.isfinite(s)
        result[a] = {"teacher_mean": round(float(t[ok].mean()), 3), "teacher_std": round(float(t[ok].std()), 3),
                     "student_mean": round(float(s[ok].mean()), 3), "student_std": round(float(s[ok].std()), 3),
                     "correlation": round(float(np.corrcoef(t[ok], s[ok])[0, 1]), 3), "n": int(ok.sum())}
    for side in sides:
        g = scores[side]["gender"]
        result[f"{side}_male_fraction"] = round(float(np.mean(g[np.isfinite(g)] > 0)), 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
