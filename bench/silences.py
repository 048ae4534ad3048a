"""How long a member looks at an unchanged message while a long job runs: the real bot
against the Discord simulator, one long job at a time at the default progress pace (/project,
/team on the six-face group photo at twice its size, /lookalike among 64 sharing members with
its stranger search, /morph), with the bot's keep-alive edits off (the baseline) and on, in the
same run. Prints JSON: per job, seconds from the acknowledgement to
the first edit, the longest gap between two edits, and the job's total time.

    python -m bench.silences [--project-steps 200] [--out docs/silences.json]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np

import bot.commands.running as running
from bench.report import report
from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper, group_photo
from tests.test_bot_e2e import ALICE, BOB, finished, option, project


def gaps(inter) -> dict:
    times = [m.at for m in inter.messages]
    start = inter.acked_at or times[0]
    steps = [b - a for a, b in zip(times, times[1:])]
    return {"first_edit_s": round(times[1] - start, 2) if len(times) > 1 else None,
            "longest_gap_s": round(max(steps), 2) if steps else None, "total_s": round(times[-1] - start, 1),
            "edits": len(times) - 1}


async def measure(project_steps: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with running_bot(Path(tmp), project_steps=project_steps, max_project_steps=2000, member_rate=100,
                               per_member_queued=4, progress_interval=1.5) as (sim, bot):  # the default pace
            await bot.services.storage.set_share(sim.guild_id, BOB, True)
            await sharing_members(bot, sim.guild_id, 64)  # /lookalike describes every one of them first
            photo = encode(grace_hopper(), "JPEG")
            await finished(sim, await project(sim, BOB, photo, "b.jpg", "image/jpeg"), 600)  # someone to compare with
            jobs = {
                "project": lambda: project(sim, ALICE, photo, "a.jpg", "image/jpeg", steps=project_steps),
                "team": lambda: _upload(sim, ALICE, "team", encode(big_group(), "JPEG")),
                "lookalike": lambda: sim.invoke(ALICE, "lookalike"),
                "morph": lambda: sim.invoke(ALICE, "morph", [option("frames", 48, 4)]),
            }
            for name, start in jobs.items():
                out[name] = gaps(await finished(sim, await start(), 900))
    return out


def big_group():
    """The six-face group photo at twice its size, as a phone would send it."""
    from PIL import Image

    img = group_photo()[0]
    return np.asarray(Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.Resampling.BICUBIC))


async def sharing_members(bot, guild_id: int, n: int) -> None:
    info, rng = bot.services.transport.info, np.random.default_rng(4)
    for i in range(n):
        member = 810000000000000000 + i
        ws = (rng.standard_normal((info.num_ws, info.w_dim)) * 0.3).astype(np.float32)
        await bot.services.storage.save_latent(guild_id, member, bot.services.model_id, ws, "project")
        await bot.services.storage.set_share(guild_id, member, True)


async def _upload(sim, user, command, data):
    att = sim.add_attachment(data, "group.jpg", "image/jpeg")
    return await sim.invoke(user, command, [option("image", att["id"], 11)], resolved={"attachments": {att["id"]: att}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project-steps", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    quiet = running.QUIET_SECONDS
    result = {}
    for mode, seconds in (("keep_alive_off", 1e9), ("keep_alive_on", quiet)):
        running.QUIET_SECONDS = seconds
        result[mode] = asyncio.run(measure(args.project_steps))
    result["quiet_seconds"] = quiet
    report(result, args.out)


if __name__ == "__main__":
    main()
