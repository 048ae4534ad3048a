"""One handler per request type: a validated request in, a typed result out.

``@handles(SomeRequest)`` registers a function ``(engine, request, progress) -> Result`` in
this module's ``HANDLERS`` (engine/jobs/team.py keeps its own); engine/jobs/dispatch.py joins them,
validates each request and calls its handler. Every face a
handler draws uses that member's own noise maps; every new face it returns is a kept face
(W+ and maps) that redraws exactly what was shown.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from engine.face.align import align_all, align_face, aligned_landmarks, decode_image, likeness
from engine.jobs.asks import Draw
from engine.jobs.between import between, morph_keys
from engine.jobs.engine import Engine
from engine.jobs.lookalike import SAME_PERSON_HERE, details, distance_in_words
from engine.latent import edits
from engine.latent.batch import Member
from engine.latent.directions import get_direction
from engine.latent.projector import Projection, psnr
from engine.model.encoder import encode
from engine.model.images import DISPLAY, gif_bytes, montage, mp4_bytes, numbered, png_bytes, resize
from engine.model.sampling import ws_from_seeds
from engine.protocol import (
    AverageRequest,
    BlendRequest,
    EditRequest,
    Face,
    File,
    GridRequest,
    LoopRequest,
    MixRequest,
    MorphRequest,
    Progress,
    ProjectRequest,
    RandomRequest,
    RenderRequest,
    Request,
    Result,
    SwapRequest,
    as_face,
)

PREVIEW = 128
MORPH_FPS = 20  # GIF and MP4 alike, so a morph lasts as long in either (a GIF frame lasts whole 10 ms: 50 ms here)
LOOP_FPS = 20

ProgressFn = Callable[[Progress], None]
# A handler returns its Result, or is a generator of what it needs that returns its Result:
# the projections it needs (see project_aligned) and the faces it draws (a Draw, sent back as
# images), which the scheduler runs together with other jobs'.
Handler = Callable[
    ["Engine", Request, ProgressFn], "Result | Generator[Member | Draw, Projection | np.ndarray, Result]"
]
TILE = 128  # a face on a numbered montage
HANDLERS: dict[type[Request], Handler] = {}


def registrar(registry: dict[type[Request], Handler]):
    """A ``@handles(SomeRequest)`` decorator that registers in ``registry``."""

    def handles(request_type: type[Request]):
        def register(fn: Handler) -> Handler:
            registry[request_type] = fn
            return fn

        return register

    return handles


handles = registrar(HANDLERS)


def strip_of(engine: Engine, imgs: np.ndarray, name: str, description: str = "") -> File:
    return File(name, png_bytes(montage(np.stack([engine.display(i) for i in imgs]), cols=len(imgs))), description)


@dataclass
class Projected:
    """One aligned face projected: its kept face, the image it draws, and the figures."""

    target: np.ndarray
    kept_img: np.ndarray
    face: Face
    frames: list[np.ndarray]
    likeness: float
    figures: dict


def project_aligned(
    engine: Engine,
    job_id: str,
    target: np.ndarray,
    steps: int,
    use_encoder: bool,
    progress: ProgressFn,
    label: str = "",
    offset: int = 0,
    total: int | None = None,
) -> Generator[Member, Projection, Projected]:
    """Project one aligned face, reporting progress as ``label`` steps ``offset + k`` of ``total``.

    A generator: it yields the projection it needs (a :class:`~engine.latent.batch.Member`) and is
    sent the finished :class:`~engine.latent.projector.Projection`, so that whoever drives it can
    run it alone or batched with other members' (engine/serving/scheduler.py); use ``yield from``."""
    total = total or steps

    def pair(face: np.ndarray) -> np.ndarray:
        return montage(np.stack([resize(target, PREVIEW), resize(face, PREVIEW)]), cols=2)

    def on_step(k: int, n: int, loss: float, preview: np.ndarray | None) -> None:
        progress(
            Progress(
                job_id,
                offset + k,
                total,
                f"{label}step {k}/{n}",
                png_bytes(pair(preview), fast=True) if preview is not None else None,
            )
        )

    init = None
    if engine.encoder is not None and use_encoder:
        init = encode(engine.encoder, target)  # a face in milliseconds; the projector refines it
        progress(
            Progress(
                job_id, offset, total, f"{label}first guess", png_bytes(pair(engine.render(init[None])[0]), fast=True)
            )
        )
    proj = yield Member(target, steps, init, progress=on_step, every=max(1, steps // 20))
    # The face shown is the kept face, drawn from exactly what the member keeps.
    kept_img = engine.render(proj.ws[None], proj.noise)[0]
    score = likeness(target, kept_img)
    frames = [pair(f) for f in proj.frames[:-1]] + [pair(kept_img)]
    figures = {
        "likeness": round(score, 3),
        "same_person": score < SAME_PERSON_HERE,
        "psnr": round(psnr(kept_img, target), 2),
        "steps": steps,
        "seconds": round(proj.seconds, 1),
        "loss": proj.loss_kind,
        "start": "encoder" if init is not None else "w_avg",
        "schedule": proj.figures.get("schedule"),
    }
    return Projected(target, kept_img, as_face(proj.ws, engine.pack(proj.noise)), frames, score, figures)


def together(steps: list[Generator]) -> Generator[list[Member], list[Projection], list]:
    """Run several projecting generators (e.g. :func:`project_aligned`) side by side: each
    round yields the list of projections they all ask for next — projected as one batch —
    and sends each its own. Returns their results, in order. Use ``yield from``."""
    asks, results = {}, [None] * len(steps)
    for i, gen in enumerate(steps):
        try:
            asks[i] = next(gen)
        except StopIteration as done:
            results[i] = done.value
    while asks:
        order = list(asks)
        answers = yield [asks[i] for i in order]
        asks = {}
        for i, answer in zip(order, answers):
            try:
                asks[i] = steps[i].send(answer)
            except StopIteration as done:
                results[i] = done.value
    return results


def faces_montage(images: list[np.ndarray]) -> bytes:
    tiles = numbered(np.stack([resize(im, TILE) for im in images]))
    return png_bytes(montage(tiles, cols=min(6, len(tiles))))


def skipped_text(skipped: list[str]) -> str:
    if not skipped:
        return ""
    return f" Skipped {len(skipped)}: " + "; ".join(skipped[:3]) + ("; …" if len(skipped) > 3 else "") + "."


def faces_result(engine: Engine, job_id: str, aligned, skipped: list[str], crops: bool) -> Result:
    """The faces of a photo, numbered from the largest: the montage (and, with ``crops``, each aligned face)."""
    n = len(aligned)
    files = [
        File("faces.png", faces_montage([a.image for a in aligned]), "the faces I found, numbered from the largest")
    ]
    if crops:
        files += [engine.png(a.image, f"face_{i}.png") for i, a in enumerate(aligned, 1)]
    text = f"I found {n} face{'s' if n != 1 else ''}, numbered from the largest." + skipped_text(skipped)
    return Result(job_id, tuple(files), figures={"faces": n, "skipped": skipped[:64]}, text=text,
                  choose=0 if crops else n)


WORDS_FROM_STEPS = 50  # a shorter projection is a sketch: its likeness is given as a number only


def likeness_sentence(d: float, steps: int, found: bool) -> str:
    """How alike the kept face is to the photo: words calibrated at the model's resolution, or only
    the number where words would flatter (a short projection, a face dlib's detector does not find)."""
    scale = f"0 is identical, under {SAME_PERSON_HERE:.2f} the same person at this size"
    if steps < WORDS_FROM_STEPS or not found:
        why = "a short projection" if steps < WORDS_FROM_STEPS else "no face found in it to compare"
        return f"likeness {d:.2f} ({scale}; {why}, so no verdict)."
    return f"how alike: **{distance_in_words(d)}** ({d:.2f}; {scale})."


@handles(ProjectRequest)
def project_photo(engine: Engine, req: ProjectRequest, progress: ProgressFn) -> Result:
    photo = decode_image(req.image, max_bytes=req.max_image_bytes)
    if req.face is None and req.ask_if_several:  # the member picks from the montage, then asks again with face=N
        aligned_all, skipped = align_all(photo, engine.G.resolution, engine.framing)
        if len(aligned_all) > 1:
            return faces_result(engine, req.id, aligned_all, skipped, crops=False)
        aligned = aligned_all[0]  # one face: already found and aligned, no second detection
    else:
        aligned = align_face(photo, engine.G.resolution, engine.framing, req.face)
    p = yield from project_aligned(engine, req.id, aligned.image, req.steps, req.encoder, progress)
    side = montage(np.stack([engine.display(p.target), engine.display(p.kept_img)]), cols=2)
    files = (
        File("side_by_side.png", png_bytes(side), "your photo, aligned | your kept face"),
        File("progress.gif", gif_bytes(p.frames, fps=8, max_bytes=req.max_bytes // 2), "the projector converging"),
        engine.png(p.target, "aligned.png"),
        engine.png(p.kept_img, "projected.png"),
    )
    number = req.face or 1
    used = "the largest" if number == 1 else f"number {number}"
    figures = {**p.figures, "faces_found": aligned.faces_found, "face_used": used, "face_number": number}
    text = (
        likeness_sentence(p.likeness, req.steps, aligned_landmarks(p.kept_img)[1])
        + (f" I saw {aligned.faces_found} faces and used {used}." if aligned.faces_found > 1 else "")
        + details(
            f"likeness {p.likeness:.3f} (dlib descriptor distance)",
            f"PSNR {figures['psnr']:.1f} dB",
            f"{req.steps} steps",
            f"{figures['loss']} loss",
        )
    )
    return Result(req.id, files, (p.face,), figures=figures, text=text)


@handles(RenderRequest)
def render_face(engine: Engine, req: RenderRequest, progress: ProgressFn) -> Result:
    ws, maps = engine.face(req.face)
    (img,) = yield engine.plain(ws[None], maps)
    return Result(req.id, (engine.png(img, "face.png"),))


@handles(BlendRequest)
def blend(engine: Engine, req: BlendRequest, progress: ProgressFn) -> Result:
    (a, b), faces, has_noise = engine.faces((req.a, req.b))
    layers = engine.layers(req.layers)
    t = req.ratio * edits.layer_mask(engine.G.num_ws, layers)[:, 0]
    mixed = edits.blend(a, b, req.ratio, layers)
    weights = np.stack([[1 + 0 * t, 0 * t], [1 - t, t], [0 * t, 1 + 0 * t]])  # a, the blend, b
    imgs = yield Draw(np.stack([a, mixed, b]), faces, weights)
    face = engine.kept(mixed, faces, weights[1], has_noise)
    if layers == "all" and 0 < req.ratio < 1:  # between two faces: a person (engine/jobs/between.py)
        got = yield from between(engine, imgs[[0, 2]], (1 - req.ratio, req.ratio), (a, b))
        if got is not None:
            face, imgs[1] = got
    which = "" if layers == "all" else f" on the {layers} styles"
    return Result(
        req.id,
        (engine.png(imgs[1], "blend.png"), strip_of(engine, imgs, "blend_strip.png")),
        (face,),
        text=f"A blend at {req.ratio:g}{which}.",
    )


@handles(AverageRequest)
def average(engine: Engine, req: AverageRequest, progress: ProgressFn) -> Result:
    latents, faces, has_noise = engine.faces(req.faces)
    mean = edits.average(latents)
    n = len(latents)
    weights = np.concatenate([np.eye(n, dtype=np.float32), np.full((1, n), 1 / n, np.float32)])  # each, the mean
    imgs = yield Draw(np.concatenate([np.stack(latents), mean[None]]), faces, weights)
    face, img = engine.kept(mean, faces, weights[-1], has_noise), imgs[-1]
    got = yield from between(engine, imgs[:n], weights[-1], latents)  # a person, not a melt (engine/jobs/between.py)
    if got is not None:
        face, img = got
    return Result(
        req.id,
        (engine.png(img, "average.png"),),
        (face,),
        text=f"The average of {n} faces.",
    )


def _mixed(engine: Engine, coarse: np.ndarray, fine: np.ndarray, split: int):
    """The mix of two faces and its per-style noise weights (coarse face, fine face)."""
    from_fine = (np.arange(engine.G.num_ws) >= split).astype(np.float32)
    return edits.mix(coarse, fine, split), np.stack([1 - from_fine, from_fine])


@handles(MixRequest)
def mix(engine: Engine, req: MixRequest, progress: ProgressFn) -> Result:
    (coarse, fine), faces, has_noise = engine.faces((req.coarse, req.fine))
    split = engine.split(req.split)
    mixed, w = _mixed(engine, coarse, fine, split)
    ones = np.ones(engine.G.num_ws, np.float32)
    weights = np.stack([[ones, 0 * ones], [0 * ones, ones], w])
    imgs = yield Draw(np.stack([coarse, fine, mixed]), faces, weights)
    return Result(
        req.id,
        (engine.png(imgs[2], "mix.png"), strip_of(engine, imgs, "mix_strip.png", "coarse | fine | mixed")),
        (engine.kept(mixed, faces, weights[2], has_noise),),
        text=f"Styles 0–{split - 1} from the first face, {split}–{engine.G.num_ws - 1} from the second.",
    )


@handles(SwapRequest)
def swap(engine: Engine, req: SwapRequest, progress: ProgressFn) -> Result:
    (a, b), faces, has_noise = engine.faces((req.a, req.b))
    split = engine.split(req.split)
    ab, w_ab = _mixed(engine, a, b, split)  # a's shape, b's finish
    ba, w_ba = _mixed(engine, b, a, split)
    w_ba = w_ba[::-1]  # weights are (a, b) for both
    imgs = yield Draw(
        np.stack([a, b, ab, ba]),
        faces,
        np.stack([[np.ones_like(w_ab[0]), 0 * w_ab[0]], [0 * w_ab[0], np.ones_like(w_ab[0])], w_ab, w_ba]),
    )
    return Result(
        req.id,
        (strip_of(engine, imgs, "swap.png", "a | b | a's shape with b's finish | b's shape with a's"),),
        (engine.kept(ab, faces, w_ab, has_noise), engine.kept(ba, faces, w_ba, has_noise)),
        text=f"Fine styles ({split}–{engine.G.num_ws - 1}) swapped: "
        "each keeps their shape and wears the other's finish.",
    )


@handles(EditRequest)
def edit(engine: Engine, req: EditRequest, progress: ProgressFn) -> Result:
    (ws,), faces, has_noise = engine.faces((req.face,))
    d = get_direction(engine.directions, req.direction, engine.model_id)
    scale = float(d.meta.get("scale", engine.w_std / 3))  # one unit of amount, in W
    effect = str(d.meta.get("effect", ""))
    if req.strip:
        imgs = yield engine.plain(edits.strip(ws, d.vector, req.amount * scale, count=5, layers=d.layers), faces[0])
        return Result(
            req.id,
            (strip_of(engine, imgs, f"{d.name}_strip.png", f"{d.name} from {-req.amount:+g} to {req.amount:+g}"),),
            text=effect,
        )
    edited = edits.apply_direction(ws, d.vector, req.amount * scale, d.layers)
    imgs = yield engine.plain(np.stack([ws, edited]), faces[0])
    return Result(
        req.id,
        (engine.png(imgs[1], f"{d.name}.png"), strip_of(engine, imgs, "before_after.png")),
        (engine.kept(edited, faces, np.ones(1), has_noise),),
        text=effect,
    )


@handles(MorphRequest)
def morph(engine: Engine, req: MorphRequest, progress: ProgressFn) -> Result:
    latents, faces, _ = engine.faces(req.faces)
    keys, key_maps = yield from morph_keys(engine, latents, faces)  # members and the people between them
    weights = edits.morph_weights(len(keys), req.frame_count, loop=True)
    seq = edits.weighted(weights, keys)
    imgs = [engine.display(i) for i in (yield from draw_with_progress(engine, req, seq, key_maps, weights, progress))]
    progress(Progress(req.id, len(seq), len(seq), f"frame {len(seq)}/{len(seq)}, encoding the {req.format.upper()}…"))
    encode_fn = mp4_bytes if req.format == "mp4" else gif_bytes
    data = encode_fn(imgs, fps=MORPH_FPS, max_bytes=req.max_bytes)
    return Result(
        req.id,
        (File(f"morph.{req.format}", data, f"a morph through {len(latents)} faces"),),
        text=f"A morph of {len(latents)} faces, {len(seq)} frames.",
    )


@handles(LoopRequest)
def loop(engine: Engine, req: LoopRequest, progress: ProgressFn) -> Result:
    (ws,), faces, _ = engine.faces((req.face,))
    seq = edits.deform_loop(ws, req.frames, engine.layers(req.layers), w_std=engine.w_std, seed=req.seed)
    drawn = yield from draw_with_progress(engine, req, seq, faces, np.ones((req.frames, 1), np.float32), progress)
    imgs = [engine.display(i) for i in drawn]
    progress(Progress(req.id, len(seq), len(seq), f"frame {len(seq)}/{len(seq)}, encoding the GIF…"))
    return Result(
        req.id,
        (File("loop.gif", gif_bytes(imgs, fps=LOOP_FPS, max_bytes=req.max_bytes)),),
        text=f"A loop that sways the {req.layers} styles.",
    )


@handles(RandomRequest)
def random_face(engine: Engine, req: RandomRequest, progress: ProgressFn) -> Result:
    ws = ws_from_seeds(engine.G, [req.seed], req.truncation)[0].cpu().numpy()
    (img,) = yield engine.plain(ws[None])
    return Result(
        req.id,
        (engine.png(img, f"seed{req.seed}.png"),),
        (as_face(ws),),
        figures={"seed": req.seed, "truncation": req.truncation},
        text=f"Seed {req.seed}, truncation {req.truncation:g}: a person who does not exist.",
    )


@handles(GridRequest)
def grid(engine: Engine, req: GridRequest, progress: ProgressFn) -> Result:
    latents, faces, _ = engine.faces((req.a, req.b, req.c))
    n = req.size
    weights = edits.plane_weights(n)
    imgs = yield Draw(edits.weighted(weights, latents), faces, weights)
    tile = max(96, DISPLAY * 3 // n)
    return Result(
        req.id,
        (File("grid.png", png_bytes(montage(np.stack([resize(i, tile) for i in imgs]), cols=n))),),
        text=f"The plane through three faces, {n}×{n}.",
    )


FRAMES_AT_ONCE = 16  # frames asked of the scheduler at once: other members' jobs step between two asks


def drawn_in_chunks(
    seq: np.ndarray, faces, weights: np.ndarray, report: Callable[[int], None] | None = None
) -> Generator[Draw, np.ndarray, np.ndarray]:
    """Many frames, asked of the scheduler ``FRAMES_AT_ONCE`` at a time; ``report(done)`` after
    each. Use ``yield from``."""
    out = []
    for i in range(0, len(seq), FRAMES_AT_ONCE):
        out.append((yield Draw(seq[i : i + FRAMES_AT_ONCE], faces, weights[i : i + FRAMES_AT_ONCE])))
        if report is not None:
            report(min(i + FRAMES_AT_ONCE, len(seq)))
    return np.concatenate(out)


def draw_with_progress(
    engine: Engine, req: Request, seq: np.ndarray, faces, weights: np.ndarray, progress: ProgressFn
) -> Generator[Draw, np.ndarray, np.ndarray]:
    """A morph's or loop's frames in chunks, with a progress report after each. Use ``yield from``."""
    return (
        yield from drawn_in_chunks(
            seq, faces, weights, lambda done: progress(Progress(req.id, done, len(seq), f"frame {done}/{len(seq)}"))
        )
    )
