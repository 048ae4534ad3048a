"""Throughput and latency of the local and Redis transports, side by side, printed as JSON.

Short generation jobs (``random``: one 64-px face, PNG-encoded) on the embedded model:
- throughput: ``--jobs`` submitted at once, jobs/s until the last answer, through the
  local transport (one engine process) and through Redis with 1, 2 and 4 workers;
- latency: ``--serial`` jobs one after another, mean round trip, local vs Redis with one
  worker — the difference is what the Redis path adds per job.
Every engine process uses one torch thread, so N workers use N cores at most; this machine
has 2, so 4 workers show what oversubscription costs rather than more speed.

    python -m bench.scale [--jobs 96] [--serial 40] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bot.transport.local import LocalTransport
from bot.transport.redis_streams import RedisTransport
from engine.protocol import RandomRequest, Result
from engine.protocol.spec import EngineSpec
from tests.redis_helpers import SECRET, RedisServer, start_worker


def note(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


async def throughput(client, jobs: int, seed0: int) -> float:
    t0 = time.perf_counter()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*[client.submit(RandomRequest(seed=seed0 + i)) for i in range(jobs)]), 300)
    assert all(isinstance(o, Result) for o in outcomes), [o for o in outcomes if not isinstance(o, Result)][:1]
    return jobs / (time.perf_counter() - t0)


async def latency_ms(client, n: int) -> float:
    await client.run(RandomRequest(seed=0))  # warm
    t0 = time.perf_counter()
    for i in range(n):
        assert isinstance(await client.run(RandomRequest(seed=i)), Result)
    return 1000 * (time.perf_counter() - t0) / n


async def main(jobs: int, serial: int, worker_counts: list[int]) -> dict:
    local = LocalTransport(EngineSpec(threads=1), queue_size=jobs + 8)
    await local.start()
    try:
        await throughput(local, 8, 0)  # warm
        out = {"jobs": jobs, "cpus": os.cpu_count(),
               "local": {"jobs_per_s": round(await throughput(local, jobs, 1000), 2),
                         "latency_ms": round(await latency_ms(local, serial), 1)}}
    finally:
        await local.close()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        procs = []
        try:
            client = RedisTransport(server.url, SECRET.encode(), queue_size=jobs + 8, poll_seconds=0.2)
            await client.start(wait=False)
            out["redis"] = {}
            for n in sorted(worker_counts):
                while len(procs) < n:
                    procs.append(start_worker(server.url, f"w{len(procs) + 1}"))
                deadline = time.monotonic() + 180
                while len(client.workers) < n and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                note(f"{n} workers up")
                await throughput(client, 8 * n, 0)  # warm every worker
                note("warm")
                row = {"jobs_per_s": round(await throughput(client, jobs, 1000), 2)}
                row["ratio_to_local"] = round(row["jobs_per_s"] / out["local"]["jobs_per_s"], 3)
                if n == 1:
                    row["latency_ms"] = round(await latency_ms(client, serial), 1)
                    out["redis_added_latency_ms"] = round(row["latency_ms"] - out["local"]["latency_ms"], 1)
                row["spread"] = {w["id"]: w["jobs_done"] for w in client.workers.values()}
                out["redis"][n] = row
                note(f"{n} workers: {row}")
            await client.close()
            note("closed")
        finally:
            for p in procs:
                p.kill()
                p.wait()
            server.kill()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=96)
    ap.add_argument("--serial", type=int, default=40)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.jobs, args.serial, args.workers)), indent=2))
