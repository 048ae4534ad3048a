"""What a member keeps, and how it behaves, for several projection settings; printed as JSON.

Targets: every real face available offline (bench/photos.py: nine) and held-out teacher
DCGAN faces, none of which the encoder was trained on. Each setting projects every
target (encoder guess + ``--steps`` refinement, the schedule the projector picks), then:

- ``redraw_db``: the kept face (W+ and noise through a latent-file round trip and the
  engine's ``render`` job) against the image the projection showed (≥ 40 dB: same face);
- ``kept_psnr_db`` / ``kept_dlib``: the kept face against the aligned target;
- ``blend_detect``: dlib finds a face in blend midpoints of real-photo pairs and in their
  ±2 smile and yaw edits;
- ``identity_pm2``: dlib distance between a kept face and its ±2 edits, for every shipped
  direction (``detected_pm2``: how often dlib's detector still finds a face there);
  ``smile_sign`` / ``yaw_sign``: the labeller's measure moves with the sign;
- ``seconds``: mean projection time.

Setting ``today`` keeps W+ only (what landed before): its redraw drops the noise maps. Every
setting here moves every noise map with no realism penalty, as the projector did before
``bench/survive.py`` chose the shipped one (compared there, judged by FaceNet).
For the settings that keep noise, the noise rules between faces (engine/latent/kept.py) are
compared on the same blend midpoints and on morph seams.

    python -m bench.kept_face [--steps 300] [--teacher 4] [--settings today kept ...] [--timing-rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.photos import real_faces
from engine.face.align import aligned_landmarks, face_descriptor
from engine.face.labels import label_face
from engine.jobs.engine import Engine
from engine.latent import edits
from engine.latent.batch import project
from engine.latent.kept import load_npz, save_npz
from engine.latent.projector import psnr, refine_schedule
from engine.model.encoder import encode
from engine.model.images import to_uint8
from engine.model.teacher import load_teacher
from engine.protocol import as_face

HELD_OUT_SEED = 4242
# name: (keep the noise maps, w_plus_weight, w_mean_weight, noise lr multiplier, finest kept noise map,
#        noise regulariser weight)
SETTINGS = {
    "today": (False, 0.0, 0.0, 1.0, 1024, 1e5),
    "kept": (True, 0.0, 0.0, 1.0, 1024, 1e5),
    "kept_reg_light": (True, 0.01, 0.0, 1.0, 1024, 1e5),
    "kept_reg_strong": (True, 0.05, 0.02, 1.0, 1024, 1e5),
    "frozen_noise_reg": (True, 0.01, 0.0, 0.0, 1024, 1e5),
    "kept_smooth_noise": (True, 0.0, 0.0, 1.0, 1024, 1e6),
    "kept_smoother_noise": (True, 0.0, 0.0, 1.0, 1024, 1e7),
    # What keeping only the coarser maps costs (as a 1024-px model keeps maps up to 256 px):
    "kept_upto32": (True, 0.0, 0.0, 1.0, 32, 1e5),
    "kept_upto16": (True, 0.0, 0.0, 1.0, 16, 1e5),
}
FIELDS = ("keep_noise", "w_plus_weight", "w_mean_weight", "noise_lr_mul", "kept_noise_max_res", "noise_reg_weight")


def teacher_faces(count: int, size: int) -> dict[str, np.ndarray]:
    from engine.model.images import resize

    gen = torch.Generator().manual_seed(HELD_OUT_SEED)
    with torch.no_grad():
        imgs = to_uint8(load_teacher()(torch.randn(count, 100, generator=gen)))
    return {f"teacher{i}": resize(im, size) for i, im in enumerate(imgs)}


def edit_ws(engine: Engine, ws: np.ndarray, name: str, amount: float) -> np.ndarray:
    d = engine.directions[name]
    return edits.apply_direction(ws, d.vector, amount * float(d.meta.get("scale", engine.w_std / 3)), d.layers)


def project_one(engine: Engine, target: np.ndarray, steps: int, setting) -> tuple:
    keep, wp, wm, noise_lr, max_res, noise_reg = setting
    G = engine.G
    engine.kept_layers = [i for i, r in enumerate(engine.noise_res) if r <= max_res]
    init = encode(engine.encoder, target)
    schedule = refine_schedule(psnr(engine.render(init[None])[0], target))
    schedule = dataclasses.replace(schedule, w_plus_weight=wp, w_mean_weight=wm, noise_lr_mul=noise_lr,
                                   noise_reg_weight=noise_reg, noise_octaves=None, realism_weight=0.0)
    t0 = time.perf_counter()
    proj = project(G, target, steps, init_ws=init, schedule=schedule, every=steps, kept_noise_max_res=max_res)
    seconds = time.perf_counter() - t0
    noise = engine.pack(proj.noise) if keep else None
    with tempfile.TemporaryDirectory() as tmp:  # what `wspace project` writes and `wspace render` reads
        save_npz(Path(tmp) / "latent.npz", proj.ws, noise, engine.model_id)
        ws, noise, _ = load_npz(Path(tmp) / "latent.npz")
    face = as_face(ws, noise)
    redraw = engine.render(ws[None], engine.face(face)[1])[0]
    return face, redraw, proj.image, seconds


def evaluate(engine: Engine, targets: dict, steps: int, setting) -> tuple[dict, dict]:
    faces, rows = {}, {}
    for name, target in targets.items():
        face, redraw, shown, seconds = project_one(engine, target, steps, setting)
        faces[name] = face
        t_desc = face_descriptor(target)
        k_desc = face_descriptor(redraw)
        maps = engine.face(face)[1]
        ident, signs, detected = {}, {}, {}
        for d in engine.directions:
            ends = engine.render(np.stack([edit_ws(engine, face.ws, d, a) for a in (-2, 2)]), maps)
            ident[d] = float(np.mean([np.linalg.norm(face_descriptor(e) - k_desc) for e in ends]))
            detected[d] = float(np.mean([aligned_landmarks(e)[1] for e in ends]))
            if d in ("smile", "yaw"):
                lo, hi = (label_face(e)[d] for e in ends)
                signs[d] = bool(hi > lo)
        rows[name] = {"redraw_db": psnr(redraw, shown), "kept_psnr_db": psnr(redraw, target),
                      "kept_dlib": float(np.linalg.norm(k_desc - t_desc)), "identity": ident, "signs": signs,
                      "detected": detected,
                      "seconds": seconds}
    return faces, rows


def blend_checks(engine: Engine, faces: dict, pairs: list[tuple[str, str]], rule: str) -> dict:
    """Midpoints of each pair and their ±2 smile/yaw edits: dlib detection rate; morph seam."""
    old, engine.noise_rule = engine.noise_rule, rule
    try:
        detected, seams, mid_identity = [], [], []
        for a, b in pairs:
            (wa, wb), maps, _ = engine.faces((faces[a], faces[b]))
            mid = edits.blend(wa, wb, 0.5)
            ws = [mid] + [edit_ws(engine, mid, d, s) for d in ("smile", "yaw") for s in (-2, 2)]
            imgs = engine.draw(np.stack(ws), maps, np.full((len(ws), 2), 0.5, np.float32))
            detected += [aligned_landmarks(im)[1] for im in imgs]
            ends = engine.draw(np.stack([wa, wb]), maps, np.eye(2, dtype=np.float32))
            middle = face_descriptor(imgs[0])
            mid_identity.append(float(np.mean([np.linalg.norm(middle - face_descriptor(e)) for e in ends])))
            weights = edits.morph_weights(2, 24, loop=True)
            frames = engine.draw(
                np.einsum("fk,kij->fij", weights, np.stack([wa, wb])).astype(np.float32), maps, weights
            )
            steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
            seams.append(float(steps.max() / max(np.median(steps), 1e-6)))
        return {
            "detect_rate": round(float(np.mean(detected)), 3),
            "n": len(detected),
            "midpoint_to_ends_dlib": round(float(np.mean(mid_identity)), 3),
            "morph_seam_max_over_median_step": round(float(np.mean(seams)), 2),
        }
    finally:
        engine.noise_rule = old


def timing(engine: Engine, targets: list, steps: int, rounds: int, names: list[str]) -> dict:
    """Projection seconds of each setting, interleaved on the same targets (this machine is noisy)."""
    times = {n: [] for n in names}
    for _ in range(rounds):
        for t in targets:
            for n in names:
                times[n].append(project_one(engine, t, steps, SETTINGS[n])[3])
    out = {n: round(float(np.median(v)), 3) for n, v in times.items()}
    if len(names) == 2:
        out["ratio"] = round(out[names[1]] / out[names[0]], 3)
    return out


def seam_with_independent_maps(engine: Engine, seed: int = 0) -> dict:
    """Projected faces' maps stay near their shared start (the model's constant maps), so
    the rules differ little on them; with independent maps (the general case: other
    models, longer projections) this is how each rule's morph steps look."""
    rng = np.random.default_rng(seed)
    faces = [[rng.standard_normal(m.shape).astype(np.float32) for m in engine.const_noise] for _ in range(2)]
    ws = (
        engine.G.mapping(torch.randn(2, engine.G.z_dim, generator=torch.Generator().manual_seed(seed))).detach().numpy()
    )
    weights = edits.morph_weights(2, 24, loop=True)
    seq = np.einsum("fk,kij->fij", weights, ws).astype(np.float32)
    out, old = {}, engine.noise_rule
    try:
        for rule in ("mix", "nearest"):
            engine.noise_rule = rule
            frames = engine.draw(seq, faces, weights).astype(np.float32)
            steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
            out[rule] = round(float(steps.max() / np.median(steps)), 2)
    finally:
        engine.noise_rule = old
    return {"morph_seam_max_over_median_step": out}


def summarise(rows: dict, names: list[str]) -> dict:
    sel = [rows[n] for n in names]
    return {
        "n": len(sel),
        "redraw_db_min": round(min(r["redraw_db"] for r in sel), 2),
        "kept_psnr_db": round(float(np.mean([r["kept_psnr_db"] for r in sel])), 2),
        "kept_dlib_mean": round(float(np.mean([r["kept_dlib"] for r in sel])), 3),
        "kept_dlib_max": round(float(np.max([r["kept_dlib"] for r in sel])), 3),
        "identity_pm2": {d: round(float(np.mean([r["identity"][d] for r in sel])), 3) for d in sel[0]["identity"]},
        "detected_pm2": {d: round(float(np.mean([r["detected"][d] for r in sel])), 3) for d in sel[0]["detected"]},
        "smile_sign": round(float(np.mean([r["signs"]["smile"] for r in sel])), 3),
        "yaw_sign": round(float(np.mean([r["signs"]["yaw"] for r in sel])), 3),
        "seconds": round(float(np.mean([r["seconds"] for r in sel])), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--teacher", type=int, default=4)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--timing-rounds", type=int, default=0, help="time today vs --ship, interleaved, this many rounds")
    ap.add_argument("--ship", default="kept", help="the setting timed against today")
    args = ap.parse_args()
    t0 = time.time()
    engine = Engine(args.model)
    real = real_faces(engine.G.resolution, engine.framing)
    teacher = teacher_faces(args.teacher, engine.G.resolution)
    targets = {**real, **teacher}
    names = list(real)
    pairs = [(names[i], names[(i + 1) % len(names)]) for i in range(len(names))]
    out = {
        "model_id": engine.model_id,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "real_faces": names,
        "teacher_faces": len(teacher),
        "settings": {},
    }
    for name in args.settings:
        setting = SETTINGS[name]
        faces, rows = evaluate(engine, targets, args.steps, setting)
        res = {
            "setting": dict(zip(FIELDS, setting)),
            "real": summarise(rows, names),
            "teacher": summarise(rows, list(teacher)),
            "per_face_dlib": {n: round(r["kept_dlib"], 3) for n, r in rows.items()},
        }
        rules = ("mix", "nearest", "const") if setting[0] else ("const",)
        res["blends"] = {rule: blend_checks(engine, faces, pairs, rule) for rule in rules}
        out["settings"][name] = res
        print(json.dumps({name: res}), file=sys.stderr, flush=True)
    out["independent_maps"] = seam_with_independent_maps(engine)
    if args.timing_rounds:
        out["timing"] = timing(
            engine,
            list(targets.values())[:3],
            args.steps,
            args.timing_rounds,
            [n for n in ("today", args.ship) if n in SETTINGS],
        )
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
