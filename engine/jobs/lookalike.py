"""Who you look like: dlib descriptor distances between faces, and a search of the
generator's latent space for the stranger who looks most like a member.

The search runs in a low-dimensional subspace of W (not W+): the top principal directions
of the mapping network's output (GANSpace), so every candidate is a single w, a person the
generator could draw on its own rather than an edit of the member. It starts from a batch of
random people (truncation 0.7), then CMA-ES (the ``cma`` package) refines the best of them
in the subspace, each generation rendered as one batch, until the time budget is spent. The
search scores candidates with a cheaper descriptor (landmark box found without upsampling);
the few best are re-scored with the canonical one (:func:`engine.face.align.face_descriptor`),
which is the distance reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from engine.face.align import DESCRIPTOR_SIZE, DLIB_LOCK, _dlib, _face_encoder, face_descriptor
from engine.jobs.asks import OwnClock

SUBSPACE = 16  # principal directions of W searched
PCA_SAMPLES = 4096
RANDOM_FRACTION = 0.25  # of the time budget spent on random people before CMA-ES
POPULATION = 16
SCORED_AT_ONCE = 4  # faces scored between two pauses (the scheduler runs other jobs meanwhile)
RESCORE = 6  # best candidates re-scored with the canonical descriptor
TRUNCATION = 0.7


def descriptors(images) -> np.ndarray:
    """Canonical dlib descriptors ``[N, 128]`` of aligned faces."""
    return np.stack([face_descriptor(im) for im in images])


NOT_FOUND = 2.0  # the search's score of a drawn face dlib's detector does not find: worse than any real one


def quick_descriptor(aligned: np.ndarray) -> np.ndarray | None:
    """The descriptor with the face box found at 256 px without upsampling: the search's score,
    ~2× cheaper than the canonical one. None when the detector finds no face (a dark, side-lit
    head): a descriptor from a guessed box would be a number about no face, and the search would
    chase it."""
    dlib, detector, predictor = _dlib()
    big = np.asarray(Image.fromarray(aligned).resize((DESCRIPTOR_SIZE, DESCRIPTOR_SIZE), Image.Resampling.LANCZOS))
    with DLIB_LOCK:  # dlib is not safe across threads (engine/face/align.py)
        dets = detector(big, 0)
        if not dets:
            return None
        rect = max(dets, key=lambda r: r.area())
        return np.array(_face_encoder().compute_face_descriptor(big, predictor(big, rect)))


def search_score(aligned: np.ndarray, target: np.ndarray) -> float:
    """How far a drawn face is from ``target`` for the search: ``NOT_FOUND`` when no face is found."""
    d = quick_descriptor(aligned)
    return NOT_FOUND if d is None else float(np.linalg.norm(d - target))


# dlib's usual bands (0.6 "same person") come from sharp photos; at the model's 64 px different
# people sit closer. Calibrated on real photos (bench/likeness_bands.py, docs/benchmarks.md): a
# kept face is 0.27-0.43 from its own photo; different people's kept faces 0.58-0.90 apart.
BANDS = ((0.45, "the same person"), (0.60, "a strong resemblance"), (0.70, "a family likeness"))
SAME_PERSON_HERE = BANDS[0][0]


def distance_in_words(d: float, same_possible: bool = True) -> str:
    """How alike two faces are, in the words a member reads (dlib's descriptor distance ``d`` at
    the model's resolution). ``same_possible`` is False where "the same person" cannot be true (a
    stranger the generator drew): the closest words are then "a strong resemblance"."""
    for edge, words in BANDS:
        if d < edge and (same_possible or words != "the same person"):
            return words
    return "not much alike"


@dataclass
class Subspace:
    """The top principal directions of W: ``w = mean + coeffs · (stds ⊙ basis)``."""

    mean: np.ndarray  # [w_dim]
    basis: np.ndarray  # [k, w_dim], orthonormal rows
    stds: np.ndarray  # [k]

    @classmethod
    def of(cls, G, k: int = SUBSPACE, samples: int = PCA_SAMPLES, seed: int = 0) -> Subspace:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.randn(samples, G.z_dim, generator=gen).to(G.w_avg.device)
            w = G.mapping(z)[:, 0].cpu().numpy().astype(np.float64)
        mean = w.mean(0)
        _, s, vt = np.linalg.svd(w - mean, full_matrices=False)
        return cls(
            mean.astype(np.float32), vt[:k].astype(np.float32), (s[:k] / np.sqrt(samples - 1)).astype(np.float32)
        )

    def coords(self, w: np.ndarray) -> np.ndarray:
        return ((w - self.mean) @ self.basis.T) / self.stds

    def point(self, coords: np.ndarray, base: np.ndarray) -> np.ndarray:
        """``base`` moved by ``coords`` (in standard deviations along each direction)."""
        return base + (coords * self.stds) @ self.basis


@dataclass
class Search:
    ws: np.ndarray  # [num_ws, w_dim] the stranger
    distance: float  # canonical descriptor distance to the target
    random_best: float  # the best random person's canonical distance, for comparison
    random_best_score: float  # … and its search score (what the curve shows)
    evaluations: int
    seconds: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best quick distance so far)


def search_stranger(
    engine, target: np.ndarray, seconds: float, seed: int = 0, report: Callable[[float, float, int], None] | None = None
) -> Search:
    """:func:`stranger_search` run alone."""
    return engine.drive(stranger_search(engine, target, seconds, seed, report))


def stranger_search(
    engine, target: np.ndarray, seconds: float, seed: int = 0, report: Callable[[float, float, int], None] | None = None
):
    """The generated person nearest to ``target`` (a 128-d descriptor) within ``seconds`` of its
    own work (an :class:`~engine.jobs.asks.OwnClock`: the time other members' jobs run between its
    chunks does not count). A generator of the scheduler's asks: each population is one
    :class:`~engine.jobs.asks.Draw`, scored before the next (about half a second a chunk), so no
    member waits behind the search. ``report(elapsed, best, evaluations)`` after each
    population. Use ``yield from``; returns a :class:`Search`."""
    import cma

    clock = OwnClock()
    G = engine.G
    space = engine.subspace()
    rng = np.random.default_rng(seed)
    seen: list[tuple[float, np.ndarray]] = []  # (quick distance, w)
    curve: list[tuple[float, float]] = []

    def drawn(ws_single: np.ndarray):
        clock.away()
        ask = engine.plain(np.repeat(ws_single[:, None], G.num_ws, axis=1))
        ask.alone = True  # what it finds must not depend on who else the engine serves meanwhile
        imgs = yield ask
        clock.back(ask)
        return imgs

    def score(ws_single: np.ndarray):
        imgs = yield from drawn(ws_single)
        d = []
        for k in range(0, len(imgs), SCORED_AT_ONCE):  # ~0.1 s a face: other members' jobs go between
            if k:
                clock.away()
                pause = engine.pause()
                yield pause
                clock.back(pause)
            d.extend(search_score(im, target) for im in imgs[k : k + SCORED_AT_ONCE])
        d = np.array(d)
        for di, w in zip(d, ws_single):
            seen.append((float(di), w))
        best = min(s for s, _ in seen)
        curve.append((round(clock(), 2), round(best, 4)))
        if report:
            report(clock(), best, len(seen))
        return d

    # 1. random people, as the generator draws them
    while clock() < RANDOM_FRACTION * seconds or not seen:
        z = torch.from_numpy(rng.standard_normal((POPULATION, G.z_dim)).astype(np.float32)).to(G.w_avg.device)
        with torch.no_grad():
            w = G.mapping(z, TRUNCATION)[:, 0].cpu().numpy()
        yield from score(w.astype(np.float32))
    random_ranked = sorted(seen, key=lambda s: s[0])
    base = random_ranked[0][1]

    # 2. CMA-ES in the subspace around the best random person
    es = cma.CMAEvolutionStrategy(
        np.zeros(len(space.stds)), 0.6, {"popsize": POPULATION, "bounds": [-3, 3], "seed": seed + 1, "verbose": -9}
    )
    while clock() < seconds * 0.92 and not es.stop():  # leave time to re-score
        xs = es.ask()
        ws = np.stack([space.point(np.asarray(x, np.float32), base) for x in xs]).astype(np.float32)
        es.tell(xs, (yield from score(ws)).tolist())

    # 3. the best few, re-scored with the canonical descriptor (the best random person last)
    top = [w for _, w in sorted(seen, key=lambda s: s[0])[:RESCORE]] + [random_ranked[0][1]]
    imgs = yield from drawn(np.stack(top))
    distances = [float(np.linalg.norm(face_descriptor(im) - target)) for im in imgs]
    best = int(np.argmin(distances[:-1]))
    return Search(
        np.repeat(top[best][None], G.num_ws, axis=0),
        distances[best],
        distances[-1],
        random_ranked[0][0],
        len(seen),
        round(clock(), 1),
        curve,
    )


def details(*parts: str) -> str:
    """The technical figures, on their own small line under the plain words."""
    return "\n-# details: " + ", ".join(p for p in parts if p) + "."
