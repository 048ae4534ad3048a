"""A burst of interactions from many members through the real bot, printed as JSON.

Starts the real bot (discord.py client, engine process, SQLite) against the local
Discord simulator with the default limits of config.example.toml, then sends
``--burst`` interactions from ``--members`` members at once — each member in turn
asks for a /random face, /me, /adopt and /random again — and waits until every one
has its final answer. Reported: acknowledgement times (Discord drops an interaction
not acknowledged within 3 s), how the answers split (results, "queue full", per-member
caps, rate limits, anything else), and the resident memory of the bot and the engine
process before the bursts and after each of two identical bursts (flat = no leak).

    python bench/bot_load.py [--members 100] [--burst 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.bot_harness import running_bot  # noqa: E402
from tests.test_bot_e2e import finished, option  # noqa: E402

MEMBER_BASE = 900_000_000_000_000_000
COMMANDS = ("random", "me", "adopt", "random", "random")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def classify(text: str) -> str:
    if "queue is full" in text:
        return "queue_full"
    if "already have" in text:
        return "member_cap"
    if "try again in" in text:
        return "rate_limited"
    if text.startswith("Seed") or "/adopt" in text or "Adopted" in text or "face" in text.lower():
        return "answered"
    return "other"


async def one_burst(sim, members: int, burst: int, round_no: int) -> dict:
    def invoke(i: int):
        member = MEMBER_BASE + i % members
        name = COMMANDS[(i // members) % len(COMMANDS)]
        opts = [option("seed", round_no * 100_000 + i, 4)] if name == "random" else []
        return sim.invoke(member, name, opts)

    inters = await asyncio.gather(*[invoke(i) for i in range(burst)])
    await asyncio.gather(*[finished(sim, inter, 600) for inter in inters])
    acks = np.array([i.ack_seconds if i.ack_seconds is not None else np.inf for i in inters]) * 1000
    kinds = Counter(classify(i.last_content()) for i in inters)
    return {"interactions": burst, "acknowledged": int(np.isfinite(acks).sum()),
            "ack_ms_p50": round(float(np.percentile(acks, 50)), 1), "ack_ms_p99": round(float(np.percentile(acks, 99)), 1),
            "ack_ms_max": round(float(acks.max()), 1), "answers": dict(kinds),
            "other_examples": [i.last_content()[:120] for i in inters if classify(i.last_content()) == "other"][:3]}


async def measure(members: int, burst: int, **limits) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_bot(Path(tmp), **limits) as (sim, bot):
            engine_pid = bot.services.engine.process.pid
            rss = {"before": {"bot": rss_mb(os.getpid()), "engine": rss_mb(engine_pid)}}
            bursts = []
            for round_no in (1, 2):
                bursts.append(await one_burst(sim, members, burst, round_no))
                await asyncio.sleep(max(1.0, limits.get("rate_window_seconds", 0)))  # let the windows clear
                gc.collect()
                rss[f"after_burst_{round_no}"] = {"bot": rss_mb(os.getpid()), "engine": rss_mb(engine_pid)}
            stats = bot.services.engine.stats()
            assert bot.services.engine.process.pid == engine_pid, "the engine was not restarted"
            return {"members": members, "burst": burst, "limits": limits, "bursts": bursts, "rss_mb": rss,
                    "engine_after": stats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--burst", type=int, default=500)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(measure(args.members, args.burst)), indent=2))


if __name__ == "__main__":
    main()
