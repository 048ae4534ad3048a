"""How fast the bot notices a killed engine and has a new one serving, printed as JSON.

Starts the engine process with the embedded model, begins a long projection, SIGKILLs
the engine mid-projection, and times: kill -> the member's job fails with "restarted",
kill -> the new engine is ready, and the next job's round trip.

    python -m bench.engine_restart [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

from bot.transport.local import LocalTransport
from engine.protocol import JobFailed, Progress, ProjectRequest, RandomRequest, Result
from engine.protocol.spec import EngineSpec
from tests.photos import encode, grace_hopper


async def once(client: LocalTransport) -> dict:
    seen = []
    fut = client.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=2000),
                        lambda p: isinstance(p, Progress) and seen.append(p.step))
    while not any(s > 0 for s in seen):
        await asyncio.sleep(0.02)
    os.kill(client.process.pid, signal.SIGKILL)
    t0 = time.monotonic()
    failed = await asyncio.wait_for(fut, 30)
    told = time.monotonic() - t0
    assert isinstance(failed, JobFailed) and failed.code == "engine_restarted", failed
    await client.wait_ready(60)
    ready = time.monotonic() - t0
    t1 = time.monotonic()
    result = await asyncio.wait_for(client.run(RandomRequest(seed=1)), 60)
    assert isinstance(result, Result)
    return {"member_told_s": round(told, 2), "engine_ready_s": round(ready, 2),
            "next_job_s": round(time.monotonic() - t1, 2)}


async def main(repeats: int) -> dict:
    client = LocalTransport(EngineSpec(threads=1), queue_size=4)
    await client.start(timeout=120)
    try:
        runs = [await once(client) for _ in range(repeats)]
    finally:
        await client.close()
    return {"repeats": repeats, "runs": runs, "restarts": client.restarts,
            "worst_member_told_s": max(r["member_told_s"] for r in runs),
            "worst_engine_ready_s": max(r["engine_ready_s"] for r in runs)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    print(json.dumps(asyncio.run(main(ap.parse_args().repeats)), indent=2))
