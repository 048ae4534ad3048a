"""Encoder-started projection vs the reference projector, side by side, printed as JSON.

For each target (held-out in-domain faces, teacher DCGAN samples, and the two real
photos): the reference is the rolux schedule from ``w_avg`` for ``--ref-steps`` steps;
ours is the encoder's guess refined for each of ``--refine-steps``. Reported per set:
the reference's final loss and time; for ours, the time (encoder included) until the
loss first reaches the reference's final loss and its ratio to the reference time, how
often it got there, and the final PSNR; the encoder alone (PSNR, dlib distance, ms);
and, on the real photos, the time to the first preview including decoding and alignment.

    python -m bench.projection_speed [--per-set 4] [--ref-steps 1000] [--refine-steps 100 200 300]
                                     [--encoder A.safetensors B.safetensors]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.projector import target_sets
from engine.face.align import Framing, align_face, decode_image, likeness
from engine.jobs.bundle import encoder_path_for
from engine.latent.batch import project
from engine.latent.projector import psnr
from engine.model.checkpoints import load_generator
from engine.model.encoder import encode, load_encoder
from engine.model.images import montage, png_bytes, resize, to_uint8
from tests.photos import astronaut, grace_hopper


def render(G, ws: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(G.synthesis(torch.from_numpy(ws)[None], noise_mode="const"))[0]


def first_preview_seconds(G, E, photo: np.ndarray) -> float:
    """JPEG bytes in -> the preview PNG a member sees first (decode, detect, align, encode, render)."""
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG", quality=92)
    data = buf.getvalue()
    t0 = time.perf_counter()
    img = decode_image(data)
    target = align_face(img, G.resolution, Framing.from_dict(G.provenance.get("framing"))).image
    guess = render(G, encode(E, target))
    png_bytes(montage(np.stack([resize(target, 128), resize(guess, 128)]), cols=2))
    return time.perf_counter() - t0


def reach_seconds(run, ref_loss: float) -> float | None:
    """Seconds into ``run`` (a Projection) when its loss first got to ``ref_loss``; None if never."""
    hit = next((i for i, v in enumerate(run.losses) if v <= ref_loss), None)
    return run.timeline[hit] if hit is not None else None


def mean(xs):
    xs = [x for x in xs if x is not None]
    return round(float(np.mean(xs)), 4) if xs else None


def run_set(G, encoders: dict, targets, ref_steps: int, refine_steps: list[int]) -> dict:
    """One reference per target; every encoder measured against that same reference."""
    ref_rows = {"ref_loss": [], "ref_s": [], "ref_psnr": []}
    per_encoder = {name: ({"enc_ms": [], "enc_psnr": [], "enc_dlib": []},
                          {n: {"reach_s": [], "ratio": [], "final_psnr": [], "final_loss": []} for n in refine_steps})
                   for name in encoders}
    for t in targets:
        ref = project(G, t, ref_steps, every=ref_steps)
        ref_loss = ref.losses[-1]
        ref_rows["ref_loss"].append(ref_loss)
        ref_rows["ref_s"].append(ref.seconds)
        ref_rows["ref_psnr"].append(ref.psnr)
        for name, E in encoders.items():
            rows, ours = per_encoder[name]
            t0 = time.perf_counter()
            init = encode(E, t)
            enc_s = time.perf_counter() - t0
            guess = render(G, init)
            rows["enc_ms"].append(enc_s * 1000)
            rows["enc_psnr"].append(psnr(guess, t))
            rows["enc_dlib"].append(likeness(t, guess))
            for n in refine_steps:
                r = project(G, t, n, init_ws=init, every=n)
                reach = reach_seconds(r, ref_loss)
                reach = enc_s + reach if reach is not None else None
                o = ours[n]
                o["reach_s"].append(reach)
                o["ratio"].append(reach / ref.seconds if reach is not None else None)
                o["final_psnr"].append(r.psnr)
                o["final_loss"].append(r.losses[-1])

    def summary(rows, ours) -> dict:
        out = {k: mean(v) for k, v in rows.items()}
        out["ours"] = {
            n: {
                "reached": sum(x is not None for x in o["reach_s"]),
                "mean_reach_s": mean(o["reach_s"]),
                "mean_ratio_to_ref": mean(o["ratio"]),
                "worst_ratio_to_ref": max((x for x in o["ratio"] if x is not None), default=None),
                "final_psnr": mean(o["final_psnr"]),
                "final_loss": mean(o["final_loss"]),
            }
            for n, o in ours.items()
        }
        return out

    out = {k: mean(v) for k, v in ref_rows.items()}
    out["n"] = len(targets)
    if len(encoders) == 1:
        return out | summary(*per_encoder[next(iter(encoders))])
    out["encoders"] = {name: summary(*per_encoder[name]) for name in encoders}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--per-set", type=int, default=4)
    ap.add_argument("--ref-steps", type=int, default=1000)
    ap.add_argument("--refine-steps", type=int, nargs="+", default=[100, 200, 300])
    ap.add_argument(
        "--encoder",
        type=Path,
        nargs="+",
        default=None,
        help="encoders to compare against the same references (default: the model's own)",
    )
    args = ap.parse_args()
    G = load_generator(args.model)
    paths = args.encoder or [encoder_path_for(args.model)]
    encoders = {str(p): load_encoder(p, G.model_id) for p in paths}
    missing = [p for p, e in encoders.items() if e is None]
    if missing:
        sys.exit(f"not an encoder for model {G.model_id}: {', '.join(missing)}")
    E = next(iter(encoders.values()))
    sets = target_sets(G, args.per_set)
    result = {
        "model_id": G.model_id,
        "threads": torch.get_num_threads(),
        "ref_steps": args.ref_steps,
        "first_preview_s": {
            name: round(min(first_preview_seconds(G, E, p()) for _ in range(3)), 3)
            for name, p in (("astronaut", astronaut), ("grace_hopper", grace_hopper))
        },
        "sets": {name: run_set(G, encoders, ts, args.ref_steps, args.refine_steps) for name, ts in sets.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
