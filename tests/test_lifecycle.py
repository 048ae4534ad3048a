"""The bot's life cycle as an operator sees it: `wspace serve` as a real process against
the simulator, killed the ways processes get killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bot_harness import engine_model
from tests.discord_sim import DiscordSimulator
from tests.photos import encode, grace_hopper

pytestmark = pytest.mark.asyncio
ALICE = 800000000000000001


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pids: set[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def start_bot(tmp: Path, sim: DiscordSimulator) -> subprocess.Popen:
    model = engine_model(tmp)
    cfg = tmp / "config.toml"
    cfg.write_text(
        f'[discord]\ntoken = "sim-token"\napi_base = "{sim.api_base}"\ngateway_url = "{sim.gateway_url}"\n'
        f'[engine]\nthreads = 1\nbatch = 1\n'  # one job at a time: a second job waits, as these tests need
        + (f'model = "{model}"\n' if model else "")
        + '[limits]\nproject_steps = 2000\nmax_project_steps = 2000\nprogress_interval = 0.5\n'
        f'[storage]\ndatabase = "{tmp / "db.sqlite3"}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("WSPACE_CONFIG", "WSPACE_DEVICE")}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    await asyncio.wait_for(sim.identified.wait(), 60)
    await sim.wait_for(lambda: sim.commands, 60)
    return proc


async def running_projection(sim: DiscordSimulator):
    att = sim.add_attachment(encode(grace_hopper(), "JPEG"), "me.jpg", "image/jpeg")
    inter = await sim.invoke(ALICE, "project", [{"name": "image", "type": 11, "value": att["id"]},
                                                {"name": "steps", "type": 4, "value": 2000}],
                             resolved={"attachments": {att["id"]: att}})
    await sim.wait_for(lambda: any("step" in (m.content or "") for m in inter.messages), 120)
    return inter


@pytest.fixture
async def sim():
    s = DiscordSimulator()
    await s.start()
    yield s
    await s.stop()


@contextlib.asynccontextmanager
async def bot_process(tmp: Path, sim: DiscordSimulator):
    """``wspace serve`` in its own process group, killed whole if the test leaves it running."""
    procs = [await start_bot(tmp, sim)]
    try:
        yield procs  # a test that restarts the bot appends the new process
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


async def test_sigkill_of_the_bot_leaves_no_engine_behind(tmp_path, sim):
    async with bot_process(tmp_path, sim) as (proc,):
        await running_projection(sim)  # the engine is busy computing
        tree = descendants(proc.pid)
        assert tree, "the engine runs in a child process"
        proc.kill()
        proc.wait(10)
        await gone(tree)
        assert not any(alive(p) for p in tree), "an engine outlived the bot that was kill -9ed"


async def test_sigterm_drains_tells_the_member_and_exits_zero(tmp_path, sim):
    async with bot_process(tmp_path, sim) as (proc,):
        inter = await running_projection(sim)
        tree = descendants(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        took = time.monotonic() - t0
        assert code == 0, proc.stdout.read().decode()[-2000:]
        assert took < 12, f"drained in {took:.1f} s"
        assert "restarting" in inter.last_content(), inter.last_content()
        await gone(tree)
        assert not any(alive(p) for p in tree), "nothing of the bot's tree is left within 5 s"


async def test_after_a_kill_the_restarted_bot_tells_every_interrupted_member(tmp_path, sim):
    """Alice's projection was running and Bob's waiting when the bot was kill -9ed. The
    next bot edits Alice's message; Bob's token has expired, so he is told in the channel."""
    bob = 800000000000000002
    async with bot_process(tmp_path, sim) as procs:
        alice = await running_projection(sim)
        att = sim.add_attachment(encode(grace_hopper(), "JPEG"), "b.jpg", "image/jpeg")
        bobs = await sim.invoke(bob, "project", [{"name": "image", "type": 11, "value": att["id"]}],
                                resolved={"attachments": {att["id"]: att}})
        await sim.wait_for(lambda: "queued" in (bobs.last_content() or ""), 60)
        procs[0].kill()
        procs[0].wait(10)
        bobs.expired = True  # as if the restart came more than 15 minutes later for him
        sim.identified.clear()
        sim.commands.clear()
        procs.append(await start_bot(tmp_path, sim))
        await sim.wait_for(lambda: "restarted" in (alice.last_content() or ""), 30)
        assert alice.last_content() == "I restarted while working on your /project, so it stopped; please run it again."
        await sim.wait_for(lambda: any("restarted" in (m.content or "") for m in sim.channel_messages), 30)
        notice = next(m for m in sim.channel_messages if "restarted" in (m.content or ""))
        assert f"<@{bob}>" in notice.content


async def test_reload_of_the_engine_answers_at_once_and_drops_no_job(tmp_path, sim):
    """An admin changes [engine] while Alice's projection runs and Bob's job waits: the
    answer comes within Discord's 3 s, both jobs finish on the old engine, then the new
    engine serves and the old process is gone."""
    bob, admin = 800000000000000002, 800000000000000009
    async with bot_process(tmp_path, sim) as (proc,):
        att = sim.add_attachment(encode(grace_hopper(), "JPEG"), "me.jpg", "image/jpeg")
        alice = await sim.invoke(ALICE, "project", [{"name": "image", "type": 11, "value": att["id"]},
                                                    {"name": "steps", "type": 4, "value": 300}],
                                 resolved={"attachments": {att["id"]: att}})
        await sim.wait_for(lambda: any("step" in (m.content or "") for m in alice.messages), 120)
        bobs = await sim.invoke(bob, "random", [{"name": "seed", "type": 4, "value": 5}])
        await sim.wait_for(lambda: "queued" in (bobs.last_content() or ""), 30)
        record = tmp_path / "db.sqlite3.engines.json"  # the bot records its engine processes here
        old_engines = {e["pid"] for e in json.loads(record.read_text())["engines"]}
        assert len(old_engines) == 1 and old_engines <= descendants(proc.pid)
        cfg = tmp_path / "config.toml"
        cfg.write_text(cfg.read_text().replace("threads = 1", "threads = 2"))
        t0 = time.monotonic()
        reload = await sim.invoke(admin, "wspace", subcommand="reload", permissions=1 << 5)
        await sim.wait_for(lambda: reload.messages, 10)
        assert time.monotonic() - t0 < 3, "answered within Discord's 3 seconds"
        assert "starting beside the old one" in reload.last_content(), reload.last_content()
        await sim.wait_for(lambda: any(w in (alice.last_content() or "") for w in ("likeness", "try again")), 240)
        assert "likeness" in alice.last_content(), alice.last_content()
        await sim.wait_for(lambda: bobs.all_files(), 60)
        assert "seed5.png" in bobs.all_files(), bobs.last_content()
        await sim.wait_for(lambda: any("serving now" in (m.content or "") for m in reload.messages), 180)
        await gone(old_engines, 15)
        assert not any(alive(p) for p in old_engines), "the old engine stopped"
        new_engines = {e["pid"] for e in json.loads(record.read_text())["engines"]}
        assert len(new_engines) == 1 and not new_engines & old_engines and all(alive(p) for p in new_engines)
        again = await sim.invoke(bob, "random", [{"name": "seed", "type": 4, "value": 6}])
        await sim.wait_for(lambda: again.all_files(), 60)
        assert "seed6.png" in again.all_files()


async def test_engines_of_a_dead_bot_are_ended_and_reused_pids_are_not(tmp_path):
    from bot.transport.pidfile import EngineRegistry, start_time

    orphan = subprocess.Popen(["sleep", "300"])
    stranger = subprocess.Popen(["sleep", "300"])  # its pid is recorded with another start time: a reused pid
    try:
        path = tmp_path / "db.sqlite3.engines.json"
        path.write_text(
            json.dumps(
                {
                    "bot": {"pid": 2**22 + 7, "start": 1},  # long dead
                    "engines": [
                        {"pid": orphan.pid, "start": start_time(orphan.pid)},
                        {"pid": stranger.pid, "start": 12345},
                    ],
                }
            )
        )
        assert EngineRegistry(path).end_orphans() == [orphan.pid]
        assert orphan.wait(5) == -signal.SIGKILL and stranger.poll() is None
        living_bot = subprocess.Popen(["sleep", "300"])  # a bot still running on the same database
        try:
            again = subprocess.Popen(["sleep", "300"])
            path.write_text(
                json.dumps(
                    {
                        "bot": {"pid": living_bot.pid, "start": start_time(living_bot.pid)},
                        "engines": [{"pid": again.pid, "start": start_time(again.pid)}],
                    }
                )
            )
            assert EngineRegistry(path).end_orphans() == [] and again.poll() is None
            again.kill()
        finally:
            living_bot.kill()
        path.write_text("not json")
        assert EngineRegistry(path).end_orphans() == []
    finally:
        for p in (orphan, stranger):
            p.kill()
            p.wait()
