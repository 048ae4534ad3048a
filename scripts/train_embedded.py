"""Distil the DigiFace DCGAN (gan-face-generate) into the embedded 64×64 StyleGAN2.

Every training pair is (z, teacher(z)): the student's mapping network takes the
teacher's 100-d z, so the student learns to draw the very face the teacher draws.
Loss: L1 on a 4-level image pyramid (64, 32, 16, 8 px), which keeps the coarse
layout and the fine detail both in view. An EMA copy of the weights is what ships.
Runs on the CPU; checkpoints every few minutes and resumes from the last one.

    python -m scripts.train_embedded --steps 4000 --work runs/embedded \
        --out engine/models/wspace64.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from engine.face.align import measure_framing
from engine.model.checkpoints import save_native
from engine.model.images import to_uint8
from engine.model.networks import Generator, GeneratorConfig
from engine.model.teacher import NZ, load_teacher
from scripts.training import Run, cosine, psnr, pyramid_loss

EMBEDDED_CONFIG = dict(resolution=64, z_dim=NZ, w_dim=256, mapping_layers=8,
                       channels={4: 256, 8: 256, 16: 256, 32: 128, 64: 64})
EMA_BETA = 0.998
LR_DECAY_FRACTION = 0.3  # cosine decay over the last 30 % of the steps
CHECKPOINT_SECONDS = 300
W_AVG_SAMPLES = 10_000
FRAMING_SAMPLES = 500


def lr_at(step: int, steps: int, base: float) -> float:
    start = int(steps * (1 - LR_DECAY_FRACTION))
    if step < start:
        return base
    t = (step - start) / max(1, steps - start)
    return base * cosine(t, 0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--mapping-lr-mul", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", choices=("l1", "l2"), default="l1", help="pyramid of absolute or squared errors")
    ap.add_argument("--work", type=Path, default=Path("runs/embedded"))
    ap.add_argument("--out", type=Path, default=Path("engine/models/wspace64.safetensors"))
    ap.add_argument("--export-only", action="store_true", help="write --out from the last checkpoint and stop")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = args.work / "ckpt.pt", args.work / "train.log"
    torch.manual_seed(args.seed)
    teacher = load_teacher()
    G = Generator(GeneratorConfig(**EMBEDDED_CONFIG, mapping_lr_mul=args.mapping_lr_mul)).train()
    opt = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(args.beta1, 0.99), eps=1e-8)
    run = Run(G, opt, ckpt_path, EMA_BETA, "G", ema_buffers=True)
    if run.resume():
        print(f"resumed at step {run.step}")
    G_ema = run.ema

    # A fixed probe batch from a seed the training stream never uses.
    probe_z = torch.randn(64, NZ, generator=torch.Generator().manual_seed(10_000 + args.seed))
    with torch.no_grad():
        probe_x = teacher(probe_z)
    if args.export_only:
        export(G_ema, args, run.step, run.elapsed)
        return
    bar = tqdm(total=args.steps, initial=run.step, desc="distil", unit="step")
    with log_path.open("a") as log:
        while run.step < args.steps:
            t0 = time.time()
            step = run.step
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            z = torch.randn(args.batch, NZ, generator=gen)
            with torch.no_grad():
                target = teacher(z)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, args.steps, args.lr)
            img = G.synthesis(G.mapping(z), noise_mode="const")
            loss = pyramid_loss(img, target, squared=args.loss == "l2")
            step = run.learn(loss, t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % 100 == 0 or step == args.steps:
                with torch.no_grad():
                    p = psnr(G_ema.synthesis(G_ema.mapping(probe_z)), probe_x)
                    p_raw = pyramid_loss(G.synthesis(G.mapping(probe_z)), probe_x).item()
                log.write(json.dumps({"step": step, "loss": round(loss.item(), 5), "probe_psnr": round(p, 3),
                                      "probe_l1_raw": round(p_raw, 4),
                                      "lr": opt.param_groups[0]["lr"], "elapsed_s": round(run.elapsed, 1)}) + "\n")
                log.flush()
            run.checkpoint_every(CHECKPOINT_SECONDS, args)
    bar.close()
    run.save(args)
    export(G_ema, args, run.step, run.elapsed)


def export(G_ema: Generator, args, step: int, elapsed: float) -> None:
    """Measure w_avg on 10 000 z and where the teacher frames its faces (so real photos are
    aligned the same way), then write the native (fp16) model."""
    with torch.no_grad():
        ws = torch.cat([G_ema.mapping(torch.randn(1000, NZ, generator=torch.Generator().manual_seed(i)))[:, 0]
                        for i in range(W_AVG_SAMPLES // 1000)])
        G_ema.mapping.w_avg.copy_(ws.mean(0))
        faces = to_uint8(load_teacher()(torch.randn(FRAMING_SAMPLES, NZ, generator=torch.Generator().manual_seed(77))))
    framing = measure_framing(list(faces))
    provenance = {"trained_by": "scripts/train_embedded.py", "teacher": "gan-face-generate 1.1.1 DigiFace DCGAN",
                  "steps": step, "batch": args.batch, "lr": args.lr, "mapping_lr_mul": args.mapping_lr_mul,
                  "seed": args.seed, "train_seconds": round(elapsed), "framing": asdict(framing)}
    model_id = save_native(G_ema, args.out, provenance, dtype=torch.float16)
    print(f"wrote {args.out} (model id {model_id}) after {step} steps, {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
