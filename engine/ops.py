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
from engine.jobs import File, Job, Progress, Result
from engine.projector import project, w_stats
from engine.render import gif_bytes, montage, mp4_bytes, png_bytes, resize, to_uint8
from engine.sampling import MAX_SEED, synthesize, ws_from_seeds

DISPLAY = 256  # faces are shown at least this large
PREVIEW = 128
MAX_STEPS = 2000
MAX_FRAMES = 240
MAX_MORPH_LATENTS = 64
AMOUNT_LIMIT = 10.0
RATIO_LIMIT = 5.0

ProgressFn = Callable[[Progress], None]


def default_directions_path(model_path: Path | None) -> Path:
    path = Path(model_path) if model_path else DEFAULT_MODEL
    return path.with_name(path.stem + ".directions.npz")


class Engine:
    def __init__(self, model_path: str | Path | None = None, device: str = "cpu",
                 directions_path: str | Path | None = None) -> None:
        self.device = device
        self.G = load_generator(model_path, device)
        self.model_id = self.G.model_id
        self.directions: dict[str, Direction] = load_directions(
            directions_path or default_directions_path(model_path), self.model_id)
        self.w_std = w_stats(self.G)[1]
        self.framing = Framing.from_dict(getattr(self.G, "provenance", {}).get("framing"))
        # The encoder that starts projections near the answer, when this model has one.
        self.encoder = load_encoder(encoder_path_for(model_path), self.model_id, device)

    # --- helpers -------------------------------------------------------------------------

    def render(self, ws: np.ndarray) -> np.ndarray:
        """``[N, num_ws, w_dim]`` -> ``[N, H, W, 3]`` uint8 at the model's resolution."""
        return to_uint8(synthesize(self.G, torch.from_numpy(np.ascontiguousarray(ws, dtype=np.float32))))

    def display(self, img: np.ndarray) -> np.ndarray:
        return resize(img, max(DISPLAY, img.shape[0]))

    def png(self, img: np.ndarray, name: str, description: str = "") -> File:
        return File(name, png_bytes(self.display(img)), description)

    def latent(self, job: Job, key: str) -> np.ndarray:
        if job.latents.get(key) is None:
            raise BadArgument(f"This job needs a face latent '{key}'.")
        try:
            ws = np.asarray(job.latents[key], dtype=np.float32)
        except (TypeError, ValueError):
            raise BadArgument(f"The face latent '{key}' is not an array of numbers.") from None
        if ws.shape != (self.G.num_ws, self.G.w_dim):
            raise ModelMismatch("That latent was made by a different model; project the photo again.")
        if not np.isfinite(ws).all():
            raise BadArgument("That latent is damaged (it holds non-numbers); project the photo again.")
        return ws

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
        proj = project(self.G, target, steps, init_ws=init, progress=on_step, every=max(1, steps // 20))
        score = likeness(target, proj.image)
        side = montage(np.stack([self.display(target), self.display(proj.image)]), cols=2)
        frames = [montage(np.stack([resize(target, PREVIEW), resize(f, PREVIEW)]), cols=2) for f in proj.frames]
        files = [File("side_by_side.png", png_bytes(side), "your photo, aligned | its projection"),
                 File("progress.gif", gif_bytes(frames, fps=8, max_bytes=job.max_bytes // 2), "the projector converging"),
                 self.png(target, "aligned.png"), self.png(proj.image, "projected.png")]
        figures = {"likeness": round(score, 3), "same_person": score < 0.6, "psnr": round(proj.psnr, 2),
                   "faces_found": aligned.faces_found, "steps": steps, "seconds": round(proj.seconds, 1),
                   "loss": proj.loss_kind, "start": "encoder" if init is not None else "w_avg"}
        return Result(job.id, files, latent=proj.ws, figures=figures)

    def op_render(self, job: Job, progress: ProgressFn) -> Result:
        img = self.render(self.latent(job, "a")[None])[0]
        return Result(job.id, [self.png(img, "face.png")])

    def op_blend(self, job: Job, progress: ProgressFn) -> Result:
        a, b = self.latent(job, "a"), self.latent(job, "b")
        ratio = _number(job.args.get("ratio", 0.5), "ratio", -RATIO_LIMIT, RATIO_LIMIT)
        layers = job.args.get("layers", "all")
        if layers not in edits.LAYER_GROUPS:
            raise BadArgument(f"layers must be one of {', '.join(edits.LAYER_GROUPS)}.")
        imgs = self.render(np.stack([a, edits.blend(a, b, ratio, layers), b]))
        return Result(job.id, [self.png(imgs[1], "blend.png"),
                               File("blend_strip.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=3)))],
                      latent=edits.blend(a, b, ratio, layers))

    def op_average(self, job: Job, progress: ProgressFn) -> Result:
        latents = [self.latent(job, k) for k in sorted(job.latents, key=_key_order)]
        if len(latents) < 2:
            raise BadArgument("An average needs at least two faces.")
        mean = edits.average(latents)
        img = self.render(mean[None])[0]
        return Result(job.id, [self.png(img, "average.png")], latent=mean)

    def op_mix(self, job: Job, progress: ProgressFn) -> Result:
        coarse, fine = self.latent(job, "coarse"), self.latent(job, "fine")
        split = job.args.get("split")
        split = edits.layer_ranges(self.G.num_ws)["middle"].start if split is None else \
            _int(split, "split", 1, self.G.num_ws - 1)
        mixed = edits.mix(coarse, fine, split)
        imgs = self.render(np.stack([coarse, fine, mixed]))
        return Result(job.id, [self.png(imgs[2], "mix.png"),
                               File("mix_strip.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=3)),
                                    "coarse | fine | mixed")], latent=mixed)

    def op_edit(self, job: Job, progress: ProgressFn) -> Result:
        ws = self.latent(job, "a")
        d = get_direction(self.directions, str(job.args.get("direction", "")), self.model_id)
        amount = _number(job.args.get("amount", 1.0), "amount", -AMOUNT_LIMIT, AMOUNT_LIMIT)
        scale = float(d.meta.get("scale", self.w_std / 3))  # one unit of amount, in W
        if job.args.get("strip"):
            latents = edits.strip(ws, d.vector, amount * scale, count=5, layers=d.layers)
            imgs = self.render(latents)
            return Result(job.id, [File(f"{d.name}_strip.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=5)),
                                        f"{d.name} from {-amount:+g} to {amount:+g}")])
        edited = edits.apply_direction(ws, d.vector, amount * scale, d.layers)
        imgs = self.render(np.stack([ws, edited]))
        return Result(job.id, [self.png(imgs[1], f"{d.name}.png"),
                               File("before_after.png", png_bytes(montage(np.stack([self.display(i) for i in imgs]), cols=2)))],
                      latent=edited)

    def op_morph(self, job: Job, progress: ProgressFn) -> Result:
        latents = [self.latent(job, k) for k in sorted(job.latents, key=_key_order)]
        if len(latents) < 2:
            raise BadArgument("A morph needs at least two faces.")
        if len(latents) > MAX_MORPH_LATENTS:
            raise BadArgument(f"A morph can walk through at most {MAX_MORPH_LATENTS} faces.")
        frames = _int(job.args.get("frames", 12 * len(latents)), "frames", 2, MAX_FRAMES)
        fmt = job.args.get("format", "gif")
        seq = edits.morph_sequence(np.stack(latents), frames, loop=True)
        imgs = self._render_with_progress(job, seq, progress)
        if fmt == "mp4":
            data, name = mp4_bytes([self.display(i) for i in imgs], fps=24, max_bytes=job.max_bytes), "morph.mp4"
        else:
            data, name = gif_bytes([self.display(i) for i in imgs], fps=15, max_bytes=job.max_bytes), "morph.gif"
        return Result(job.id, [File(name, data, f"a morph through {len(latents)} faces")])

    def op_loop(self, job: Job, progress: ProgressFn) -> Result:
        ws = self.latent(job, "a")
        frames = _int(job.args.get("frames", 48), "frames", 8, MAX_FRAMES)
        seq = edits.deform_loop(ws, frames, job.args.get("layers", "middle"), w_std=self.w_std,
                                seed=_int(job.args.get("seed", 0), "seed", 0, MAX_SEED))
        imgs = self._render_with_progress(job, seq, progress)
        return Result(job.id, [File("loop.gif", gif_bytes([self.display(i) for i in imgs], fps=20, max_bytes=job.max_bytes))])

    def op_random(self, job: Job, progress: ProgressFn) -> Result:
        seed = _int(job.args.get("seed", 0), "seed", 0, MAX_SEED)
        psi = _number(job.args.get("truncation", 0.7), "truncation", 0.0, 1.5)
        ws = ws_from_seeds(self.G, [seed], psi)[0].cpu().numpy()
        img = self.render(ws[None])[0]
        return Result(job.id, [self.png(img, f"seed{seed}.png")], latent=ws, figures={"seed": seed, "truncation": psi})

    def op_grid(self, job: Job, progress: ProgressFn) -> Result:
        a, b, c = (self.latent(job, k) for k in "abc")
        n = _int(job.args.get("size", 5), "size", 2, 9)
        imgs = self.render(edits.plane_grid(a, b, c, n))
        tile = max(96, DISPLAY * 3 // n)
        return Result(job.id, [File("grid.png", png_bytes(montage(np.stack([resize(i, tile) for i in imgs]), cols=n)))])

    def _render_with_progress(self, job: Job, seq: np.ndarray, progress: ProgressFn, batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(seq), batch):
            out.append(self.render(seq[i:i + batch]))
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
        raise BadArgument(f"{name} must lie between {lo:g} and {hi:g}.")
    return x


def _int(value, name: str, lo: int, hi: int) -> int:
    x = _number(value, name, lo, hi)
    if x != int(x):
        raise BadArgument(f"{name} must be a whole number.")
    return int(x)
