"""Generator speed on this machine, printed as JSON.

Images/s at batch 1 and 16 for the embedded 64-px configuration, FLOPs per image,
and the achieved GFLOP/s as a ratio of a plain 3×3 convolution's GFLOP/s measured
in the same run (the practical peak of this CPU for the work a generator does).
Also the grouped-convolution ("fused") path for comparison.

    python -m bench.generator [--repeats 20] [--runs 2]

Each allocator setting (glibc's default, and the tuning ``engine/model/runtime.py`` applies in
every engine process) is measured in its own child processes, alternated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from engine.model.networks import Generator, GeneratorConfig
from engine.model.runtime import tune_allocator

EMBEDDED = dict(resolution=64, z_dim=100, w_dim=256, mapping_layers=8,
                channels={4: 256, 8: 256, 16: 256, 32: 128, 64: 64})


def flops_per_image(G: Generator) -> int:
    """Multiply-adds ×2 of every dense and convolution layer (blur filters included)."""
    macs = sum(G.w_dim * G.w_dim if i else G.z_dim * G.w_dim for i in range(G.mapping.num_layers))
    for block in G.synthesis.blocks():
        res = block.resolution
        for layer in block.layers():
            out_ch, in_ch = layer.weight.shape[:2]
            macs += G.w_dim * in_ch  # affine
            macs += in_ch * out_ch * 9 * (res // layer.up) ** 2  # modulated conv (transposed when up)
            if layer.up > 1:
                macs += out_ch * 16 * res * res  # [1,3,3,1]² blur
        rgb_in = block.torgb.weight.shape[1]
        macs += G.w_dim * rgb_in + rgb_in * G.img_channels * res * res
        if res > 4:
            macs += G.img_channels * 16 * res * res
    return 2 * macs


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def interleaved_best(fns: dict, rounds: int) -> dict:
    """Best time of each function over ``rounds`` rounds, one call of each per round: a
    noisy spell on this shared machine then hits every path alike, not just one."""
    for fn in fns.values():
        fn()  # warm-up
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def conv_peak_fns() -> dict:
    """One plain 3×3 convolution, 256→256 channels, 16×16, batch 16, in NCHW and in NHWC
    (the generator runs NHWC): the best of the two is the peak."""
    w = torch.randn(256, 256, 3, 3)
    fns = {}
    for name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        x = torch.randn(16, 256, 16, 16).contiguous(memory_format=fmt)
        fns[f"peak_{name}"] = lambda x=x: F.conv2d(x, w, padding=1)
    return fns


CONV_PEAK_FLOPS = 2 * 256 * 256 * 9 * 16 * 16 * 16


def plain_conv_seconds(G: Generator, batch: int, repeats: int) -> float:
    """The generator's convolutions alone (same shapes, NHWC, no modulation, noise or
    blur): the best this CPU does on exactly this network's work."""
    total = 0.0
    for block in G.synthesis.blocks():
        for layer in block.layers():
            out_ch, in_ch = layer.weight.shape[:2]
            res_in = block.resolution // layer.up
            x = torch.randn(batch, in_ch, res_in, res_in).contiguous(memory_format=torch.channels_last)
            w = layer.weight.detach()
            if layer.up > 1:
                wt = w.transpose(0, 1).contiguous()
                total += timed(lambda: F.conv_transpose2d(x, wt, stride=2), repeats)
            else:
                total += timed(lambda: F.conv2d(x, w, padding=1), repeats)
    return total


def measure(rounds: int) -> dict:
    """Every path in this process, interleaved; the peak measured among them."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**EMBEDDED)).eval().requires_grad_(False)
    flops = flops_per_image(G)
    fns = conv_peak_fns()
    ws = {batch: G.mapping(torch.randn(batch, G.z_dim)) for batch in (1, 16)}
    for batch in (1, 16):
        for fused in (False, True):
            fns[f"batch{batch}_{'fused' if fused else 'unfused'}"] = \
                lambda b=batch, f=fused: G.synthesis(ws[b], fused=f)
    with torch.no_grad():
        best = interleaved_best(fns, rounds)
    peak = CONV_PEAK_FLOPS / min(best["peak_nchw"], best["peak_nhwc"]) / 1e9
    result = {"config": "embedded-64", "threads": torch.get_num_threads(), "rounds": rounds,
              "flops_per_image": flops, "conv3x3_peak_gflops": round(peak, 2)}
    for batch in (1, 16):
        for fused in (False, True):
            key = f"batch{batch}_{'fused' if fused else 'unfused'}"
            gflops = flops * batch / best[key] / 1e9
            result[key] = {"images_per_s": round(batch / best[key], 1), "gflops": round(gflops, 2),
                           "ratio_of_peak": round(gflops / peak, 3)}
        with torch.no_grad():
            plain = plain_conv_seconds(G, batch, max(5, rounds // 4))
        result[f"batch{batch}_plain_convs_only"] = {
            "seconds": round(plain, 4), "ratio_of_peak": round(flops * batch / plain / 1e9 / peak, 3)}
    return result


def best_of(runs: list[dict]) -> dict:
    """Per path, the run where that path did best (noise only ever slows a run down)."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, dict):
            merged[key] = max((r[key] for r in runs), key=lambda v: v["ratio_of_peak"])
    merged["runs"] = len(runs)
    return merged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20, help="rounds; each times every path once")
    ap.add_argument("--runs", type=int, default=2, help="child processes per allocator setting, alternated")
    ap.add_argument("--allocator", choices=["tuned", "default"],
                    help="measure in this process only (the children use this)")
    args = ap.parse_args()
    if args.allocator:
        if args.allocator == "tuned":
            tune_allocator()
        print(json.dumps(measure(args.repeats)))
        return
    runs: dict[str, list[dict]] = {"tuned": [], "default": []}
    for _ in range(args.runs):
        for allocator in ("default", "tuned"):  # alternated: a slow spell hits both alike
            out = subprocess.run(
                [sys.executable, "-m", "bench.generator", "--allocator", allocator, "--repeats", str(args.repeats)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[allocator].append(json.loads(out))
    tuned, default = best_of(runs["tuned"]), best_of(runs["default"])
    result = {
        "engine (allocator tuned, as engine/model/runtime.py sets it)": tuned,
        "baseline (glibc's default allocator)": default,
        "tuned_over_default_images_per_s": {
            key: round(tuned[key]["images_per_s"] / default[key]["images_per_s"], 3)
            for key in tuned
            if isinstance(tuned[key], dict) and "images_per_s" in tuned[key]
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
