"""A Redis worker that batches (``wspace worker --batch N``): members' projections sent over
Redis advance together, each member gets the face they would have got alone, and a bad job
among them fails alone."""

from __future__ import annotations

import asyncio
import shutil
import time

import numpy as np
import pytest

from engine.jobs.dispatch import run
from engine.protocol import JobFailed, Progress, ProjectRequest, RandomRequest, Result
from tests.closeness import same_kept_face
from tests.photos import astronaut, encode, grace_hopper
from tests.redis_helpers import SECRET, start_worker


async def connected(url: str):
    """The bot's Redis transport, once a worker has announced itself."""
    from bot.transport.redis_streams import RedisTransport

    client = RedisTransport(url, SECRET.encode(), queue_size=64, poll_seconds=0.2)
    await client.start(wait=False)
    deadline = time.monotonic() + 120
    while not client.workers and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return client


pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (.ci/run installs Debian's redis-server)")


def test_a_batching_worker_gives_each_member_their_solo_face(redis_server):
    from engine.jobs.engine import Engine

    photos = [encode(astronaut(), "JPEG"), encode(grace_hopper(), "JPEG")]
    asks = [dict(image=photos[0], steps=10), dict(image=photos[1], steps=7), dict(image=photos[0], steps=5)]
    import torch

    engine, threads = Engine(), torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker runs (tests/redis_helpers.py): the arithmetic depends on it
    try:
        alone = [run(engine, ProjectRequest(**k)) for k in asks]
    finally:
        torch.set_num_threads(threads)
    no_face = ProjectRequest(image=encode(np.full((200, 200, 3), 128, np.uint8), "PNG"), steps=5)
    worker = start_worker(redis_server.url, "batcher", "--batch", "4")

    async def main():
        client = await connected(redis_server.url)
        try:
            jobs = [ProjectRequest(**k) for k in asks] + [no_face, RandomRequest(seed=4)]
            heard = {j.id: [] for j in jobs}
            outcomes = await asyncio.wait_for(asyncio.gather(*[
                client.submit(j, lambda p: heard[p.job_id].append(time.monotonic())) for j in jobs]), 300)
            by = {client.answered_by.get(j.id) for j in jobs}
        finally:
            await client.close()
        return jobs, outcomes, heard, by

    try:
        jobs, outcomes, heard, by = asyncio.run(main())
    finally:
        worker.kill()
        worker.wait()
    for solo, got in zip(alone, outcomes[:3]):
        assert isinstance(got, Result), got
        same_kept_face(solo.faces[0], got.faces[0])
    assert isinstance(outcomes[3], JobFailed) and outcomes[3].code == "no_face"
    assert isinstance(outcomes[4], Result)
    projections = [heard[j.id] for j in jobs[:3]]
    assert max(h[0] for h in projections) < min(h[-1] for h in projections), "the projections did not overlap"
    assert by == {"batcher"}


def test_a_batching_worker_survives_redis_restarting_mid_batch(redis_server):
    worker = start_worker(redis_server.url, "batcher2", "--batch", "4", "--claim-idle", "3")
    photo = encode(grace_hopper(), "JPEG")

    async def main():
        client = await connected(redis_server.url)
        try:
            started = asyncio.Event()
            futures = [client.submit(ProjectRequest(image=photo, steps=400),
                                     lambda p: isinstance(p, Progress) and p.step > 0 and started.set())
                       for _ in range(3)]
            await asyncio.wait_for(started.wait(), 60)  # the batch is stepping
            redis_server.kill()
            redis_server.start()  # the same port, none of its data
            outcomes = await asyncio.wait_for(asyncio.gather(*futures), 120)
            deadline = time.monotonic() + 60
            while not client.workers and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            again = await asyncio.wait_for(client.submit(ProjectRequest(image=photo, steps=5)), 120)
        finally:
            await client.close()
        return outcomes, again

    try:
        outcomes, again = asyncio.run(main())
    finally:
        worker.kill()
        worker.wait()
    assert all(isinstance(o, (Result, JobFailed)) for o in outcomes), "every member got an answer"
    assert all("interrupted" in o.message for o in outcomes if isinstance(o, JobFailed)), outcomes
    assert isinstance(again, Result), "the worker came back on its own and batches again"
