"""Handlers for photos of several people and for look-alikes: the faces of a photo, a whole
team projected and morphed, the members nearest to a face, and a stranger who looks like it."""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.face.align import align_all, align_face, decode_image
from engine.jobs.asks import Draw
from engine.jobs.between import morph_keys
from engine.jobs.engine import Engine
from engine.jobs.handlers import (
    MORPH_FPS,
    TILE,
    Handler,
    ProgressFn,
    drawn_in_chunks,
    faces_montage,
    faces_result,
    project_aligned,
    registrar,
    skipped_text,
    together,
)
from engine.jobs.lookalike import SAME_PERSON_HERE, descriptors, details, distance_in_words, stranger_search
from engine.latent import edits
from engine.model.images import gif_bytes, montage, mp4_bytes, png_bytes, resize
from engine.protocol import (
    FacesRequest,
    File,
    LookalikeRequest,
    Progress,
    Request,
    Result,
    StrangerRequest,
    TeamRequest,
    as_face,
)
from engine.protocol.requests import MAX_FACES

HANDLERS: dict[type[Request], Handler] = {}
handles = registrar(HANDLERS)


@handles(FacesRequest)
def faces_of_photo(engine: Engine, req: FacesRequest, progress: ProgressFn) -> Result:
    photo = decode_image(req.image, max_bytes=req.max_image_bytes)
    aligned, skipped = align_all(photo, engine.G.resolution, engine.framing)
    return faces_result(engine, req.id, aligned, skipped, crops=True)


@handles(TeamRequest)
def team(engine: Engine, req: TeamRequest, progress: ProgressFn) -> Result:
    photo = decode_image(req.image, max_bytes=req.max_image_bytes)
    aligned, skipped = align_all(photo, engine.G.resolution, engine.framing)
    if len(aligned) > MAX_FACES:
        skipped = [f"{len(aligned) - MAX_FACES} faces beyond the {MAX_FACES} largest"] + skipped
        aligned = aligned[:MAX_FACES]
    n, total = len(aligned), req.steps
    # Every face at once, as one batch: the first face's progress stands for all of them.
    quiet = lambda event: None  # noqa: E731
    projected = yield from together([
        project_aligned(engine, req.id, a.image, req.steps, True, progress if i == 1 else quiet,
                        f"{n} faces together, face 1 shown: " if n > 1 else "", 0, req.steps)
        for i, a in enumerate(aligned, 1)])
    faces = tuple(p.face for p in projected)
    pairs = [montage(np.stack([resize(p.target, TILE), resize(p.kept_img, TILE)]), cols=2) for p in projected]
    files = [File("team_faces.png", faces_montage(pairs), "each face: the photo, aligned | its kept face")]
    if n >= 2:
        latents, maps, _ = engine.faces(faces)
        frames = req.frames or max(8, min(240, 12 * n))
        latents, maps = yield from morph_keys(engine, latents, maps)  # and the people between them
        weights = edits.morph_weights(len(latents), frames, loop=True)
        seq = edits.weighted(weights, latents)
        progress(
            Progress(req.id, total, total, f"frame {frames}/{frames}, drawing and encoding the {req.format.upper()}…")
        )
        imgs = [engine.display(im) for im in (yield from drawn_in_chunks(seq, maps, weights))]
        data = (mp4_bytes if req.format == "mp4" else gif_bytes)(imgs, fps=MORPH_FPS, max_bytes=req.max_bytes)
        files.insert(0, File(f"team.{req.format}", data, f"a morph through all {n} faces"))
    scores = [round(p.likeness, 3) for p in projected]
    words = Counter(distance_in_words(x) for x in scores)
    alike = ", ".join(f"{w} for {k}" if n > 1 else w for w, k in words.most_common())
    span = f"{min(scores):.2f}" if min(scores) == max(scores) else f"{min(scores):.2f}–{max(scores):.2f}"
    text = (
        f"{n} face{'s' if n != 1 else ''} projected; how alike to the photo: {alike}."
        + skipped_text(skipped)
        + details(f"likeness {span} (dlib descriptor distance; under {SAME_PERSON_HERE:.2f} the same person here)")
    )
    return Result(
        req.id, tuple(files), faces, figures={"faces": n, "skipped": skipped[:64], "likeness": scores[:64]}, text=text
    )


NEAREST_FEW = 8  # distances returned: the nearest few, whatever the number of members compared
DESCRIBED_AT_ONCE = 8  # faces described between two pauses


@handles(LookalikeRequest)
def lookalike(engine: Engine, req: LookalikeRequest, progress: ProgressFn) -> Result:
    latents, maps, _ = engine.faces((req.face, *req.others))
    imgs = yield Draw(
        np.stack(latents), maps, np.eye(len(latents), dtype=np.float32)
    )  # each with its own maps, one batch
    d = []
    for k in range(0, len(imgs), DESCRIBED_AT_ONCE):  # ~0.1 s a face: other members' jobs go between chunks
        if k:
            yield engine.pause()
        d.extend(descriptors(imgs[k : k + DESCRIBED_AT_ONCE]))
    distances = [round(float(np.linalg.norm(x - d[0])), 3) for x in d[1:]]
    best = int(np.argmin(distances))
    side = montage(np.stack([engine.display(imgs[0]), engine.display(imgs[1 + best])]), cols=2)
    return Result(
        req.id,
        (File("lookalike.png", png_bytes(side), "you | your nearest look-alike"),),
        figures={"nearest": best + 1, "nearest_distances": sorted(distances)[:NEAREST_FEW]},
        text=f"{distance_in_words(distances[best])} ({distances[best]:.2f} apart).",
    )


@handles(StrangerRequest)
def stranger(engine: Engine, req: StrangerRequest, progress: ProgressFn) -> Result:
    if req.face is not None:
        ws, maps = engine.face(req.face)
        (target,) = yield engine.plain(ws[None], maps)
    else:
        target = align_face(
            decode_image(req.image, max_bytes=req.max_image_bytes), engine.G.resolution, engine.framing
        ).image
    total = int(req.seconds)

    def report(elapsed: float, best: float, evaluations: int) -> None:
        progress(
            Progress(
                req.id,
                min(int(elapsed), total),
                total,
                f"step {min(int(elapsed), total)}/{total} s searching: "
                f"{evaluations} faces tried, the closest {best:.2f} away",
            )
        )

    found = yield from stranger_search(engine, descriptors([target])[0], req.seconds, req.seed, report)
    (face_img,) = yield engine.plain(found.ws[None])
    side = montage(np.stack([engine.display(target), engine.display(face_img)]), cols=2)
    files = (
        File("stranger.png", png_bytes(side), "you | a stranger the generator drew"),
        File(
            "search_curve.png", png_bytes(curve_plot(found.curve, found.random_best_score)), "best distance over time"
        ),
    )
    figures = {
        "distance": round(found.distance, 3),
        "random_best": round(found.random_best, 3),
        "evaluations": found.evaluations,
        "seconds": found.seconds,
    }
    text = (
        f"A stranger who does not exist, the closest of {found.evaluations} faces I drew in {found.seconds:.0f} s: "
        f"{distance_in_words(found.distance, same_possible=False)} ({found.distance:.2f} apart)."
        + details(f"the best of random people was {found.random_best:.2f} apart")
    )
    return Result(req.id, files, (as_face(found.ws),), figures=figures, text=text)


def curve_plot(curve: list[tuple[float, float]], random_best: float, size: tuple[int, int] = (320, 200)) -> np.ndarray:
    """The search curve (best score against seconds, blue) and the best random person's score
    (red) as a small line chart."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if curve:
        t_max = max(t for t, _ in curve) or 1.0
        values = [v for _, v in curve] + [random_best]
        lo, hi = min(values) - 0.02, max(values) + 0.02

        def xy(t: float, v: float) -> tuple[float, float]:
            return 30 + (w - 40) * t / t_max, 10 + (h - 30) * (hi - v) / (hi - lo)

        draw.line([xy(0, random_best), xy(t_max, random_best)], fill=(200, 80, 80), width=1)
        draw.line([xy(t, v) for t, v in curve], fill=(40, 90, 200), width=2)
        draw.text((32, h - 18), f"0 … {t_max:.0f} s   best {min(v for _, v in curve):.2f}", fill=(0, 0, 0))
        draw.text((34, 12), "search", fill=(40, 90, 200))
        draw.text((90, 12), "best random person", fill=(200, 80, 80))
    draw.rectangle([30, 10, w - 10, h - 20], outline=(0, 0, 0))
    return np.asarray(img)
