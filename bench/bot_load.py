"""A burst of interactions from many members through the real bot, printed as JSON.

Starts the real bot (discord.py client, engine process, SQLite) against the local
Discord simulator with the default limits of config.example.toml, then sends
``--burst`` interactions from ``--members`` members at once — each member in turn
asks for a /random face, /me, /adopt and /random again — and waits until every one
has its final answer. The simulator runs in its own process, as Discord runs on its own
machines: its work is not the bot's, so it does not count against the bot's latency
(``--in-process`` puts it back in the bot's event loop, for comparison). Reported: acknowledgement
times (Discord drops an interaction
not acknowledged within 3 s), how the answers split (results, "queue full", per-member
caps, rate limits, anything else), and the resident memory of the bot and the engine
process before the bursts and after each of two identical bursts (flat = no leak).
``--busy N`` first hands the engine N long projections of a real photo, so it is batching
them (and using every core) all through the bursts.

    python -m bench.bot_load [--members 100] [--burst 500] [--in-process] [--http-connections 0 32] [--busy 6]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from tests.bot_harness import running_bot
from tests.discord_sim import DiscordSimulator
from tests.test_bot_e2e import finished, option

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
    return {
        "interactions": burst,
        "acknowledged": int(np.isfinite(acks).sum()),
        "ack_ms_p50": round(float(np.percentile(acks, 50)), 1),
        "ack_ms_p99": round(float(np.percentile(acks, 99)), 1),
        "ack_ms_max": round(float(acks.max()), 1),
        "answers": dict(kinds),
        "other_examples": [i.last_content()[:120] for i in inters if classify(i.last_content()) == "other"][:3],
    }


class RemoteSimulator:
    """A DiscordSimulator in a child process, driven over a pipe."""

    def __init__(self) -> None:
        self.conn, child = mp.get_context("spawn").Pipe()
        self.process = mp.get_context("spawn").Process(target=_simulator_process, args=(child,), daemon=True)
        self.process.start()
        self.port = self.conn.recv()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def call(self, *message):
        self.conn.send(message)
        reply = await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def wait_bot_ready(self, bot_ready, timeout: float = 60.0) -> None:
        await self.call("wait_ready", timeout)
        deadline = asyncio.get_running_loop().time() + timeout
        while not bot_ready():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the bot did not become ready")
            await asyncio.sleep(0.05)

    async def burst(self, members: int, burst: int, round_no: int) -> dict:
        return await self.call("burst", members, burst, round_no)

    def stop(self) -> None:
        self.conn.send(("stop",))
        self.process.join(10)


def _simulator_process(conn) -> None:
    async def serve() -> None:
        sim = DiscordSimulator()
        await sim.start()
        conn.send(sim.port)
        loop = asyncio.get_running_loop()
        while True:
            op, *args = await loop.run_in_executor(None, conn.recv)
            if op == "stop":
                break
            try:
                if op == "wait_ready":
                    await asyncio.wait_for(sim.identified.wait(), args[0])
                    await sim.wait_for(lambda: sim.commands, args[0])
                    reply = True
                else:
                    reply = await one_burst(sim, *args)
            except Exception as exc:  # noqa: BLE001 (the parent re-raises it)
                reply = exc
            conn.send(reply)
        await sim.stop()

    asyncio.run(serve())


def busy_projections(engine, count: int) -> list:
    """``count`` long /project jobs of a real photo, straight to the bot's engine."""
    import io

    from PIL import Image

    from engine.protocol import ProjectRequest
    from tests.photos import astronaut

    buf = io.BytesIO()
    Image.fromarray(astronaut()).save(buf, format="JPEG")
    futures = [engine.submit(ProjectRequest(image=buf.getvalue(), steps=2000)) for _ in range(count)]
    for f in futures:  # still running when the bench stops the bot: that ending is expected
        f.add_done_callback(lambda f: f.cancelled() or f.exception())
    return futures


async def measure(
    members: int, burst: int, in_process: bool = False, http_connections: int | None = None, busy: int = 0, **limits
) -> dict:
    remote = None if in_process else RemoteSimulator()
    discord_settings = {} if http_connections is None else {"http_connections": http_connections}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_bot(Path(tmp), remote, discord_settings=discord_settings, **limits) as (sim, bot):
                engine_pid = bot.services.transport.process.pid
                rss = {"before": {"bot": rss_mb(os.getpid()), "engine": rss_mb(engine_pid)}}
                projections = busy_projections(bot.services.transport, busy)
                if busy:
                    await asyncio.sleep(8.0)  # decoded, aligned and stepping together before the burst
                bursts = []
                for round_no in (1, 2):
                    bursts.append(
                        await (
                            remote.burst(members, burst, round_no)
                            if remote
                            else one_burst(sim, members, burst, round_no)
                        )
                    )
                    await asyncio.sleep(1.0)
                    gc.collect()
                    rss[f"after_burst_{round_no}"] = {"bot": rss_mb(os.getpid()), "engine": rss_mb(engine_pid)}
                stats = bot.services.transport.stats()
                stats["busy_projections_still_running"] = sum(not f.done() for f in projections)
                assert bot.services.transport.process.pid == engine_pid, "the engine was not restarted"
                return {
                    "members": members,
                    "burst": burst,
                    "busy_projections": busy,
                    "simulator": "in-process" if in_process else "own process",
                    "http_connections": bot.settings.discord.http_connections,
                    "limits": limits,
                    "bursts": bursts,
                    "rss_mb": rss,
                    "engine_after": stats,
                }
    finally:
        if remote is not None:
            remote.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--in-process", action="store_true", help="run the simulator in the bot's event loop")
    ap.add_argument(
        "--http-connections",
        type=int,
        nargs="+",
        default=[None],
        help="discord.http_connections settings to compare, each with a fresh (cold) bot; "
        "0 = discord.py's unbounded pool; default: the config's",
    )
    ap.add_argument("--busy", type=int, default=0, help="long projections the engine batches through the bursts")
    args = ap.parse_args()
    runs = [
        asyncio.run(measure(args.members, args.burst, args.in_process, n, args.busy)) for n in args.http_connections
    ]
    print(json.dumps(runs[0] if len(runs) == 1 else runs, indent=2))


if __name__ == "__main__":
    main()
