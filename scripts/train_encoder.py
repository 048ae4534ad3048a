"""Train the encoder that starts the projector near the answer (engine/model/encoder.py).

Every training pair is made on the fly by the generator itself, so W+ is known exactly:
- generator pairs: z -> W through the mapping, spread into W+ (style mixing at a random
  layer, per-layer Gaussian jitter, a random truncation) and rendered with random noise
  maps; the input is colour- and crop-augmented, the target is the clean W+;
- teacher pairs: the DCGAN teacher's face for z, with the student's W for the same z as
  the latent target (the student was distilled to draw that face from that z).
Loss: MSE on W+ in units of W's per-dimension spread, plus a 4-level pyramid L1 between
the input image and the generator's render of the encoder's answer (on a sub-batch, since
rendering with gradients is the expensive part). Deterministic per step; checkpoints every
few minutes and resumes; the EMA copy ships.

    python -m scripts.train_encoder --minutes 70 --work runs/encoder \
        --out engine/models/wspace64.encoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.jobs.bundle import encoder_path_for
from engine.latent.projector import w_stats
from engine.model.checkpoints import load_generator
from engine.model.encoder import Encoder, EncoderConfig, load_encoder, save_encoder
from engine.model.teacher import NZ, load_teacher
from scripts.training import Run, cosine, psnr, pyramid_loss

EMA_BETA = 0.995
CHECKPOINT_SECONDS = 300
LATENT_JITTER = 0.3  # per-layer Gaussian jitter, in units of W's per-dimension spread
MIX_PROB = 0.5


def augment(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast/saturation jitter and a shift of up to 3 px (edge-padded)."""
    n = img.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=gen)  # noqa: E731
    grey = img.mean(dim=1, keepdim=True)
    img = grey + (img - grey) * u(0.7, 1.3)
    mean = img.mean(dim=[1, 2, 3], keepdim=True)
    img = mean + (img - mean) * u(0.8, 1.2) + u(-0.1, 0.1)
    dx, dy = (int(v) for v in torch.randint(-3, 4, (2,), generator=gen))
    r = img.shape[-1]
    img = F.pad(img, (3, 3, 3, 3), mode="replicate")[:, :, 3 + dy:3 + dy + r, 3 + dx:3 + dx + r]
    return img.clamp(-1, 1)


def make_batch(G, teacher, n_gen: int, n_teacher: int, w_dim_std: float, gen: torch.Generator):
    """(input images, clean images, target W+) for one step."""
    z = torch.randn(n_gen, G.z_dim, generator=gen)
    z2 = torch.randn(n_gen, G.z_dim, generator=gen)
    with torch.no_grad():
        psi = 0.5 + 0.6 * torch.rand(n_gen, 1, 1, generator=gen)
        w = G.w_avg + psi * (G.mapping(z) - G.w_avg)
        w2 = G.w_avg + psi * (G.mapping(z2) - G.w_avg)
        cut = torch.randint(1, G.num_ws, (n_gen, 1, 1), generator=gen)
        mix = (torch.rand(n_gen, 1, 1, generator=gen) < MIX_PROB) & (torch.arange(G.num_ws).reshape(1, -1, 1) >= cut)
        ws = torch.where(mix, w2, w)
        ws = ws + LATENT_JITTER * w_dim_std * torch.randn(ws.shape, generator=gen) * torch.rand(
            n_gen, 1, 1, generator=gen
        )
        clean = G.synthesis(ws, noise_mode="random")
        zt = torch.randn(n_teacher, NZ, generator=gen)
        t_img = teacher(zt)
        t_ws = G.mapping(zt)
    clean = torch.cat([clean, t_img])
    return augment(clean, gen), clean, torch.cat([ws, t_ws])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=70.0, help="stop after this much training time")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--gen-batch", type=int, default=24)
    ap.add_argument("--teacher-batch", type=int, default=8)
    ap.add_argument("--render-batch", type=int, default=8, help="samples per step that get the image loss")
    ap.add_argument("--image-weight", type=float, default=1.0)
    ap.add_argument(
        "--teacher-latent-weight",
        type=float,
        default=1.0,
        help="weight of the latent loss on teacher pairs: their target, the student's W for "
        "the same z, renders only ~19 dB from the teacher's face; 0 = image loss alone",
    )
    ap.add_argument(
        "--teacher-render",
        type=int,
        default=None,
        help="teacher pairs per step that get the image loss (default: half of --render-batch)",
    )
    ap.add_argument(
        "--init", type=Path, default=None, help="start from this trained encoder (a fine-tune; a new --work directory)"
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="generator (default: the embedded model)")
    ap.add_argument("--work", type=Path, default=Path("runs/encoder"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--export-only", action="store_true")
    args = ap.parse_args()
    out = args.out or encoder_path_for(args.model)

    args.work.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = args.work / "ckpt.pt", args.work / "train.log"
    torch.manual_seed(args.seed)
    G = load_generator(args.model)
    teacher = load_teacher()
    w_avg, w_std = w_stats(G)
    w_dim_std = w_std / math.sqrt(G.w_dim)
    E = Encoder(EncoderConfig(resolution=G.resolution, num_ws=G.num_ws, w_dim=G.w_dim))
    E.w_avg.copy_(w_avg)
    E.w_scale.fill_(w_dim_std)
    start = None
    if args.init is not None:
        start = load_encoder(args.init, G.model_id)
        if start is None:
            sys.exit(f"{args.init} is not an encoder for model {G.model_id}")
        E.load_state_dict(start.state_dict())
        print(f"starting from {args.init} ({start.provenance.get('steps', '?')} steps)")
    opt = torch.optim.Adam(E.parameters(), lr=args.lr, betas=(0.9, 0.99))
    run = Run(E, opt, ckpt_path, EMA_BETA, "E")
    if run.resume():
        print(f"resumed at step {run.step} ({run.elapsed / 60:.1f} min)")
    E_ema = run.ema

    probe_in, probe_clean, probe_ws = make_batch(G, teacher, 48, 16, w_dim_std, torch.Generator().manual_seed(99_991))
    budget = args.minutes * 60
    if not args.export_only:
        bar = tqdm(total=args.steps, initial=run.step, desc="encoder", unit="step")
        with log_path.open("a") as log:
            while run.step < args.steps and run.elapsed < budget:
                t0 = time.time()
                step = run.step
                gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
                x, clean, target = make_batch(G, teacher, args.gen_batch, args.teacher_batch, w_dim_std, gen)
                lr = args.lr * cosine(run.elapsed / budget, 0.1)
                for group in opt.param_groups:
                    group["lr"] = lr
                pred = E(x)
                per_sample = ((pred - target) / w_dim_std).square().mean(dim=[1, 2])
                latent = torch.cat(
                    [per_sample[: args.gen_batch], args.teacher_latent_weight * per_sample[args.gen_batch :]]
                ).mean()
                # image loss on a sub-batch drawn from both kinds of pair
                k = args.render_batch // 2
                kt = min(args.teacher_batch, args.teacher_render if args.teacher_render is not None else k)
                idx = torch.cat([torch.arange(k), torch.arange(args.gen_batch, args.gen_batch + kt)])
                img = G.synthesis(pred[idx], noise_mode="const")
                image = pyramid_loss(img, clean[idx])
                loss = latent + args.image_weight * image
                step = run.learn(loss, t0)
                bar.update(1)
                bar.set_postfix(latent=f"{latent.item():.3f}", image=f"{image.item():.3f}")
                if step % 100 == 0:
                    log.write(
                        json.dumps(
                            {
                                "step": step,
                                "latent": round(latent.item(), 4),
                                "image": round(image.item(), 4),
                                **probe(E_ema, G, probe_in, probe_clean, probe_ws, w_dim_std),
                                "lr": round(lr, 6),
                                "elapsed_s": round(run.elapsed, 1),
                            }
                        )
                        + "\n"
                    )
                    log.flush()
                run.checkpoint_every(CHECKPOINT_SECONDS, args)
        bar.close()
        run.save(args)
    step, elapsed = run.step, run.elapsed
    figures = probe(E_ema, G, probe_in, probe_clean, probe_ws, w_dim_std)
    provenance = {
        "trained_by": "scripts/train_encoder.py",
        "steps": step,
        "train_seconds": round(elapsed),
        "gen_batch": args.gen_batch,
        "teacher_batch": args.teacher_batch,
        "lr": args.lr,
        "teacher_latent_weight": args.teacher_latent_weight,
        "teacher_render": args.teacher_render,
        "seed": args.seed,
        "probe": figures,
    }
    if start is not None:
        provenance["fine_tuned_from"] = {"file": args.init.name, **start.provenance}
    save_encoder(E_ema, out, G.model_id, provenance)
    print(f"wrote {out} for model {G.model_id} after {step} steps, {elapsed / 60:.1f} min: {figures}")


def probe(E, G, x, clean, ws, w_dim_std) -> dict:
    """Latent error and re-render PSNR on a fixed held-out batch (generator | teacher halves)."""
    with torch.no_grad():
        pred = E(x)
        img = G.synthesis(pred, noise_mode="const")
    n_gen = x.shape[0] - 16
    return {
        "probe_latent": round(((pred - ws) / w_dim_std).square().mean().item(), 4),
        "probe_psnr_gen": round(psnr(img[:n_gen], clean[:n_gen]), 2),
        "probe_psnr_teacher": round(psnr(img[n_gen:], clean[n_gen:]), 2),
    }


if __name__ == "__main__":
    main()
