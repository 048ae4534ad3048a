"""Which refinement schedule gets an encoder's far guess to the reference's loss soonest?

For each target of a set (default: teacher DCGAN samples, the faces the encoder guesses
worst), the reference is the rolux schedule from ``w_avg`` for ``--ref-steps``; then every
candidate schedule refines the encoder's guess for each of ``--steps``. Printed as JSON per
candidate: how many targets reached the reference's final loss, the mean ratio of that
time (encoder included) to the reference time (unreached targets count as the whole
refinement run, so a candidate cannot look fast by giving up), and the final PSNR.

    python -m bench.refine_sweep [--per-set 4] [--set b_teacher] [--steps 150 200]
                                 [--schedules shipped noise_lr=0.25 lr=0.6,rampdown=0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from bench.projection_speed import reach_seconds
from bench.projector import target_sets
from engine.jobs.bundle import encoder_path_for
from engine.latent.batch import project
from engine.latent.projector import REFINE_FAR, Schedule
from engine.model.checkpoints import load_generator
from engine.model.encoder import encode, load_encoder

KEYS = {"lr": "initial_lr", "noise": "noise_factor", "rampdown": "rampdown", "noise_lr": "noise_lr_mul"}


def parse_schedule(spec: str) -> Schedule:
    """``shipped`` or ``lr=0.4,noise_lr=0.1,rampdown=0.25,noise=0`` (unnamed keys as REFINE_FAR)."""
    if spec == "shipped":
        return REFINE_FAR
    changes = {KEYS[key]: float(value) for key, value in (item.split("=") for item in spec.split(","))}
    return dataclasses.replace(REFINE_FAR, name=spec, **changes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-set", type=int, default=4)
    ap.add_argument("--set", default="b_teacher")
    ap.add_argument("--ref-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 200])
    ap.add_argument("--schedules", nargs="+", default=["shipped", "noise_lr=0.25", "rampdown=0.5"],
                    help="'shipped' or key=value lists with keys " + ", ".join(KEYS))
    args = ap.parse_args()
    G = load_generator()
    E = load_encoder(encoder_path_for(None), G.model_id)
    targets = target_sets(G, args.per_set)[args.set]
    refs = []
    for t in targets:
        r = project(G, t, args.ref_steps, every=args.ref_steps)
        refs.append((r.losses[-1], r.seconds))
    names = args.schedules
    schedules = {n: parse_schedule(n) for n in names}
    rows = {f"{n}@{s}": {"ratio": [], "reached": 0, "psnr": [], "loss": []} for n in names for s in args.steps}
    for t, (ref_loss, ref_s) in zip(targets, refs):
        t0 = time.perf_counter()
        init = encode(E, t)
        enc_s = time.perf_counter() - t0
        for n in names:
            for s in args.steps:
                r = project(G, t, s, init_ws=init, every=s, schedule=schedules[n])
                reach = reach_seconds(r, ref_loss)
                row = rows[f"{n}@{s}"]
                row["reached"] += reach is not None
                row["ratio"].append((enc_s + (reach if reach is not None else r.seconds)) / ref_s)
                row["psnr"].append(r.psnr)
                row["loss"].append(r.losses[-1])
    out = {"set": args.set, "n": len(targets), "ref_loss": round(float(np.mean([r[0] for r in refs])), 5),
           "ref_s": round(float(np.mean([r[1] for r in refs])), 2), "threads": torch.get_num_threads(),
           "candidates": {k: {"reached": v["reached"], "mean_ratio": round(float(np.mean(v["ratio"])), 3),
                              "worst_ratio": round(float(np.max(v["ratio"])), 3),
                              "final_psnr": round(float(np.mean(v["psnr"])), 2),
                              "final_loss": round(float(np.mean(v["loss"])), 5)} for k, v in rows.items()}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
