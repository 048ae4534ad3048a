"""No job holds the others up: quick jobs' answer times while a stranger search and a long
morph run in the same engine.

One real engine (the embedded model) and its scheduler, fed through a queue as the local
engine process is. First the baseline: ``/random`` and ``/age`` jobs sent one a second to
an idle engine. Then the same jobs, one a second, while a ``--seconds`` stranger search and
a ``--frames``-frame morph run beside them. Answer time = from a job's arrival on the queue
to its result. Last, the same search alone, to compare what it found (its budget counts
only its own work, engine/model/images.py's OwnClock).

    python -m bench.fairness [--seconds 45] [--frames 48] [--out docs/fairness.json]
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from pathlib import Path

import numpy as np

from bench.report import report
from engine.jobs.engine import Engine
from engine.model.sampling import ws_from_seeds
from engine.protocol import EditRequest, JobFailed, MorphRequest, RandomRequest, Result, StrangerRequest, as_face, wire
from engine.serving.scheduler import Scheduler


def quick_job(engine: Engine, k: int, face):
    return RandomRequest(seed=100 + k) if k % 2 == 0 else EditRequest(face=face, direction="age", amount=1.5)


def run(engine: Engine, long_jobs: list, quick: int, every: float, batch: int) -> dict:
    """Send ``long_jobs`` at once, then ``quick`` quick jobs one every ``every`` seconds;
    serve them all in one scheduler; the answer time of each job by kind."""
    jobs: queue.Queue = queue.Queue()
    sent: dict[str, tuple[str, float]] = {}
    answered: dict[str, float] = {}
    results: dict[str, object] = {}
    face = as_face(ws_from_seeds(engine.G, [7], 0.7)[0].cpu().numpy())

    def emit(event) -> None:
        if isinstance(event, (Result, JobFailed)):
            answered[event.job_id] = time.perf_counter()
            results[event.job_id] = event

    def send(request) -> None:
        sent[request.id] = (request.kind, time.perf_counter())
        jobs.put((request.id, wire.dumps(request)))

    def feeder() -> None:
        for request in long_jobs:
            send(request)
        for k in range(quick):
            time.sleep(every)
            send(quick_job(engine, k, face))
        jobs.put(None)

    threading.Thread(target=feeder, daemon=True).start()
    Scheduler(engine, emit, batch).serve(jobs)
    waits: dict[str, list[float]] = {}
    for job_id, (kind, t) in sent.items():
        waits.setdefault(kind, []).append(answered[job_id] - t)
    failed = [e.message for e in results.values() if isinstance(e, JobFailed)]
    return {"waits": waits, "results": results, "failed": failed}


def summary(waits: list[float]) -> dict:
    a = np.sort(np.asarray(waits))
    return {"n": len(a), "p50_s": round(float(np.percentile(a, 50)), 3), "p95_s": round(float(np.percentile(a, 95)), 3),
            "max_s": round(float(a[-1]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=45.0, help="the stranger search's budget")
    ap.add_argument("--frames", type=int, default=48, help="the morph's frames")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between two quick jobs")
    ap.add_argument("--batch", type=int, default=8, help="jobs the engine works on at once (engine.batch)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    engine = Engine()
    quick = int(args.seconds / args.every)
    idle = run(engine, [], min(quick, 20), args.every, args.batch)
    target = as_face(ws_from_seeds(engine.G, [3], 0.7)[0].cpu().numpy())
    faces = tuple(as_face(w.cpu().numpy()) for w in ws_from_seeds(engine.G, [11, 12, 13, 14], 0.7))
    search = StrangerRequest(face=target, seconds=args.seconds, seed=0)
    busy = run(engine, [search, MorphRequest(faces=faces, frames=args.frames)], quick, args.every, args.batch)
    alone = run(engine, [StrangerRequest(face=target, seconds=args.seconds, seed=0)], 0, args.every, args.batch)
    found_busy = busy["results"][search.id].figures
    found_alone = next(iter(alone["results"].values())).figures
    quick_busy = busy["waits"].get("random", []) + busy["waits"].get("edit", [])
    quick_idle = idle["waits"].get("random", []) + idle["waits"].get("edit", [])
    report({
        "seconds": args.seconds, "frames": args.frames, "batch": args.batch,
        "quick_jobs_idle": summary(quick_idle),
        "quick_jobs_beside_search_and_morph": summary(quick_busy),
        "p95_ratio_busy_to_idle": round(summary(quick_busy)["p95_s"] / max(summary(quick_idle)["p95_s"], 1e-6), 2),
        "morph_s": round(busy["waits"]["morph"][0], 1), "search_s": round(busy["waits"]["stranger"][0], 1),
        "search_beside_others": {k: found_busy[k] for k in ("distance", "random_best", "evaluations", "seconds")},
        "search_alone": {k: found_alone[k] for k in ("distance", "random_best", "evaluations", "seconds")},
        "failed": busy["failed"] + idle["failed"] + alone["failed"],
    }, args.out)


if __name__ == "__main__":
    main()
