"""How soon a stopped job lets go of the engine.

A real engine process behind the bot's local transport works on ``--batch`` projections of
real photos at once (its ``engine.batch``); one more member waits in line. One of
the running members presses Stop (``Transport.cancel``) a tenth of the way through.
Measured per round: the member's answer (the future resolving), the engine's own answer for
the stopped job (it gave up), and the waiting member's first progress (it took the place);
with ``--batch 1`` the last is how long a stopped projection holds a serial engine.

    python -m bench.stop [--rounds 5] [--batch 8] [--steps 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

import numpy as np

from bench.throughput import jpeg, note
from bot.transport.local import LocalTransport
from engine.protocol import ProjectRequest
from engine.protocol.spec import EngineSpec
from tests.photos import astronaut, grace_hopper


async def wait_until(predicate, timeout: float = 300.0) -> float:
    """Seconds until ``predicate()`` holds (polled every 2 ms)."""
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("timed out")
        await asyncio.sleep(0.002)
    return time.perf_counter() - t0


async def one_round(engine: LocalTransport, images: list[bytes], busy: int, steps: int, rng: random.Random) -> dict:
    heard: dict[str, int] = {}

    def progress(event):
        heard[event.job_id] = max(heard.get(event.job_id, -1), event.step)

    running = [ProjectRequest(image=images[i % len(images)], steps=steps) for i in range(busy)]
    futures = [engine.submit(job, progress) for job in running]
    waiting = ProjectRequest(image=images[0], steps=steps)
    later = engine.submit(waiting, progress)
    victim = running[0]
    await wait_until(lambda: heard.get(victim.id, -1) >= max(1, steps // 10))  # every member is in the batch
    await asyncio.sleep(rng.uniform(0.0, 0.5))  # a press lands anywhere in a step, not just after a report
    confirmed = engine.stops_confirmed
    t0 = time.perf_counter()
    engine.cancel(victim.id, "Stopped.")
    answered = time.perf_counter() - t0 if futures[0].done() else None
    await wait_until(lambda: engine.stops_confirmed > confirmed)
    gave_up = time.perf_counter() - t0
    await wait_until(lambda: waiting.id in heard)
    next_started = time.perf_counter() - t0
    await asyncio.gather(*futures[1:], later)
    return {
        "member_answered_s": None if answered is None else round(answered, 5),
        "engine_gave_up_s": round(gave_up, 4),
        "waiting_job_started_s": round(next_started, 4),
    }


async def main_async(args) -> dict:
    images = [jpeg(astronaut()), jpeg(grace_hopper())]
    engine = LocalTransport(EngineSpec(threads=args.threads, batch=args.batch))
    await engine.start(timeout=300)
    rounds, rng = [], random.Random(0)
    try:
        for k in range(args.rounds):
            rounds.append(await one_round(engine, images, args.batch, args.steps, rng))
            note(f"round {k + 1}: {rounds[-1]}")
    finally:
        await engine.close()
    gave_up = [r["engine_gave_up_s"] for r in rounds]
    started = [r["waiting_job_started_s"] for r in rounds]
    return {
        "batch": args.batch,
        "steps": args.steps,
        "rounds": rounds,
        "engine_gave_up_s": {"median": float(np.median(gave_up)), "max": max(gave_up)},
        "waiting_job_started_s": {"median": float(np.median(started)), "max": max(started)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=ProjectRequest.DEFAULT_STEPS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = asyncio.run(main_async(args))
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
