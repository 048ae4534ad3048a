"""The Redis transport against a real redis-server: jobs spread over two workers, a worker
killed mid-projection hands its job to the other (one answer, not two), a restarted Redis
is reported and recovered from, and the bot works over it end to end."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import pytest
import pytest_asyncio

from engine.protocol import JobFailed, Progress, ProjectRequest, RandomRequest, RenderRequest, Result, as_face
from tests.photos import encode, grace_hopper
from tests.redis_helpers import SECRET, start_worker

WORKER_FLAGS = ("--claim-idle", "3", "--inline-max", "65536")
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (.ci/run installs Debian's redis-server)")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(redis_server):
    from bot.transport.redis_streams import RedisTransport

    workers = {name: start_worker(redis_server.url, name, *WORKER_FLAGS) for name in ("w1", "w2")}
    client = RedisTransport(redis_server.url, SECRET.encode(), queue_size=64, poll_seconds=0.2)
    await client.start(wait=False)
    deadline = time.monotonic() + 120
    while len(client.workers) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert len(client.workers) == 2, "both workers announced themselves"
    yield client, workers, redis_server
    await client.close()
    for w in workers.values():
        w.kill()
        w.wait()


async def test_jobs_spread_across_both_workers(cluster):
    client, _, _ = cluster
    jobs = [RandomRequest(seed=i) for i in range(16)]
    outcomes = await asyncio.wait_for(asyncio.gather(*[client.submit(j) for j in jobs]), 120)
    assert all(isinstance(o, Result) for o in outcomes), outcomes
    assert {client.answered_by[j.id] for j in jobs} == {"w1", "w2"}
    stats = client.stats()
    assert stats["transport"] == "redis" and {w["id"] for w in stats["workers"]} == {"w1", "w2"}
    assert all(w["model_id"] == client.info.model_id for w in stats["workers"])


async def test_latents_of_another_model_are_never_dispatched(cluster):
    client, _, _ = cluster
    outcome = await asyncio.wait_for(
        client.submit(RenderRequest(face=as_face([[0.0]]), model_id="0123456789abcdef")), 10
    )
    assert isinstance(outcome, JobFailed) and outcome.code == "model_mismatch"
    assert "No engine here has the model" in outcome.message


async def test_a_worker_killed_mid_projection_hands_its_job_over_and_answers_once(cluster):
    client, workers, _ = cluster
    steps = []
    fut = client.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=150),
                        lambda p: isinstance(p, Progress) and steps.append(p.step))
    deadline = time.monotonic() + 60
    while not (any(s > 0 for s in steps) and any(w["busy"] for w in client.workers.values())):
        assert time.monotonic() < deadline, "the projection started"
        await asyncio.sleep(0.1)
    busy = next(w for w in client.workers.values() if w["busy"])
    os.kill(busy["pid"], signal.SIGKILL)
    outcome = await asyncio.wait_for(fut, 180)
    assert isinstance(outcome, Result), outcome
    survivor = ({"w1", "w2"} - {busy["id"]}).pop()
    assert client.answered_by[outcome.job_id] == survivor
    assert client.parked_results >= 1, "a projection's pictures travel beside the stream, not in it"
    await asyncio.sleep(2)
    assert client.duplicates == 0, "the member got one result, not two"
    workers[busy["id"]] = start_worker(client.url, busy["id"], *WORKER_FLAGS)  # back to two for the next test
    deadline = time.monotonic() + 120
    while len(client.workers) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def test_a_stopped_job_is_answered_at_once_and_its_worker_gives_up(cluster):
    client, _, _ = cluster
    steps = []
    job = ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=2000)
    fut = client.submit(job, lambda p: isinstance(p, Progress) and steps.append(p.step))
    deadline = time.monotonic() + 60
    while not any(s > 0 for s in steps):
        assert time.monotonic() < deadline, "the projection started"
        await asyncio.sleep(0.1)
    confirmed = client.stops_confirmed
    assert client.cancel(job.id, "Stopped, as you asked.")
    outcome = fut.result()
    assert isinstance(outcome, JobFailed) and outcome.code == "cancelled"
    deadline = time.monotonic() + 30
    while client.stops_confirmed == confirmed:  # a worker answers "stopped" within a poll, not 2000 steps later
        assert time.monotonic() < deadline, "the worker gave up on the stopped job"
        await asyncio.sleep(0.1)
    assert client.duplicates == 0
    assert (await asyncio.wait_for(client.submit(RandomRequest(seed=3)), 60)).job_id


async def test_streams_are_trimmed_and_parked_results_collected(cluster):
    client, _, _ = cluster
    await asyncio.wait_for(asyncio.gather(*[client.submit(RandomRequest(seed=i)) for i in range(8)]), 60)
    await asyncio.sleep(1.5)
    assert await client.r.xlen(client.k["jobs"].format(client.info.model_id)) == 0, "finished jobs leave the stream"
    assert await client.r.xlen(client.reply_stream) <= 1, "read events are trimmed"
    assert await client.r.keys("wspace:result:*") == [], "parked results are taken, not left behind"


async def test_redis_restarted_mid_burst_is_reported_and_recovered(cluster):
    client, _, server = cluster
    futures = [client.submit(RandomRequest(seed=100 + i)) for i in range(12)]
    await asyncio.sleep(0.3)
    server.kill()
    server.start()  # the same port, and none of its data
    outcomes = await asyncio.wait_for(asyncio.gather(*futures), 60)
    failed = [o for o in outcomes if isinstance(o, JobFailed)]
    assert all("interrupted" in o.message for o in failed), failed
    assert all(isinstance(o, (Result, JobFailed)) for o in outcomes), "every member got an answer"
    deadline = time.monotonic() + 60
    while len(client.workers) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert len(client.workers) == 2, "the workers came back on their own"
    again = await asyncio.wait_for(client.submit(RandomRequest(seed=7)), 60)
    assert isinstance(again, Result)


async def test_stale_connections_after_a_redis_restart_are_reconnected_quietly(cluster):
    """Connections opened before a restart are dead afterwards; using them must neither
    fail a command nor make the bot think Redis went away again (it used to flap between
    'reachable' and 'unreachable' once per stale connection, refusing members meanwhile)."""
    client, _, server = cluster
    await asyncio.gather(*[client.r.ping() for _ in range(8)])  # eight pooled connections
    server.kill()
    server.start()  # empty: the workers re-announce themselves with their next heartbeat
    assert all(await asyncio.gather(*[client.r.ping() for _ in range(8)])), "stale connections were reconnected"
    deadline = time.monotonic() + 60
    while len(await client.r.smembers(client.k["workers"])) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(3 * client.poll)  # the watcher's next look
    assert len(client.workers) == 2, "the workers came back on their own"
    samples = []
    for _ in range(40):  # two seconds of the watcher's view, every 50 ms
        samples.append((client.redis_up, len(client.workers)))
        await asyncio.sleep(0.05)
    assert all(up and n == 2 for up, n in samples), f"once back, Redis stays up: {samples}"
    again = await asyncio.wait_for(client.submit(RandomRequest(seed=8)), 60)
    assert isinstance(again, Result)


async def test_the_bot_over_redis_keeps_every_stored_latent_through_a_redis_restart(cluster, tmp_path):
    from tests.bot_harness import running_bot
    from tests.test_bot_e2e import ALICE, MANAGE_GUILD, finished, option, project

    _, _, server = cluster
    async with running_bot(
        tmp_path, engine={"transport": "redis", "redis_url": server.url, "redis_secret": SECRET}
    ) as (sim, bot):
        assert bot.services.transport.transport == "redis"
        inter = await finished(
            sim, await project(sim, ALICE, encode(grace_hopper(), "JPEG"), "g.jpg", "image/jpeg"), 180
        )
        assert "likeness" in inter.last_content(), inter.last_content()
        stored = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
        stats = await sim.invoke(ALICE, "wspace", subcommand="stats", permissions=MANAGE_GUILD)
        await sim.wait_for(lambda: stats.messages, 10)
        assert (
            "(redis) up" in stats.last_content() and "`w1`" in stats.last_content() and "`w2`" in stats.last_content()
        )
        server.kill()
        down = await finished(sim, await sim.invoke(ALICE, "me"), 60)
        assert down.last_content() in (
            "The face engine is not available right now; try again in a minute.",
            "The connection to the face engines was interrupted; please try again.",
        )
        server.start()
        await bot.services.transport.wait_ready(60)
        again = await finished(sim, await sim.invoke(ALICE, "me"), 60)
        assert again.all_files(), again.last_content()
        kept = await bot.services.storage.latent(sim.guild_id, ALICE, bot.services.model_id)
        assert (kept.ws == stored.ws).all(), "no stored latent was lost"
        again = await finished(sim, await sim.invoke(ALICE, "random", [option("seed", 9, 4)]), 60)
        assert "seed9.png" in again.all_files(), again.last_content()
