"""An engine that dies takes no innocent member's job with it.

A batching engine cannot tell which of the jobs it held killed it, so every one of them
runs again once, alone, in arrival order, before new work: a job that kills the engine
again fails alone, with one sentence; the others complete. The engine here is the real
one in its own process; the kills are real SIGKILLs (as the kernel's OOM killer sends).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from bot.transport.local import DIED_TWICE, LocalTransport
from engine.protocol import JobFailed, Progress, ProjectRequest, RandomRequest, Rerun, Result
from engine.protocol.spec import EngineSpec
from tests.photos import astronaut, encode, grace_hopper


async def until(predicate, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def running(heard: list[Progress]) -> bool:
    return any(isinstance(p, Progress) and p.step > 0 for p in heard)


async def test_two_members_in_one_batch_both_complete_after_the_engine_is_killed_mid_step(tiny_model):
    engine = LocalTransport(EngineSpec(str(tiny_model), threads=1, batch=4))
    await engine.start(timeout=120)
    try:
        heard = {"a": [], "b": []}
        a = engine.submit(ProjectRequest(image=encode(astronaut(), "JPEG"), steps=400), heard["a"].append)
        b = engine.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=60), heard["b"].append)
        await until(lambda: running(heard["a"]) and running(heard["b"]))
        os.kill(engine.process.pid, signal.SIGKILL)  # mid-step: both are in the batch
        outcomes = await asyncio.wait_for(asyncio.gather(a, b), 300)
        assert all(isinstance(o, Result) for o in outcomes), outcomes
        for name in heard:
            assert any(isinstance(p, Rerun) for p in heard[name]), f"{name} heard that the job runs again"
        stats = engine.stats()
        assert stats["restarts"] == 1 and stats["rerun_after_restart"] == 2 and stats["failed_after_restart"] == 0
    finally:
        await engine.close()


async def test_a_job_that_kills_the_engine_every_time_fails_alone_and_the_others_complete(tiny_model):
    """The poison here is a job whose running kills the engine: whenever it reports a step, the
    test SIGKILLs the engine process (a test-only poison, from outside the code under test)."""
    engine = LocalTransport(EngineSpec(str(tiny_model), threads=1, batch=4))
    await engine.start(timeout=120)
    kills = []

    def poison_heard(p: Progress) -> None:
        if isinstance(p, Progress) and p.step > 0 and engine.process.is_alive() and engine.process.pid not in kills:
            kills.append(engine.process.pid)
            os.kill(engine.process.pid, signal.SIGKILL)

    try:
        innocent_heard: list[Progress] = []
        poison = engine.submit(ProjectRequest(image=encode(astronaut(), "JPEG"), steps=300), poison_heard)
        innocent = engine.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=40), innocent_heard.append)
        await until(lambda: len(kills) == 1 and engine.restarts == 1)
        late = engine.submit(RandomRequest(seed=3))  # new work waits for the reruns
        outcomes = await asyncio.wait_for(asyncio.gather(poison, innocent, late), 300)
        assert isinstance(outcomes[0], JobFailed) and outcomes[0].message == DIED_TWICE, outcomes[0]
        assert outcomes[0].code == "engine_restarted" and "\n" not in outcomes[0].message
        assert isinstance(outcomes[1], Result) and isinstance(outcomes[2], Result), outcomes
        assert len(kills) == 2, "the poison killed the engine twice, the second time alone"
        assert any(isinstance(p, Rerun) for p in innocent_heard)
        stats = engine.stats()
        assert stats["restarts"] == 2 and stats["failed_after_restart"] == 1 and stats["rerun_after_restart"] == 2
    finally:
        await engine.close()
