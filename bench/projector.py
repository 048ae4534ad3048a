"""Projector quality and speed on this CPU, printed as JSON.

Three target sets: (a) in-domain — faces the model itself draws from held-out seeds;
(b) teacher DCGAN samples; (c) the two real photos available offline
(skimage's astronaut, matplotlib's Grace Hopper), FFHQ-aligned. For each step count:
mean PSNR, mean dlib descriptor distance (likeness; below 0.6 = same person) and
seconds per projection. The offline losses are compared side by side at one step
count, in the same run.

    python -m bench.projector [--per-set 2] [--steps 100 300 1000] [--compare-at 300]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from engine.face.align import Framing, align_face, likeness
from engine.latent.batch import project
from engine.model.checkpoints import load_generator
from engine.model.images import to_uint8
from engine.model.teacher import load_teacher
from tests.photos import astronaut, grace_hopper

HELD_OUT_SEED = 31_337


def target_sets(G, per_set: int) -> dict[str, list[np.ndarray]]:
    gen = torch.Generator().manual_seed(HELD_OUT_SEED)
    z = torch.randn(per_set, G.z_dim, generator=gen)
    with torch.no_grad():
        in_domain = list(to_uint8(G(z)))
        teacher = list(to_uint8(load_teacher()(torch.randn(per_set, 100, generator=gen))))
    if teacher[0].shape[0] != G.resolution:
        from engine.model.images import resize
        teacher = [resize(t, G.resolution) for t in teacher]
    framing = Framing.from_dict(G.provenance.get("framing"))
    real = [align_face(p(), G.resolution, framing).image for p in (astronaut, grace_hopper)]
    return {"a_in_domain": in_domain, "b_teacher": teacher, "c_real_photos": real}


def run_set(G, targets, steps: int, loss: str) -> dict:
    rows = []
    for t in targets:
        r = project(G, t, steps, loss_kind=loss, every=max(1, steps))
        rows.append((r.psnr, likeness(t, r.image), r.seconds))
    a = np.array(rows)
    return {"psnr_db": round(float(a[:, 0].mean()), 2), "dlib_distance": round(float(a[:, 1].mean()), 3),
            "seconds": round(float(a[:, 2].mean()), 2), "n": len(rows), "loss": loss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--per-set", type=int, default=2)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--compare-at", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    G = load_generator(args.model)
    sets = target_sets(G, args.per_set)
    result = {"model_id": G.model_id, "threads": torch.get_num_threads(), "by_steps": {}, "loss_comparison": {}}
    for steps in args.steps:
        result["by_steps"][steps] = {name: run_set(G, ts, steps, "auto") for name, ts in sets.items()}
    for loss in ("pixel", "pixel+ssim"):
        kind = "pixel" if loss == "pixel" else "auto"
        result["loss_comparison"][loss] = {name: run_set(G, ts, args.compare_at, kind) for name, ts in sets.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
