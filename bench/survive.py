"""Faces that survive what members do with them, judged by what the product never optimises.

For every projection setting, in one run, on the real faces available offline
(``bench/photos.py``): project each (encoder guess + ``--steps``), then judge with FaceNet
(``bench/judge.py``; the projector scores with pixels and SSIM, dlib reports likeness):

- ``kept``: the kept face (W+ and its noise maps) against the aligned photo; ``nearest_own``:
  how many kept faces are nearer their own photo than any other photo; ``redraw_db``: the kept
  face through a latent-file round trip against the image the projection showed;
- ``w_alone``: the kept W+ drawn with the model's own noise maps, against the photo;
- ``blend``: 0.5 midpoints of pairs of members, the straight line in W+ (the engine's draw, its
  noise rule): the larger judge distance to a parent over the parents' distance (a true midpoint
  sits ~0.5–0.6); ``between``: the same for what /blend gives (the projection of the parents'
  landmark-aligned morph, engine/jobs/between.py);
- ``realism``: each style's Mahalanobis distance from W (1 = a random w), for kept faces and
  midpoints; Fréchet distance in the judge's space (top principal components) between the
  midpoints and the model's own random faces;
- ``edits``: age −3 → +3 on kept faces (labeller years; how many move ≥ 5 y), gender ±3
  verdict flips, judge drift from the kept face at ±3 for age, gender, smile;
- ``seconds``: projection time per face (all faces as one batch).

Contact sheets (``--sheets DIR``): per setting, each pair as photo A, kept A, straight midpoint,
/blend's midpoint, kept B, photo B, then age −3 / kept / +3 of each member.

    python -m bench.survive [--steps 300] [--settings today ...] [--sheets out/bench/survive] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import judge
from bench.kept_face import edit_ws
from bench.photos import real_faces
from bench.report import report
from engine.face.labels import label_face
from engine.jobs.engine import Engine
from engine.jobs.handlers import blend as blend_handler
from engine.latent import edits
from engine.latent.batch import Member, ProjectionBatch
from engine.latent.kept import load_npz, save_npz
from engine.latent.projector import psnr, refine_schedule
from engine.model.encoder import encode
from engine.model.images import montage
from engine.protocol import BlendRequest, as_face

# name: the Schedule fields each setting changes (on top of the schedule the projector picks)
SETTINGS = {
    "today": {"noise_octaves": None, "realism_weight": 0.0},  # the projector before this bench
    "fine_noise": {"realism_weight": 0.0},
    "w_first": {"w_first": 0.5, "realism_weight": 0.0},
    "shipped": {},  # the projector's defaults: fine noise octaves, realism 0.002
    "realism_0.0005": {"realism_weight": 0.0005},
    "realism_0.008": {"realism_weight": 0.008},
    "realism_0.03": {"realism_weight": 0.03},
    "coarse_0.03": {"realism_coarse_weight": 0.03},
    "realism_spread": {"realism_weight": 0.008, "w_plus_weight": 0.05},
}
RANDOM_FACES = 200


def project_all(engine: Engine, targets: list[np.ndarray], steps: int, changes: dict):
    batch = ProjectionBatch(engine.G, kept_noise_max_res=engine.kept_noise_max_res)
    members = []
    for t in targets:
        init = encode(engine.encoder, t)
        schedule = refine_schedule(psnr(engine.render(init[None])[0], t))
        m = Member(t, steps, init, dataclasses.replace(schedule, **changes), every=steps)
        batch.add(m)
        members.append(m)
    t0 = time.perf_counter()
    done = {id(m): p for m, p in batch.run()}
    seconds = (time.perf_counter() - t0) / len(targets)
    return [done[id(m)] for m in members], seconds


def kept_faces(engine: Engine, projections) -> tuple[list, list[np.ndarray]]:
    """Each projection through a latent file (what `wspace project` writes, `render` reads)."""
    faces, redraw_db = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for p in projections:
            save_npz(Path(tmp) / "f.npz", p.ws, engine.pack(p.noise), engine.model_id)
            face = as_face(*load_npz(Path(tmp) / "f.npz")[:2])
            faces.append(face)
            redraw = engine.render(face.ws[None], engine.face(face)[1])[0]
            redraw_db.append(psnr(redraw, p.image))
    return faces, redraw_db


def evaluate(engine: Engine, wstats: judge.WStats, random_emb: np.ndarray, pca, names, targets, steps, changes):
    projections, seconds = project_all(engine, targets, steps, changes)
    faces, redraw_db = kept_faces(engine, projections)
    got = [engine.face(f) for f in faces]
    kept = np.stack([engine.render(ws[None], maps)[0] for ws, maps in got])
    alone = engine.render(np.stack([ws for ws, _ in got]))
    n = len(names)
    pairs = [(i, (i + 1) % n) for i in range(n)]
    mids, mid_ws = [], []
    for a, b in pairs:
        mid = edits.blend(got[a][0], got[b][0], 0.5)
        mid_ws.append(mid)
        mids.append(engine.draw(mid[None], [got[a][1], got[b][1]], np.full((1, 2), 0.5, np.float32))[0])
    mids = np.stack(mids)
    # What /blend gives now: the projection of the parents' landmark-aligned morph (engine/jobs/between.py)
    people = []
    for a, b in pairs:
        result = engine.drive(blend_handler(engine, BlendRequest(a=faces[a], b=faces[b]), lambda event: None))
        ws, maps = engine.face(result.faces[0])
        people.append(engine.render(ws[None], maps)[0])
    people = np.stack(people)
    amounts = (-3, 3)
    edit_imgs = {d: np.stack([engine.render(np.stack([edit_ws(engine, ws, d, a) for a in amounts]), maps)
                              for ws, maps in got]) for d in ("age", "gender", "smile")}
    emb = judge.embed(np.concatenate([np.stack(targets), kept, alone, mids, people]
                                     + [edit_imgs[d].reshape(-1, *kept.shape[1:]) for d in edit_imgs]))
    e_t, e_k, e_a, e_m, e_p = (emb[i * n:(i + 1) * n] for i in range(5))
    e_edit = emb[5 * n:].reshape(3, n, len(amounts), -1)
    to_photos = judge.distance(e_k[:, None], e_t[None])
    def ratios(e_mid):
        return [float(max(judge.distance(e_mid[k], e_k[a]), judge.distance(e_mid[k], e_k[b]))
                      / judge.distance(e_k[a], e_k[b])) for k, (a, b) in enumerate(pairs)]

    labels = {d: [[label_face(im) for im in imgs] for imgs in edit_imgs[d]] for d in ("age", "gender")}
    age_moves = [lab[1]["age"] - lab[0]["age"] for lab in labels["age"]]
    flips = [np.sign(lab[0]["gender"]) != np.sign(lab[1]["gender"]) for lab in labels["gender"]]
    drift = {d: round(float(judge.distance(e_edit[i], e_k[:, None]).mean()), 3)
             for i, d in enumerate(("age", "gender", "smile"))}
    drift_max = {d: round(float(judge.distance(e_edit[i], e_k[:, None]).max()), 3)
                 for i, d in enumerate(("age", "gender", "smile"))}
    result = {
        "changes": changes,
        "kept": round(float(np.diag(to_photos).mean()), 3),
        "kept_max": round(float(np.diag(to_photos).max()), 3),
        "nearest_own": int(sum(np.argmin(to_photos[i]) == i for i in range(n))),
        "redraw_db_min": round(float(min(redraw_db)), 1),
        "kept_psnr_db": round(float(np.mean([psnr(k, t) for k, t in zip(kept, targets)])), 2),
        "w_alone": round(float(judge.distance(e_a, e_t).mean()), 3),
        "blend_ratio": round(float(np.mean(ratios(e_m))), 3),
        "blend_ratio_max": round(float(np.max(ratios(e_m))), 3),
        "between_ratio": round(float(np.mean(ratios(e_p))), 3),
        "between_ratio_max": round(float(np.max(ratios(e_p))), 3),
        "realism_kept": round(float(np.mean([wstats.realism(f.ws).mean() for f in faces])), 2),
        "realism_mid": round(float(np.mean([wstats.realism(w).mean() for w in mid_ws])), 2),
        "frechet_mid_vs_random": round(judge.frechet(pca(e_m), pca(random_emb)), 3),
        "frechet_between_vs_random": round(judge.frechet(pca(e_p), pca(random_emb)), 3),
        "age_move_years": [round(float(x), 1) for x in age_moves],
        "age_moves_5y": int(sum(x >= 5 for x in age_moves)),
        "gender_flips": int(sum(flips)),
        "drift_pm3": drift,
        "drift_pm3_max": drift_max,
        "seconds": round(seconds, 2),
    }
    sheet = {"pairs": [np.stack([targets[a], kept[a], mids[k], people[k], kept[b], targets[b]])
                       for k, (a, b) in enumerate(pairs)],
             "edits": [np.stack([edit_imgs["age"][i][0], kept[i], edit_imgs["age"][i][1]]) for i in range(n)]}
    return result, sheet, faces


def save_sheet(path: Path, sheet: dict) -> None:
    rows = [montage(r, cols=len(r)) for r in sheet["pairs"]]
    ages = [montage(r, cols=len(r)) for r in sheet["edits"]]
    width = max(r.shape[1] for r in rows + ages)

    def pad(r):
        return np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)

    Image.fromarray(np.concatenate([pad(r) for r in rows + ages])).resize(
        (width * 2, sum(r.shape[0] for r in rows + ages) * 2), Image.Resampling.NEAREST).save(path)


def principal(random_emb: np.ndarray, dims: int = 16):
    mean = random_emb.mean(0)
    _, _, vt = np.linalg.svd(random_emb - mean, full_matrices=False)
    return lambda e: (e - mean) @ vt[:dims].T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--sheets", type=Path, default=None, help="write a contact sheet per setting here")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write each setting's kept faces here (latent files)")
    args = ap.parse_args()
    t0 = time.time()
    engine = Engine(args.model)
    faces = real_faces(engine.G.resolution, engine.framing)
    names, targets = list(faces), list(faces.values())
    G = engine.G
    with torch.no_grad():
        rnd = G.mapping(torch.randn(RANDOM_FACES, G.z_dim, generator=torch.Generator().manual_seed(99)))
    random_emb = judge.embed(engine.render(rnd.numpy()))
    photos = judge.embed(np.stack(targets))
    out = {"model_id": engine.model_id, "steps": args.steps, "threads": torch.get_num_threads(), "faces": names,
           "photos_apart": round(float(np.mean([judge.distance(photos[i], photos[j])
                                                for i in range(len(names)) for j in range(i)])), 3),
           "settings": {}}
    wstats, pca = judge.WStats(G), principal(random_emb)
    if args.sheets:
        args.sheets.mkdir(parents=True, exist_ok=True)
    for name in args.settings:
        res, sheet, faces = evaluate(engine, wstats, random_emb, pca, names, targets, args.steps, SETTINGS[name])
        if args.keep:
            (args.keep / name).mkdir(parents=True, exist_ok=True)
            for face_name, face in zip(names, faces):
                save_npz(args.keep / name / f"{face_name}.npz", face.ws, face.noise, engine.model_id)
        out["settings"][name] = res
        print(name, res, flush=True)
        if args.sheets:
            save_sheet(args.sheets / f"{name}.png", sheet)
    out["seconds"] = round(time.time() - t0, 1)
    report(out, args.out)


if __name__ == "__main__":
    main()
