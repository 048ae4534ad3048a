"""How an in-between face is found, judged by what the product never optimises; printed as JSON.

Reads kept faces (latent files, e.g. ``bench/survive.py --keep``) and, for every rule of
``engine/jobs/between.py`` side by side in one run, finds the 0.5 face between each member and
the next (what /blend, /morph and /team's morph give) and judges it with FaceNet
(``bench/judge.py``; the product balances with dlib and never sees the judge):

- ``ratio``: the midpoint's larger judge distance to a parent over the parents' distance (a true
  midpoint sits ~0.5–0.6; the bar is ≤ 0.75), mean and max; ``target_ratio``: the same for the
  morph the projection aimed at;
- ``frechet``: Fréchet distance in the judge's space (16 principal components) between the
  midpoints and 200 of the model's random faces;
- ``seconds``: per midpoint, the balance and the projection, alone.

The straight line in W+ is the first row. Contact sheet (``--sheet``): each pair as kept A,
straight midpoint, each rule's midpoint, kept B.

    python -m bench.between --faces out/bench/kept/shipped [--sheet out/bench/between.png] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import judge
from bench.member_edits import load_faces
from bench.report import report
from bench.survive import RANDOM_FACES, principal
from engine.jobs import between as jb
from engine.jobs.engine import Engine
from engine.latent import edits
from engine.latent.between import morph
from engine.model.images import montage

RULES = {
    "plain": jb.Rule(sharpen=0),  # the morph as it is (before this bench)
    "shipped": jb.RULE,  # the dissolve sharpened
    "sharpened_120": jb.Rule(sharpen=120),
    "shipped_100_steps": jb.Rule(steps=100),
}


def midpoints(engine: Engine, faces: list, pairs: list, rule: jb.Rule) -> tuple[np.ndarray, np.ndarray, float]:
    """Each pair's in-between face under ``rule``, its target, and the seconds per pair."""
    out, targets, seconds = [], [], 0.0
    for a, b in pairs:
        (wa, ma), (wb, mb) = faces[a], faces[b]
        parents = engine.draw(np.stack([wa, wb]), [ma, mb], np.eye(2, dtype=np.float32))
        t0 = time.perf_counter()
        got = engine.drive(jb.between(engine, parents, (0.5, 0.5), (wa, wb), rule))
        seconds += time.perf_counter() - t0
        out.append(got[1])
        targets.append(morph(list(parents), jb.landmarks(parents), (0.5, 0.5), rule.sharpen))
    return np.stack(out), np.stack(targets), seconds / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True, help="a folder of kept faces (.npz)")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--sheet", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    engine = Engine(args.model)
    named = load_faces(args.faces, engine)
    names, faces = list(named), list(named.values())
    n = len(faces)
    pairs = [(i, (i + 1) % n) for i in range(n)]
    G = engine.G
    with torch.no_grad():
        rnd = G.mapping(torch.randn(RANDOM_FACES, G.z_dim, generator=torch.Generator().manual_seed(99)))
    random_emb = judge.embed(engine.render(rnd.numpy()))
    pca = principal(random_emb)
    kept = np.stack([engine.render(ws[None], maps)[0] for ws, maps in faces])
    straight = np.stack([engine.draw(edits.blend(faces[a][0], faces[b][0], 0.5)[None], [faces[a][1], faces[b][1]],
                                     np.full((1, 2), 0.5, np.float32))[0] for a, b in pairs])
    rows = {"straight": (straight, None, 0.0)}
    for name in args.rules:
        rows[name] = midpoints(engine, faces, pairs, RULES[name])
        print(name, "done", flush=True)
    e_k = judge.embed(kept)

    def ratios(imgs: np.ndarray) -> tuple[list[float], np.ndarray]:
        e = judge.embed(imgs)
        return [float(max(judge.distance(e[k], e_k[a]), judge.distance(e[k], e_k[b])) / judge.distance(e_k[a], e_k[b]))
                for k, (a, b) in enumerate(pairs)], e

    out = {"model_id": engine.model_id, "faces": names, "threads": torch.get_num_threads(), "rules": {}}
    for name, (imgs, targets, seconds) in rows.items():
        r, e = ratios(imgs)
        row = {"ratio": round(float(np.mean(r)), 3), "ratio_max": round(float(np.max(r)), 3),
               "frechet": round(judge.frechet(pca(e), pca(random_emb)), 3), "seconds": round(seconds, 2)}
        if targets is not None:
            row["target_ratio"] = round(float(np.mean(ratios(targets)[0])), 3)
        if name in RULES:
            row["rule"] = vars(RULES[name])
        out["rules"][name] = row
    if args.sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet = [montage(np.stack([kept[a]] + [rows[k][0][i] for k in rows] + [kept[b]]), cols=len(rows) + 2)
                 for i, (a, b) in enumerate(pairs)]
        img = np.concatenate(sheet)
        Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.Resampling.NEAREST).save(args.sheet)
    report(out, args.out)


if __name__ == "__main__":
    main()
