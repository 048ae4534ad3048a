"""The GPU figures of issue #21 in one prepared run (at most ~6 minutes on a card), as JSON.

Measures on whatever device it is given:
- the embedded 64-px generator, ms per image at batch 1/16/256, both synthesis paths, and
  bf16 autocast at the largest batch;
- an FFHQ-1024-shaped generator (random weights): ms per image and TFLOP/s at batch 1 and 16,
  fp32 with TF32 off and on, bf16 autocast, both synthesis paths;
- projection steps (engine/latent/batch.py): embedded and 1024-shaped, batch 1 and 8 members,
  eager and captured in a CUDA graph, fp32 / TF32 / bf16;
- whether bf16 keeps the final PSNR of a projection within 0.1 dB;
- the embedded model's encoder guess + 300 refine steps, wall time;
- parity with both reference codebases' outputs (``--fixtures``: the stylegan2 fixture
  folder), TF32 off and on;
- a member's projection alone vs. in a batch of 8 on this device (largest difference).

Every section is timed with the device synchronised, takes the median of its repeats, and
is written to ``--out`` as soon as it is done, so a run cut short still leaves its figures;
a section that fails records its error and the run goes on.

    python -m bench.gpu --device cuda --out gpu.json --fixtures ../shared/fixtures/stylegan2
    python -m bench.gpu --device cpu --quick          # the same code, small sizes (tests run this)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from engine.jobs.bundle import load_bundle
from engine.latent.batch import Member, ProjectionBatch, project
from engine.latent.projector import REFINE_FAR
from engine.model.encoder import encode
from engine.model.images import to_uint8
from engine.model.networks import Generator, GeneratorConfig, block_resolutions

TODAY = {"gen1024_fp32_b16_tflops": 24.6, "embedded_step_ms": 34.6}  # the H100 figures, PyTorch 2.11


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


@contextmanager
def tf32(on: bool):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def synthesis_gflop(G: Generator) -> float:
    """Multiply-adds ×2 of one image's convolutions (3×3 modulated convs, the upsampling ones
    as the stride-2 transposed convolutions they are, over the input grid, and 1×1 toRGBs)."""
    ch = G.config.channels
    prev, total = ch[4], 0.0
    for r in block_resolutions(G.resolution):
        c = ch[r]
        convs = [(c, c, r)] if r == 4 else [(prev, c, r // 2), (c, c, r)]
        total += sum(2 * 9 * a * b * g * g for a, b, g in convs) + 2 * c * G.img_channels * r * r
        prev = c
    return total / 1e9


def big_generator(device: torch.device, quick: bool) -> Generator:
    """FFHQ-1024's shape with random weights (``--quick``: a 128-px one with 64 channels)."""
    cfg = GeneratorConfig(resolution=128, z_dim=64, w_dim=64, channels={r: 64 for r in block_resolutions(128)}) \
        if quick else GeneratorConfig(resolution=1024)
    torch.manual_seed(0)
    return Generator(cfg).eval().requires_grad_(False).to(device)


def generation(G: Generator, device, batches, reps: int, paths=(None, False)) -> dict:
    """ms per image (and TFLOP/s) at each batch size, per precision and synthesis path."""
    gflop = synthesis_gflop(G)
    out = {"gflop_per_image": round(gflop, 2)}
    variants = [("fp32", False, None), ("tf32", True, None), ("bf16", True, torch.bfloat16)] \
        if device.type == "cuda" else [("fp32", False, None)]
    for name, tf, dtype in variants:
        for fused in paths:
            for n in (batches if fused is None else batches[-1:]):  # the shared path only matters batched
                ws = G.w_avg.expand(n, G.num_ws, -1).contiguous() + 0.1 * torch.randn(
                    n, G.num_ws, G.w_dim, device=device
                )

                def draw():
                    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        G.synthesis(ws, fused=fused)

                with tf32(tf):
                    ms = median_ms(draw, device, reps) / n
                key = f"{name}_{'fused' if fused else ('default' if fused is None else 'shared')}_b{n}"
                out[key] = {"ms_per_image": round(ms, 4), "tflops": round(gflop / ms, 2)}
    return out


def compiled_generation(G: Generator, device, n: int, reps: int) -> dict:
    """``torch.compile``'d synthesis at batch ``n`` (inductor fuses the elementwise work
    around each convolution), TF32 and bf16, both paths; compile time reported."""
    gflop = synthesis_gflop(G)
    out = {}
    ws = G.w_avg.expand(n, G.num_ws, -1).contiguous() + 0.1 * torch.randn(n, G.num_ws, G.w_dim, device=device)
    for fused in (True,):  # the shared path measured 2× slower compiled (docs/gpu_h100_compiled.json)
        fn = torch.compile(lambda w, fused=fused: G.synthesis(w, fused=fused))
        for name, dtype in (("tf32", None), ("bf16", torch.bfloat16)):
            key = f"{name}_{'fused' if fused else 'shared'}_b{n}"
            try:

                def draw():
                    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        fn(ws)

                t0 = time.perf_counter()
                with tf32(True):
                    draw()
                    sync(device)
                    compile_s = time.perf_counter() - t0
                    ms = median_ms(draw, device, reps) / n
                out[key] = {
                    "ms_per_image": round(ms, 4),
                    "tflops": round(gflop / ms, 2),
                    "compile_s": round(compile_s, 1),
                }
            except Exception as exc:  # noqa: BLE001 (a variant that fails is a figure too)
                out[key] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def steps_ms(G, targets, device, steps: int, graphs: bool, tf: bool, dtype=None, fused=None) -> float:
    """Median ms of one batched projection step, ``len(targets)`` members."""
    batch = ProjectionBatch(G, loss_kind="pixel+ssim", graphs=graphs, autocast=dtype, fused=fused)
    for i, t in enumerate(targets):
        batch.add(Member(t, steps=200, seed=i, every=10_000))
    with tf32(tf):
        return median_ms(batch.step, device, steps, warmup=5)


def projection_steps(G, device, quick: bool, label: str) -> dict:
    with torch.no_grad():
        faces = to_uint8(G(torch.randn(8, G.z_dim, device=device, generator=None)))
    reps = 3 if quick else 12
    out = {}
    configs = (
        [
            ("eager_fp32", False, False, None),
            ("graph_fp32", True, False, None),
            ("graph_tf32", True, True, None),
            ("graph_bf16", True, True, torch.bfloat16),
        ]
        if device.type == "cuda"
        else [("eager_fp32", False, False, None)]
    )
    for name, graphs, tf, dtype in configs:
        for n in (1, 8):
            for fused in (None, False) if n > 1 and G.resolution <= 256 else (None,):
                try:
                    ms = steps_ms(G, faces[:n], device, reps, graphs, tf, dtype, fused)
                    out[f"{name}_{'shared' if fused is False else 'default'}_b{n}"] = round(ms, 3)
                except Exception as exc:  # noqa: BLE001 (a variant that fails is a figure too)
                    out[f"{name}_{'shared' if fused is False else 'default'}_b{n}"] = f"{type(exc).__name__}: {exc}"[
                        :300
                    ]
    return {label: out}


def bf16_quality(G, device, steps: int) -> dict:
    """Final PSNR of the same projection in fp32 and under bf16 autocast."""
    with torch.no_grad():
        face = to_uint8(G(torch.randn(1, G.z_dim, device=device)))[0]
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        batch = ProjectionBatch(G, loss_kind="pixel+ssim", autocast=dtype, graphs=device.type == "cuda")
        batch.add(Member(face, steps=steps, every=10_000))
        with tf32(False):
            [(_, p)] = batch.run()
        out[name] = round(p.psnr, 2)
    out["bf16_minus_fp32_db"] = round(out["bf16"] - out["fp32"], 2)
    return out


def encoder_refine(bundle, device, steps: int) -> dict:
    G, E = bundle.G, bundle.encoder
    with torch.no_grad():
        face = to_uint8(G(torch.randn(1, G.z_dim, device=device, generator=None)))[0]
    sync(device)
    t0 = time.perf_counter()
    project(
        G,
        face,
        steps,
        init_ws=encode(E, face) if E is not None else None,
        every=max(1, steps // 20),
        graphs=device.type == "cuda",
    )  # as the engine runs it
    sync(device)
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 2)}


def alone_vs_batched(G, device, steps: int) -> dict:
    """Member 3 alone vs. among 8 members of different lengths, who leave one by one (so on
    CUDA the step graph is captured again after each leaves), as the engine runs them."""
    graphs = device.type == "cuda"
    with torch.no_grad():
        faces = to_uint8(G(torch.randn(8, G.z_dim, device=device)))
    lengths = [steps + 4 * (i - 3) for i in range(8)]
    alone = project(G, faces[3], lengths[3], seed=3, schedule=REFINE_FAR, graphs=graphs)
    batch = ProjectionBatch(G, graphs=graphs)
    members = [Member(f, steps=lengths[i], seed=i, schedule=REFINE_FAR) for i, f in enumerate(faces)]
    for m in members:
        batch.add(m)
    got = {id(m): p for m, p in batch.run()}[id(members[3])]
    return {
        "steps": lengths[3],
        "ws_max_diff": float(np.abs(got.ws - alone.ws).max()),
        "image_max_diff_levels": int(np.abs(got.image.astype(int) - alone.image).max()),
        "psnr_alone": round(alone.psnr, 2),
        "psnr_batched": round(got.psnr, 2),
    }


def parity(fixtures: Path | None, device) -> dict:
    from engine.model.checkpoints import load_generator

    if fixtures is None or not fixtures.is_dir():
        return {"skipped": "no fixture folder"}
    out = {}
    for name, ref_name, key in (
        ("ada_tiny.pkl", "ada_tiny_ref.npz", "ws_plus"),
        ("rosinality_tiny.pt", "rosinality_tiny_ref.npz", "wplus"),
    ):
        G = load_generator(fixtures / name, device=str(device))
        ref = np.load(fixtures / ref_name)
        ws = torch.from_numpy(ref[key]).to(device)
        for on in (False, True):
            with tf32(on), torch.no_grad():
                img = G.synthesis(ws, noise_mode="const").float().cpu().numpy()
            scale = float(np.abs(ref["img_wplus"]).max())
            out[f"{name}_tf32_{'on' if on else 'off'}"] = float(np.abs(img - ref["img_wplus"]).max() / max(scale, 1.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (the CPU check)")
    ap.add_argument("--out", type=Path, default=Path("gpu.json"))
    ap.add_argument("--only", nargs="+", default=None, help="run only these sections")
    ap.add_argument(
        "--budget",
        type=float,
        default=330.0,
        help="seconds; sections not started by then are skipped (the script must fit 6 minutes)",
    )
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/stylegan2")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    quick = args.quick
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "quick": quick,
        "today": TODAY,
    }
    t_start = time.perf_counter()

    def section(name, fn):
        if args.only and name not in args.only:
            return
        if time.perf_counter() - t_start > args.budget:
            result.setdefault("skipped_for_time", []).append(name)
            args.out.write_text(json.dumps(result, indent=1))
            return
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # noqa: BLE001 (the run goes on; the error is the figure)
            result[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"[{time.perf_counter() - t_start:6.1f} s] {name} done", file=sys.stderr, flush=True)

    bundle = load_bundle(None, str(device), None)
    G = bundle.G
    section("parity", lambda: parity(args.fixtures, device))
    section("alone_vs_batched", lambda: alone_vs_batched(G, device, 20 if quick else 60))
    section("generator_embedded", lambda: generation(G, device, (1, 4) if quick else (1, 16, 256), 3 if quick else 20))
    section("projection_embedded", lambda: projection_steps(G, device, quick, "steps_ms"))
    section("encoder_refine_embedded", lambda: encoder_refine(bundle, device, 20 if quick else 300))
    section("bf16_quality_embedded", lambda: bf16_quality(G, device, 20 if quick else 200))
    big = big_generator(device, quick) if not args.only or any("1024" in k for k in args.only) else None
    section("generator_1024", lambda: generation(big, device, (1, 2) if quick else (1, 16), 2 if quick else 5))
    section("projection_1024", lambda: projection_steps(big, device, quick, "steps_ms"))
    if device.type == "cuda":
        section("generator_1024_compiled", lambda: compiled_generation(big, device, 16, 5))
    section("bf16_quality_1024", lambda: bf16_quality(big, device, 5 if quick else 60))
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
