"""Which detections are faces: dlib's HOG detector alone against HOG with its uncertain finds
confirmed by dlib's CNN detector (engine/face/align.py), on the same images in the same run.
Prints JSON.

Positives: the offline photos (the astronaut, Grace Hopper, the cameraman), the six-face
group photo made from them (tests/photos.py), and faces the embedded model draws (upscaled).
Negatives: photos with no face (a cat, coffee, a rocket, coins, the Hubble deep field, a
tissue sample), noise, gradients, checkerboards, and the astronaut's mission patch cropped.

    python -m bench.detector [--drawn 24] [--out docs/detector.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.report import report
from engine.face import align
from tests.photos import astronaut, grace_hopper, group_photo


def rgb(img: np.ndarray) -> np.ndarray:
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def positives(drawn: int) -> dict[str, tuple[np.ndarray, int]]:
    import skimage.data
    import torch

    from engine.jobs.bundle import load_bundle
    from engine.model.images import to_uint8

    out = {"astronaut": (astronaut(), 1), "grace_hopper": (grace_hopper(), 1),
           "cameraman": (rgb(skimage.data.camera()), 1), "group_photo": (group_photo()[0], 6)}
    G = load_bundle(None, "cpu", None).G
    with torch.no_grad():
        faces = to_uint8(G(torch.randn(drawn, G.z_dim, generator=torch.Generator().manual_seed(3)), truncation_psi=0.7))
    for i, f in enumerate(faces):  # a drawn face, upscaled and set in a margin as a photo would hold it
        big = np.asarray(Image.fromarray(f).resize((256, 256), Image.Resampling.LANCZOS))
        out[f"drawn_{i}"] = (np.pad(big, ((96, 96), (96, 96), (0, 0)), mode="edge"), 1)
    return out


def negatives() -> dict[str, np.ndarray]:
    import skimage.data

    rng = np.random.default_rng(0)
    out = {name: rgb(getattr(skimage.data, name)()) for name in
           ("chelsea", "coffee", "rocket", "coins", "hubble_deep_field", "immunohistochemistry", "brick", "grass")}
    out["mission_patch"] = np.ascontiguousarray(astronaut()[300:460, 90:250])
    for i in range(4):
        out[f"noise_{i}"] = rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)
        out[f"smooth_noise_{i}"] = np.asarray(Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8))
                                              .resize((400, 400), Image.Resampling.BICUBIC))
    y, x = np.mgrid[0:400, 0:400]
    out["gradient"] = np.stack([x * 255 // 400, y * 255 // 400, (x + y) * 255 // 800], -1).astype(np.uint8)
    out["checkerboard"] = (((x // 25 + y // 25) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    return out


def count(img: np.ndarray, confirm: bool) -> int:
    sure = align.HOG_SURE
    try:
        if not confirm:
            align.HOG_SURE = -1e9  # every HOG detection is kept: the detector alone
        return len(align.detect_faces(img))
    finally:
        align.HOG_SURE = sure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drawn", type=int, default=24)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {}
    for mode, confirm in (("hog_alone", False), ("hog_and_cnn", True)):
        t0 = time.perf_counter()
        pos = {name: (count(img, confirm), want) for name, (img, want) in positives(args.drawn).items()}
        neg = {name: count(img, confirm) for name, img in negatives().items()}
        result[mode] = {
            "faces_expected": sum(w for _, w in pos.values()), "faces_found": sum(min(n, w) for n, w in pos.values()),
            "extra_on_photos": sum(max(0, n - w) for n, w in pos.values()),
            "photos_missing_a_face": [k for k, (n, w) in pos.items() if n < w],
            "photos_with_extra": [k for k, (n, w) in pos.items() if n > w],
            "false_faces_on_negatives": sum(neg.values()), "negatives_with_a_face": [k for k, n in neg.items() if n],
            "negatives": len(neg), "seconds": round(time.perf_counter() - t0, 1)}
    report(result, args.out)


if __name__ == "__main__":
    main()
