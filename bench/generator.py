"""Generator speed on this machine, printed as JSON.

Images/s at batch 1 and 16 for the embedded 64-px configuration, FLOPs per image,
and the achieved GFLOP/s as a ratio of a plain 3×3 convolution's GFLOP/s measured
in the same run (the practical peak of this CPU for the work a generator does).
Also the grouped-convolution ("fused") path for comparison.

    python bench/generator.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.networks import Generator, GeneratorConfig  # noqa: E402

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


def conv_peak(repeats: int) -> float:
    """GFLOP/s of one plain 3×3 convolution, 256→256 channels, 16×16, batch 16: the best
    of NCHW and NHWC layouts (the generator runs NHWC)."""
    w = torch.randn(256, 256, 3, 3)
    best = float("inf")
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(16, 256, 16, 16).contiguous(memory_format=fmt)
        best = min(best, timed(lambda: F.conv2d(x, w, padding=1), repeats * 4))
    return 2 * 256 * 256 * 9 * 16 * 16 * 16 / best / 1e9


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(**EMBEDDED)).eval().requires_grad_(False)
    flops = flops_per_image(G)
    peak = conv_peak(args.repeats)
    result = {"config": "embedded-64", "threads": torch.get_num_threads(), "flops_per_image": flops,
              "conv3x3_peak_gflops": round(peak, 2)}
    with torch.no_grad():
        for batch in (1, 16):
            ws = G.mapping(torch.randn(batch, G.z_dim))
            for fused in (False, True):
                s = timed(lambda: G.synthesis(ws, fused=fused), args.repeats)
                gflops = flops * batch / s / 1e9
                key = f"batch{batch}_{'fused' if fused else 'unfused'}"
                result[key] = {"images_per_s": round(batch / s, 1), "gflops": round(gflops, 2),
                               "ratio_of_peak": round(gflops / peak, 3)}
            plain = plain_conv_seconds(G, batch, args.repeats)
            result[f"batch{batch}_plain_convs_only"] = {
                "seconds": round(plain, 4), "ratio_of_peak": round(flops * batch / plain / 1e9 / peak, 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
