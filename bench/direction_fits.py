"""Other ways to learn the age and gender directions, judged on members' kept faces; printed as JSON.

Samples ``--samples`` faces in W (with truncation ``psi``: 1 as the model draws them, above 1
reaching where projected real faces sit), labels each (``engine/face/labels.py``), fits each
attribute's normal three ways — InterFaceGAN's SVM on the extreme 2 % (what ships), ridge
regression on every sample, and the covariance of w with the score — and measures each on the kept
faces as ``bench/member_edits.py`` does (labeller years and flips from -3 to +3, judge drift), at
a few multiples of its unit. Labelled samples are cached (``--cache``), so a second run only fits.

    python -m bench.direction_fits --faces out/bench/kept/shipped [--samples 8000] [--psi 1 1.6] [--out FILE]
        [--ship gender svm 1.6]   # write that fit (its unit) into the model's directions file

After ``--ship``, ``python -m bench.member_edits --faces … --write-effects`` rewrites the effect
sentences members read from the shipped directions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.member_edits import load_faces, measure
from bench.report import report
from engine.face.labels import ATTRIBUTES, label_face
from engine.jobs.bundle import directions_path_for
from engine.jobs.engine import Engine
from engine.latent.directions import Direction, condition, fit_boundary, save_directions, unit
from engine.latent.learn import AMOUNT_SPAN, match_unsupervised_scales
from engine.model.images import to_uint8

MULTIPLES = {"svm": (1.0, 1.5), "ridge": (1.0, 1.5, 2.0, 3.0), "cov": (0.2, 0.35, 0.5)}


def labelled(engine: Engine, samples: int, psi: float, seed: int, cache: Path) -> dict:
    path = cache / f"samples_{engine.model_id}_{samples}_{psi:g}_{seed}.npz"
    if path.exists():
        return dict(np.load(path))
    G = engine.G
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
        w = G.w_avg.reshape(1, -1) + psi * (w - G.w_avg.reshape(1, -1))
    scores = {a: np.full(samples, np.nan) for a in ATTRIBUTES}
    for i in range(0, samples, 32):
        with torch.no_grad():
            imgs = to_uint8(G.synthesis(w[i:i + 32, None].expand(-1, G.num_ws, -1).contiguous()))
        for j, img in enumerate(imgs):
            labels = label_face(img)
            for a in ATTRIBUTES:
                scores[a][i + j] = labels[a]
    out = {"w": w.numpy(), **scores}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def normal(method: str, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The unit normal of ``y`` in W by ``method``: "svm" (InterFaceGAN, the extreme 2 %), "ridge"
    (regression on every sample) or "cov" (the covariance of w with the score)."""
    if method == "svm":
        return fit_boundary(w, y, keep=0.02, seed=7)[0]
    ok = np.isfinite(y)
    x, y = w[ok] - w[ok].mean(0), y[ok]
    if method == "ridge":
        from sklearn.linear_model import Ridge

        return unit(Ridge(alpha=1.0).fit(x, (y - y.mean()) / y.std()).coef_)
    return unit((x * (y - y.mean())[:, None]).mean(0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=Path, required=True, help="a folder of kept faces (.npz)")
    ap.add_argument("--samples", type=int, default=8000)
    ap.add_argument("--psi", type=float, nargs="+", default=[1.0, 1.6])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "wspace" / "direction_fits")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ship", nargs=3, metavar=("DIRECTION", "METHOD", "PSI"), default=None)
    args = ap.parse_args()
    engine = Engine(args.model)
    faces = load_faces(args.faces, engine)
    G, out = engine.G, {"model_id": engine.model_id, "samples": args.samples, "fits": []}
    chosen = None
    for k, psi in enumerate(args.psi):
        data = labelled(engine, args.samples, psi, 7 + k, args.cache)
        w = data["w"]
        spread = w - w.mean(0)
        for method in MULTIPLES:
            normals = {a: normal(method, w, data[a]) for a in ("age", "gender")}
            normals["age"] = condition(normals["age"], [normals["gender"]])
            for a in ("age", "gender"):
                unit_scale = AMOUNT_SPAN * float(np.std(spread @ normals[a]))
                if args.ship and (a, method, psi) == (args.ship[0], args.ship[1], float(args.ship[2])):
                    chosen = (a, normals[a], unit_scale, method, psi)
                engine.directions[a] = Direction(a, np.repeat(normals[a][None], G.num_ws, axis=0), G.model_id, "all",
                                                 {"scale": unit_scale})
                for mul in MULTIPLES[method]:
                    m = measure(engine, faces, a, "all", mul)
                    row = {"psi": psi, "method": method, "direction": a, "multiple": mul,
                           "scale": round(unit_scale * mul, 2), "moved_5y": m["moved_5y"],
                           "years_median": m["years_median"], "flips": m["flips"],
                           "drift_pm3": [m["drift_by_amount"]["-3"], m["drift_by_amount"]["3"]]}
                    out["fits"].append(row)
                    print(row, flush=True)
        engine.directions.clear()
        engine.directions.update(Engine(args.model).directions)  # the shipped ones back for the next psi
    if chosen is not None:
        ship(engine, args.model, *chosen, args.samples)
        out["shipped"] = args.ship
    report(out, args.out)


def ship(engine: Engine, model: Path | None, name: str, vector: np.ndarray, scale: float, method: str, psi: float,
         samples: int) -> None:
    """Replace the direction ``name`` in the model's directions file by this fit, at its unit (the
    SeFa factors' units then follow the named directions', as ``wspace directions learn`` sets them)."""
    old = engine.directions[name]
    meta = {"method": f"{'interfacegan' if method == 'svm' else method} on {samples} samples at truncation {psi:g}",
            "scale": round(scale, 4),
            "why": "bench/direction_fits.py: measured on members' kept faces, side by side with the other fits"}
    engine.directions[name] = Direction(name, np.repeat(vector[None], engine.G.num_ws, axis=0), old.model_id,
                                        old.layers, meta)
    match_unsupervised_scales(engine.G, list(engine.directions.values()))  # SeFa units follow the named ones
    save_directions(list(engine.directions.values()), directions_path_for(model))


if __name__ == "__main__":
    main()
