"""Time to acknowledge slash commands while the engine is saturated, printed as JSON.

Starts the real bot against the local Discord simulator, keeps the engine busy with a
long projection, then sends a burst of interactions from different members at once
and measures how long each waits for its deferred response (Discord drops an
interaction not acknowledged within 3 s).

    python -m bench.bot_latency [--burst 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np

from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper


async def measure(burst: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_bot(Path(tmp), member_rate=1000, server_rate=100_000, queue_size=burst + 8,
                               per_member_queued=4, max_project_steps=2000) as (sim, bot):
            att = sim.add_attachment(encode(grace_hopper(), "JPEG"), "g.jpg", "image/jpeg")
            busy = await sim.invoke(1, "project", [{"name": "image", "type": 11, "value": att["id"]},
                                                   {"name": "steps", "type": 4, "value": 2000}],
                                    resolved={"attachments": {att["id"]: att}})
            await sim.wait_for(lambda: any("step" in (m.content or "") for m in busy.messages), 60)
            inters = await asyncio.gather(*[
                sim.invoke(1000 + i, "random", [{"name": "seed", "type": 4, "value": i}]) for i in range(burst)])
            await sim.wait_for(lambda: all(i.acked_at is not None for i in inters), 30)
            acks = np.array([i.ack_seconds for i in inters]) * 1000
            return {"burst": burst, "engine_saturated": True, "ack_ms_p50": round(float(np.percentile(acks, 50)), 1),
                    "ack_ms_p99": round(float(np.percentile(acks, 99)), 1), "ack_ms_max": round(float(acks.max()), 1),
                    "all_acknowledged": bool(len(acks) == burst)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--burst", type=int, default=50)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(measure(args.burst)), indent=2))


if __name__ == "__main__":
    main()
