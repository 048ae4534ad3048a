"""Members served per minute when N members type /project at once, batching on vs. off.

Each job is a real ``ProjectRequest`` (a JPEG of a real photo, the default steps, the
encoder's start) sent through the bot's local transport to a real engine process. Two
engines run the same jobs in the same run, one at a time: ``off`` works on one job at a
time (``engine.batch = 1``), ``on`` on up to ``--batch`` jobs whose projections advance as
one batch. For each N: members served per minute (N over the time until the last answer),
p50/p95 time from submitting to the result, and the ratio on/off (which mode goes first alternates). Every member's kept
face is compared between the two engines (largest difference of the W+ and noise values).

``--quick N …`` does the same for bursts of N quick jobs (renders, edits, blends and mixes
of kept faces, in turn), which the batching engine draws together: jobs served per second,
and whether every picture is byte-identical between the two engines. ``--n`` with no value
skips the projections.

    python -m bench.throughput [--n 1 4 8 16] [--steps 300] [--batch 16] [--threads 2] [--quick 32 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time

import numpy as np
from PIL import Image

from bot.transport.local import LocalTransport
from engine.protocol import BlendRequest, EditRequest, MixRequest, ProjectRequest, RandomRequest, RenderRequest, Result
from engine.protocol.spec import EngineSpec
from tests.photos import astronaut, grace_hopper


def note(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def photos() -> list[tuple[bytes, int | None]]:
    """(JPEG, which face) for every real face at hand: two photos here, and the insightface
    ones (Tom Hanks, each face of its group photo) when they can be fetched or are cached."""
    out = [(jpeg(astronaut()), None), (jpeg(grace_hopper()), None)]
    try:
        from bench.photos import insightface_images

        extra = insightface_images()
        out.append((jpeg(np.pad(extra["tom_hanks"], ((48, 48), (48, 48), (0, 0)), mode="edge")), None))
        group = jpeg(extra["t1_group"])
        out += [(group, k) for k in range(1, 7)]
    except Exception as exc:  # noqa: BLE001 (offline: the two bundled photos do)
        note(f"insightface photos unavailable ({exc}); using the two bundled photos")
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def burst(engine: LocalTransport, jobs: list) -> tuple[float, list[float], list[Result]]:
    t0 = time.perf_counter()

    async def one(job):
        result = await engine.submit(job)
        return time.perf_counter() - t0, result

    done = await asyncio.wait_for(asyncio.gather(*[one(j) for j in jobs]), 3600)
    bad = [r for _, r in done if not isinstance(r, Result)]
    if bad:
        raise RuntimeError(f"a job failed: {bad[0]}")
    times = [t for t, _ in done]
    return max(times), times, [r for _, r in done]


def largest_difference(a: list[Result], b: list[Result]) -> float:
    diff = 0.0
    for x, y in zip(a, b):
        fx, fy = x.faces[0], y.faces[0]
        diff = max(diff, float(np.abs(fx.ws - fy.ws).max()),
                   float(np.abs(fx.noise.astype(np.float32) - fy.noise.astype(np.float32)).max()))
    return diff


async def main_async(args) -> dict:
    sources = photos()
    engines = {"off": LocalTransport(EngineSpec(threads=args.threads, batch=1), queue_size=64),
               "on": LocalTransport(EngineSpec(threads=args.threads, batch=args.batch), queue_size=64)}
    for e in engines.values():
        await e.start(timeout=300)
    out = {"steps": args.steps, "batch": args.batch, "threads": args.threads, "photos": len(sources), "runs": []}
    try:
        warm = [ProjectRequest(image=sources[0][0], steps=2)]
        for e in engines.values():
            await burst(e, warm)
        for k, n in enumerate(args.n):
            row = {"n": n}
            results = {}
            for mode in (("off", "on") if k % 2 == 0 else ("on", "off")):  # neither always goes first
                jobs = [ProjectRequest(image=sources[i % len(sources)][0], face=sources[i % len(sources)][1],
                                       steps=args.steps) for i in range(n)]
                wall, times, results[mode] = await burst(engines[mode], jobs)
                row[mode] = {"seconds": round(wall, 2), "members_per_minute": round(n / wall * 60, 2),
                             "p50_s": round(percentile(times, 50), 2), "p95_s": round(percentile(times, 95), 2)}
                note(f"n={n} {mode}: {row[mode]}")
            row["ratio_on_off"] = round(row["on"]["members_per_minute"] / row["off"]["members_per_minute"], 2)
            row["kept_face_max_diff"] = largest_difference(results["off"], results["on"])
            out["runs"].append(row)
            note(json.dumps(row))
        if args.quick:
            out["quick"] = await quick_bursts(engines, args.quick, args.rounds)
    finally:
        for e in engines.values():
            await e.close()
    return out


def quick_jobs(faces: list, directions: tuple[str, ...], n: int) -> list:
    """N quick jobs of the kinds members send most, in turn."""
    kinds = [lambda i: RenderRequest(face=faces[i % len(faces)]),
             lambda i: BlendRequest(a=faces[i % len(faces)], b=faces[(i + 1) % len(faces)], ratio=0.4),
             lambda i: MixRequest(coarse=faces[(i + 2) % len(faces)], fine=faces[i % len(faces)])]
    if directions:
        kinds.append(
            lambda i: EditRequest(face=faces[i % len(faces)], direction=directions[i % len(directions)], amount=2.0)
        )
    return [kinds[i % len(kinds)](i) for i in range(n)]


async def quick_bursts(engines: dict[str, LocalTransport], sizes: list[int], rounds: int) -> list[dict]:
    made = await burst(engines["off"], [RandomRequest(seed=s) for s in range(8)])
    faces = [r.faces[0] for r in made[2]]
    directions = engines["off"].info.directions
    rows = []
    for n in sizes:
        seconds = {"off": [], "on": []}
        identical = True
        for k in range(rounds):
            results = {}
            for mode in ("off", "on") if k % 2 == 0 else ("on", "off"):
                wall, _, results[mode] = await burst(engines[mode], quick_jobs(faces, directions, n))
                seconds[mode].append(wall)
            identical &= all(
                [f.data for f in x.files] == [f.data for f in y.files] for x, y in zip(results["off"], results["on"])
            )
        row = {"n": n, "rounds": rounds, "identical_pictures": identical}
        for mode in ("off", "on"):
            row[mode] = {
                "seconds_median": round(float(np.median(seconds[mode])), 3),
                "jobs_per_second": round(n / float(np.median(seconds[mode])), 1),
            }
        row["ratio_on_off"] = round(row["on"]["jobs_per_second"] / row["off"]["jobs_per_second"], 2)
        note(json.dumps(row))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="*", default=[1, 4, 8, 16])
    ap.add_argument("--steps", type=int, default=ProjectRequest.DEFAULT_STEPS)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", type=int, nargs="*", default=[], help="bursts of this many quick jobs")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each quick burst")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=1))


if __name__ == "__main__":
    main()
