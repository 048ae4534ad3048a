"""Fidelity of the embedded model to its teacher, printed as JSON.

On 1000 z drawn from a seed the training never used: mean PSNR(student, teacher);
dlib's frontal face detector rate on both (images upsampled to 256 px), and on
style-mixed student samples (coarse styles from one z, the rest from another); and
the mean dlib descriptor distance between student and teacher images of the same z.

    python -m bench.embedded [--count 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from engine.face.align import _dlib, face_descriptor
from engine.latent.edits import layer_ranges
from engine.model.checkpoints import load_generator
from engine.model.images import to_uint8
from engine.model.teacher import load_teacher

HELD_OUT_SEED = 424_242  # training draws z from torch generators seeded 0..steps and 10 000
DETECT_SIZE = 256


def detected(img: np.ndarray) -> bool:
    _, detector, _ = _dlib()
    big = np.asarray(Image.fromarray(img).resize((DETECT_SIZE, DETECT_SIZE), Image.Resampling.LANCZOS))
    return len(detector(big, 1)) > 0


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--descriptors", type=int, default=200, help="pairs for the descriptor distance")
    args = ap.parse_args()
    t0 = time.time()
    G, T = load_generator(args.model), load_teacher()
    z = torch.randn(args.count, G.z_dim, generator=torch.Generator().manual_seed(HELD_OUT_SEED))
    split = layer_ranges(G.num_ws)["middle"].start
    with torch.no_grad():
        teacher = to_uint8(torch.cat([T(z[i:i + 100]) for i in range(0, args.count, 100)]))
        ws = torch.cat([G.mapping(z[i:i + 100]) for i in range(0, args.count, 100)])
        student = to_uint8(torch.cat([G.synthesis(ws[i:i + 100]) for i in range(0, args.count, 100)]))
        mixed_ws = torch.cat([ws[:, :split], ws.roll(1, dims=0)[:, split:]], dim=1)
        mixed = to_uint8(torch.cat([G.synthesis(mixed_ws[i:i + 100]) for i in range(0, args.count, 100)]))
    rates = {}
    for name, imgs in (("teacher", teacher), ("student", student), ("mixed", mixed)):
        rates[name] = float(np.mean([detected(im) for im in tqdm(imgs, desc=f"detect {name}", leave=False)]))
    n = min(args.descriptors, args.count)
    dists = [float(np.linalg.norm(face_descriptor(s) - face_descriptor(t)))
             for s, t in tqdm(zip(student[:n], teacher[:n]), total=n, desc="descriptors", leave=False)]
    p = psnr(student, teacher)
    result = {
        "model_id": G.model_id, "count": args.count, "held_out_seed": HELD_OUT_SEED,
        "psnr_mean_db": round(float(p.mean()), 2), "psnr_median_db": round(float(np.median(p)), 2),
        "detect_rate_teacher": round(rates["teacher"], 3), "detect_rate_student": round(rates["student"], 3),
        "detect_rate_mixed": round(rates["mixed"], 3), "mixing_split": split,
        "student_over_teacher_detect": round(rates["student"] / max(rates["teacher"], 1e-9), 3),
        "mixed_over_teacher_detect": round(rates["mixed"] / max(rates["teacher"], 1e-9), 3),
        "descriptor_distance_mean": round(float(np.mean(dists)), 3), "descriptor_pairs": n,
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
