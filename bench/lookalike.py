"""Look-alike search vs. the best of many random people, on real faces the model never saw.

For each held-out face (bench/photos.py: the astronaut, Grace Hopper, Tom Hanks and the six
faces of a group photo, FFHQ-aligned), the stranger search (engine/jobs/lookalike.py) runs with
a time budget; its canonical dlib distance to the photo is compared with the best of
``--random`` random people (truncation 0.7, the same distance). Prints JSON.

    python -m bench.lookalike --seconds 55 --random 1000 --out docs/lookalike.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.photos import real_faces
from engine.jobs.engine import Engine
from engine.jobs.lookalike import TRUNCATION, descriptors, search_stranger


def random_best(engine: Engine, target: np.ndarray, count: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    best = float("inf")
    for i in range(0, count, 32):
        z = torch.randn(min(32, count - i), engine.G.z_dim, generator=gen)
        with torch.no_grad():
            ws = engine.G.mapping(z, TRUNCATION).numpy()
        d = np.linalg.norm(descriptors(engine.render(ws)) - target, axis=1)
        best = min(best, float(d.min()))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=55.0, help="the search's time budget")
    ap.add_argument("--random", type=int, default=1000, help="random people in the baseline")
    ap.add_argument("--faces", type=int, default=9)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    engine = Engine()
    engine.subspace()  # computed once per engine, as in the worker
    rows = []
    for name, aligned in list(real_faces(engine.G.resolution, engine.framing).items())[:args.faces]:
        target = descriptors([aligned])[0]
        t0 = time.perf_counter()
        found = search_stranger(engine, target, args.seconds, seed=0)
        wall = time.perf_counter() - t0
        baseline = random_best(engine, target, args.random, seed=1)
        rows.append({"face": name, "search": round(found.distance, 3), "random_best": round(baseline, 3),
                     "search_wall_s": round(wall, 1), "evaluations": found.evaluations,
                     "search_random_phase_best": round(found.random_best, 3), "nearer": found.distance < baseline})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"faces": len(rows), "seconds_budget": args.seconds, "random_samples": args.random,
               "mean_search": round(float(np.mean([r["search"] for r in rows])), 3),
               "mean_random_best": round(float(np.mean([r["random_best"] for r in rows])), 3),
               "nearer_fraction": round(float(np.mean([r["nearer"] for r in rows])), 3),
               "max_search_wall_s": max(r["search_wall_s"] for r in rows),
               "torch_threads": torch.get_num_threads(), "rows": rows}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
