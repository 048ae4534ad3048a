"""A Redis worker that dies takes no innocent member's job with it: the entries of its batch
are reclaimed by another worker and run there alone, one at a time; an entry that kills
that worker too goes to the dead letters with one sentence. Real redis-server, real
`wspace worker` processes, real SIGKILLs."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import pytest
import pytest_asyncio

from engine.protocol import JobFailed, Progress, ProjectRequest, Result
from engine.serving.redis_worker import POISON
from tests.photos import astronaut, encode, grace_hopper
from tests.redis_helpers import SECRET, start_worker

FLAGS = ("--claim-idle", "2", "--batch", "4")
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (.ci/run installs Debian's redis-server)")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot_side(redis_server):
    from bot.transport.redis_streams import RedisTransport

    client = RedisTransport(redis_server.url, SECRET.encode(), queue_size=64, poll_seconds=0.2)
    await client.start(wait=False)
    procs: list = []
    yield client, procs
    await client.close()
    for p in procs:
        p.kill()
        p.wait()


async def until(predicate, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def worker(client, procs, name: str):
    procs.append(start_worker(client.url, name, *FLAGS))
    await until(lambda: name in client.workers, 120)
    return procs[-1]


def kill(client, name: str) -> None:
    os.kill(client.workers[name]["pid"], signal.SIGKILL)


async def test_two_members_in_a_dead_workers_batch_both_complete_on_the_other(bot_side):
    client, procs = bot_side
    await worker(client, procs, "first")
    heard = {"a": [], "b": []}
    a = client.submit(ProjectRequest(image=encode(astronaut(), "JPEG"), steps=400), heard["a"].append)
    b = client.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=60), heard["b"].append)
    stepping = lambda h: any(isinstance(p, Progress) and p.step > 0 for p in h)  # noqa: E731
    await until(lambda: all(stepping(h) for h in heard.values()))  # one batch, on "first"
    await worker(client, procs, "second")
    kill(client, "first")
    outcomes = await asyncio.wait_for(asyncio.gather(a, b), 300)
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    assert {client.answered_by[o.job_id] for o in outcomes} == {"second"}
    await until(lambda: client.workers.get("second", {}).get("rerun_alone") == 2, 30)
    assert client.duplicates == 0


async def test_a_job_that_kills_every_worker_is_set_aside_and_the_other_completes(bot_side):
    """The poison: whenever it reports a step, the test SIGKILLs the worker running it."""
    client, procs = bot_side
    for name in list(client.workers):
        kill(client, name)
    await until(lambda: not client.workers, 60)
    await worker(client, procs, "third")
    kills: list[str] = []

    def poison_heard(p: Progress) -> None:
        alive = [n for n in client.workers if n not in kills]  # one live worker at a time here
        if isinstance(p, Progress) and p.step > 0 and alive:
            kills.append(alive[0])
            kill(client, alive[0])

    innocent_heard: list[Progress] = []
    poison = client.submit(ProjectRequest(image=encode(astronaut(), "JPEG"), steps=400), poison_heard)
    innocent = client.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=40), innocent_heard.append)
    await until(lambda: kills == ["third"])
    await worker(client, procs, "fourth")  # reclaims both; runs the poison alone, and dies of it
    await until(lambda: kills == ["third", "fourth"])
    await worker(client, procs, "fifth")  # reclaims both: the poison is set aside, the innocent runs
    outcomes = await asyncio.wait_for(asyncio.gather(poison, innocent), 300)
    assert isinstance(outcomes[0], JobFailed) and outcomes[0].message == POISON, outcomes[0]
    assert isinstance(outcomes[1], Result), outcomes[1]
    # "fourth" when it took the innocent as a new job while the dead "third"'s heartbeat still
    # covered the poison (a worker's entries are left to it until its heartbeat expires)
    assert client.answered_by[outcomes[1].job_id] in ("fourth", "fifth")
