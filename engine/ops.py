"""Every operation a member (or the CLI) can ask for: job in, pictures out.

``Engine`` owns one generator and its directions; ``Engine.run(job, progress)`` turns a
:class:`~engine.jobs.Job` into a :class:`~engine.jobs.Result` or raises a
:class:`~engine.errors.UserError`. The worker process and ``wspace`` both call it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine import edits
from engine.align import Framing, align_face, decode_image, likeness
from engine.checkpoints import DEFAULT_MODEL, load_generator
from engine.encoder import encode, encoder_path_for, load_encoder
from engine.directions import Direction, get_direction, load_directions
from engine.errors import BadArgument, ModelMismatch
from engine.jobs import Face, File, Job, Progress, Result
from engine.kept import KEPT_NOISE_MAX_RES, KeptFaceError, mix_noise, pack_noise, unpack_noise
from engine.projector import project, psnr, w_stats
from engine.render import gif_bytes, montage, mp4_bytes, png_bytes, resize, to_uint8
from engine.sampling import MAX_SEED, ws_from_seeds

DISPLAY = 256  # faces are shown at least this large
PREVIEW = 128
MAX_STEPS = 2000
MAX_FRAMES = 240
MAX_MORPH_LATENTS = 64
AMOUNT_LIMIT = 10.0
RATIO_LIMIT = 5.0
MORPH_FPS = 20  # GIF and MP4 alike, so a morph lasts as long in either (a GIF frame lasts whole 10 ms: 50 ms here)

ProgressFn = Callable[[Progress], None]


def default_directions_path(model_path: Path | None) -> Path:
    path = Path(model_path) if model_path else DEFAULT_MODEL
    return path.with_name(path.stem + ".directions.npz")


class Engine:
    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 directions_path: str | Path | None = None, kept_noise_max_res: int = KEPT_NOISE_MAX_RES) -> None:
        self.device = device
        self.G = load_generator(model_path, device)
        self.model_id = self.G.model_id
        self.directions: dict[str, Direction] = load_directions(
            directions_path or default_directions_path(model_path), self.model_id)
        self.w_std = w_stats(self.G)[1]
        self.framing = Framing.from_dict(getattr(self.G, "provenance", {}).get("framing"))
        # The encoder that starts projections near the answer, when this model has one.
        self.encoder = load_encoder(encoder_path_for(model_path), self.model_id, device)
        layers = self.G.synthesis.noise_layers()
        self.noise_res = [layer.resolution for layer in layers]
        self.const_noise = [layer.noise_const.detach().cpu().numpy().astype(np.float32) for layer in layers]
        self.kept_noise_max_res = kept_noise_max_res
        self.kept_layers = [i for i, r in enumerate(self.noise_res) if r <= kept_noise_max_res]  # the rest stay constant
        self.noise_rule = "mix"  # how noise maps pass between faces (engine/kept.py); bench/kept_face.py compares

    # --- helpers -------------------------------------------------------------------------

    def render(self, ws: np.ndarray, noise: list[np.ndarray] | None = None) -> np.ndarray:
        """``[N, num_ws, w_dim]`` -> ``[N, H, W, 3]`` uint8 at the model's resolution, every face
        with the same per-layer noise maps (default: the model's constant maps)."""
        ws = np.ascontiguousarray(ws, dtype=np.float32)
        return self.draw(ws, [noise or self.const_noise], np.ones((len(ws), 1), np.float32))

    def draw(self, ws: np.ndarray, faces: list[list[np.ndarray]], weights: np.ndarray, batch: int = 16) -> np.ndarray:
        """Render ``ws`` ``[N, num_ws, w_dim]``; item ``i``'s noise maps mix the ``faces``' maps
        with ``weights[i]`` (``[K]`` or ``[K, num_ws]``: style weights, see :func:`mix_noise`)."""
        device = self.G.w_avg.device
        out = []
        with torch.no_grad():
            for i in range(0, len(ws), batch):
                maps = [mix_noise(faces, w, self.noise_rule) for w in weights[i:i + batch]]
                noise = [torch.from_numpy(np.stack([m[layer] for m in maps])[:, None]).to(device)
                         for layer in range(len(self.noise_res))]
                w_t = torch.from_numpy(np.ascontiguousarray(ws[i:i + batch], dtype=np.float32)).to(device)
                out.append(to_uint8(self.G.synthesis(w_t, noise=noise)))
        return np.concatenate(out)

    def display(self, img: np.ndarray) -> np.ndarray:
        return resize(img, max(DISPLAY, img.shape[0]))

    def png(self, img: np.ndarray, name: str, description: str = "") -> File:
        return File(name, png_bytes(self.display(img)), description)

    def face(self, job: Job, key: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """The W+ latent and per-layer noise maps of the kept face ``key`` of a job."""
        value = job.latents.get(key)
        noise = None
        if isinstance(value, Face):
            value, noise = value.ws, value.noise
        if value is None:
            raise BadArgument(f"This job needs a face latent '{key}'.")
        try:
            ws = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise BadArgument(f"The face latent '{key}' is not an array of numbers.") from None
        if ws.shape != (self.G.num_ws, self.G.w_dim):
            raise ModelMismatch("That latent was made by a different model; project the photo again.")
        if not np.isfinite(ws).all():
            raise BadArgument("That latent is damaged (it holds non-numbers); project the photo again.")
        if noise is None or self.noise_rule == "const":
            return ws, self.const_noise
        try:
            kept = unpack_noise(noise, [self.noise_res[i] for i in self.kept_layers])
        except KeptFaceError as exc:
            raise BadArgument(str(exc)) from None
        maps = list(self.const_noise)
        for i, m in zip(self.kept_layers, kept):
            maps[i] = m
        return ws, maps

    def pack(self, maps: list[np.ndarray]) -> np.ndarray:
        """The part of a face's noise maps a kept face holds, packed (see engine/kept.py)."""
        return pack_noise([maps[i] for i in self.kept_layers])

    def faces(self, job: Job, keys) -> tuple[list[np.ndarray], list[list[np.ndarray]], bool]:
        """Several faces: their latents, their noise maps, and whether any kept its own noise."""
        got = [self.face(job, k) for k in keys]
        kept = any(isinstance(job.latents.get(k), Face) and job.latents[k].noise is not None for k in keys)
        return [g[0] for g in got], [g[1] for g in got], kept and self.noise_rule != "const"

    def kept(self, ws: np.ndarray, faces: list[list[np.ndarray]], weights: np.ndarray, has_noise: bool) -> dict:
        """``latent`` and ``noise`` of a Result for a new face the member may keep."""
        noise = self.pack(mix_noise(faces, weights, self.noise_rule)) if has_noise else None
        return {"latent": np.asarray(ws, np.float32), "noise": noise}

    def check_model(self, job: Job) -> None:
        if job.latents and job.model_id and job.model_id != self.model_id:
            raise ModelMismatch("Those faces were made with a different model than the one loaded now; project them again.")

    # --- operations ----------------------------------------------------------------------

    def run(self, job: Job, progress: ProgressFn | None = None) -> Result:
        handler = getattr(self, f"op_{job.kind}", None)
        if handler is None:
            raise BadArgument(f"I don't know how to do '{job.kind[:30]}'.")
        self.check_model(job)
        result = handler(job, progress or (lambda p: None))
        result.job_id, result.model_id = job.id, self.model_id
        return result

    def op_project(self, job: Job, progress: ProgressFn) -> Result:
        steps = _int(job.args.get("steps", 300), "steps", 1, MAX_STEPS)
        image = job.args.get("image")
        if not isinstance(image, (bytes, bytearray)):
            raise BadArgument("This job needs a photo.")
        photo = decode_image(bytes(image), max_bytes=job.args.get("max_image_bytes", 10 * 1024 * 1024))
        aligned = align_face(photo, self.G.resolution, self.framing)
        target = aligned.image

        def preview_png(preview: np.ndarray) -> bytes:
            return png_bytes(montage(np.stack([resize(target, PREVIEW), resize(preview, PREVIEW)]), cols=2))

        def on_step(k: int, n: int, loss: float, preview: np.ndarray | None) -> None:
            progress(Progress(job.id, k, n, f"step {k}/{n}", preview_png(preview) if preview is not None else None))

        init = None
        if self.encoder is not None and job.args.get("encoder", True) is not False:
            init = encode(self.encoder, target)  # a face in milliseconds; the projector refines it
            progress(Progress(job.id, 0, steps, "first guess", preview_png(self.render(init[None])[0])))
        proj = project(self.G, target, steps, init_ws=init, progress=on_step, every=max(1, steps // 20),
                       kept_noise_max_res=self.kept_noise_max_res)
        # The face shown is the kept face, drawn from exactly what the member keeps.
        kept_img = self.render(proj.ws[None], proj.noise)[0]
        score = likeness(target, kept_img)
        side = montage(np.stack([self.display(target), self.display(kept_img)]), cols=2)
        frames = [montage(np.stack([resize(target, PREVIEW), resize(f, PREVIEW)]), cols=2) for f in proj.frames[:-1]]
        frames.append(montage(np.stack([resize(target, PREVIEW), resize(kept_img, PREVIEW)]), cols=2))
        files = [File("side_by_side.png", png_bytes(side), "your photo, aligned | your kept face"),
                 File("progress.gif", gif_bytes(frames, fps=8, max_bytes=job.max_bytes // 2), "the projector converging"),
                 self.png(target, "aligned.png"), self.png(kept_img, "projected.png")]
        figures = {"likeness": round(score, 3), "same_person": score < 0.6, "psnr": round(psnr(kept_img, target), 2),
                   "faces_found": aligned.faces_found, "face_used": "the largest", "steps": steps,
                   "seconds": round(proj.seconds, 1), "loss": proj.loss_kind,
                   "start": "encoder" if init is not None else "w_avg", "schedule": proj.figures.get("schedule")}
        return Result(job.id, files, latent=proj.ws, noise=self.pack(proj.noise), figures=figures)

    def op_render(self, job: Job, progress: ProgressFn) -> Result:
        ws, maps = self.face(job, "a")
        img = self.render(ws[None], maps)[0]
        return Result(job.id, [self.png(img, "face.png")])

    def op_blend(self, job: Job, progress: ProgressFn) -> Result:
        (a, b), faces, has_noise = self.faces(job, ("a", "b"))
        ratio = _number(job.args.get("ratio", 0.5), "ratio", -RATIO_LIMIT, RATIO_LIMIT)
        layers = job.args.get("layers", "all")
        if layers not in edits.LAYER_GROUPS:
            raise BadArgument(f"layers must be one of {', '.join(edits.LAYER_GROUPS)}.")
        t = ratio * edits.layer_mask(self.G.num_ws, layers)[:, 0]
        mixed = edits.blend(a, b, ratio, layers)
        weights = np.stack([[1 + 0 * t, 0 * t], [1 - t, t], [0 * t, 1 + 0 * t]])  # a, the blend, b
        imgs = self.draw(np.stack([a, mixed, b]), faces, weights)
        return Result(job.id, [self.png(imgs[1], "blend.png"),
                               File("blend_strip.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=3)))],
                      **self.kept(mixed, faces, weights[1], has_noise))

    def op_average(self, job: Job, progress: ProgressFn) -> Result:
        latents, faces, has_noise = self.faces(job, sorted(job.latents, key=_key_order))
        if len(latents) < 2:
            raise BadArgument("An average needs at least two faces.")
        mean = edits.average(latents)
        weights = np.full((1, len(latents)), 1 / len(latents), np.float32)
        img = self.draw(mean[None], faces, weights)[0]
        return Result(job.id, [self.png(img, "average.png")], **self.kept(mean, faces, weights[0], has_noise))

    def op_mix(self, job: Job, progress: ProgressFn) -> Result:
        (coarse, fine), faces, has_noise = self.faces(job, ("coarse", "fine"))
        split = job.args.get("split")
        split = edits.layer_ranges(self.G.num_ws)["middle"].start if split is None else \
            _int(split, "split", 1, self.G.num_ws - 1)
        mixed = edits.mix(coarse, fine, split)
        from_fine = (np.arange(self.G.num_ws) >= split).astype(np.float32)
        ones = np.ones(self.G.num_ws, np.float32)
        weights = np.stack([[ones, 0 * ones], [0 * ones, ones], [1 - from_fine, from_fine]])
        imgs = self.draw(np.stack([coarse, fine, mixed]), faces, weights)
        return Result(job.id, [self.png(imgs[2], "mix.png"),
                               File("mix_strip.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=3)),
                                    "coarse | fine | mixed")], **self.kept(mixed, faces, weights[2], has_noise))

    def op_edit(self, job: Job, progress: ProgressFn) -> Result:
        (ws,), faces, has_noise = self.faces(job, ("a",))
        d = get_direction(self.directions, str(job.args.get("direction", "")), self.model_id)
        amount = _number(job.args.get("amount", 1.0), "amount", -AMOUNT_LIMIT, AMOUNT_LIMIT)
        scale = float(d.meta.get("scale", self.w_std / 3))  # one unit of amount, in W
        effect = str(d.meta.get("effect", ""))
        if job.args.get("strip"):
            latents = edits.strip(ws, d.vector, amount * scale, count=5, layers=d.layers)
            imgs = self.render(latents, faces[0])
            return Result(job.id, [File(f"{d.name}_strip.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=5)),
                                        f"{d.name} from {-amount:+g} to {amount:+g}")], text=effect)
        edited = edits.apply_direction(ws, d.vector, amount * scale, d.layers)
        imgs = self.render(np.stack([ws, edited]), faces[0])
        return Result(job.id, [self.png(imgs[1], f"{d.name}.png"),
                               File("before_after.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=2)))],
                      text=effect, **self.kept(edited, faces, np.ones(1), has_noise))

    def op_morph(self, job: Job, progress: ProgressFn) -> Result:
        keys = sorted(job.latents, key=_key_order)
        if len(keys) < 2:
            raise BadArgument("A morph needs at least two faces.")
        if len(keys) > MAX_MORPH_LATENTS:
            raise BadArgument(f"A morph can walk through at most {MAX_MORPH_LATENTS} faces.")
        latents, faces, _ = self.faces(job, keys)
        frames = _int(job.args.get("frames", 12 * len(latents)), "frames", 2, MAX_FRAMES)
        fmt = job.args.get("format", "gif")
        weights = edits.morph_weights(len(latents), frames, loop=True)
        seq = np.einsum("fk,kij->fij", weights, np.stack(latents)).astype(np.float32)
        imgs = self._render_with_progress(job, seq, faces, weights, progress)
        if fmt == "mp4":
            data, name = mp4_bytes([self.display(i) for i in imgs], fps=MORPH_FPS, max_bytes=job.max_bytes), "morph.mp4"
        else:
            data, name = gif_bytes([self.display(i) for i in imgs], fps=MORPH_FPS, max_bytes=job.max_bytes), "morph.gif"
        return Result(job.id, [File(name, data, f"a morph through {len(latents)} faces")])

    def op_loop(self, job: Job, progress: ProgressFn) -> Result:
        (ws,), faces, _ = self.faces(job, ("a",))
        frames = _int(job.args.get("frames", 48), "frames", 8, MAX_FRAMES)
        seq = edits.deform_loop(ws, frames, job.args.get("layers", "middle"), w_std=self.w_std,
                                seed=_int(job.args.get("seed", 0), "seed", 0, MAX_SEED))
        imgs = self._render_with_progress(job, seq, faces, np.ones((frames, 1), np.float32), progress)
        return Result(job.id, [File("loop.gif", gif_bytes([self.display(i) for i in imgs], fps=20, max_bytes=job.max_bytes))])

    def op_random(self, job: Job, progress: ProgressFn) -> Result:
        seed = _int(job.args.get("seed", 0), "seed", 0, MAX_SEED)
        psi = _number(job.args.get("truncation", 0.7), "truncation", 0.0, 1.5)
        ws = ws_from_seeds(self.G, [seed], psi)[0].cpu().numpy()
        img = self.render(ws[None])[0]
        return Result(job.id, [self.png(img, f"seed{seed}.png")], latent=ws, figures={"seed": seed, "truncation": psi})

    def op_grid(self, job: Job, progress: ProgressFn) -> Result:
        latents, faces, _ = self.faces(job, "abc")
        n = _int(job.args.get("size", 5), "size", 2, 9)
        weights = edits.plane_weights(n)
        imgs = self.draw(np.einsum("gk,kij->gij", weights, np.stack(latents)).astype(np.float32), faces, weights)
        tile = max(96, DISPLAY * 3 // n)
        return Result(job.id, [File("grid.png", png_bytes(montage(np.stack([resize(i, tile) for i in imgs]), cols=n)))])

    def _render_with_progress(self, job: Job, seq: np.ndarray, faces, weights: np.ndarray, progress: ProgressFn,
                              batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(seq), batch):
            out.append(self.draw(seq[i:i + batch], faces, weights[i:i + batch]))
            progress(Progress(job.id, min(i + batch, len(seq)), len(seq), f"frame {min(i + batch, len(seq))}/{len(seq)}"))
        return np.concatenate(out)


def _key_order(k: str):
    return (0, int(k)) if k.isdigit() else (1, k)


def _number(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadArgument(f"{name} must be a number.")
    x = float(value)
    if not math.isfinite(x):
        raise BadArgument(f"{name} must be a finite number.")
    if not lo <= x <= hi:
        raise BadArgument(f"{name} must lie between {_plain(lo)} and {_plain(hi)}.")
    return x


def _plain(x: float) -> str:
    """A bound as a member reads it: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _int(value, name: str, lo: int, hi: int) -> int:
    x = _number(value, name, lo, hi)
    if x != int(x):
        raise BadArgument(f"{name} must be a whole number.")
    return int(x)
