"""Prometheus metrics, scraped during an end-to-end run: the real bot over a real Redis with a
real `wspace worker`, both serving /metrics; a member projects a face and draws a stranger."""

from __future__ import annotations

import asyncio
import shutil
import urllib.request

import pytest

from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper
from tests.redis_helpers import SECRET, start_worker
from tests.test_bot_e2e import ALICE, finished, option, project

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (.ci/run installs Debian's redis-server)")


def scrape(address: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample at ``address``/metrics."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def test_the_bot_and_a_worker_serve_metrics_an_operator_can_scrape(redis_server, tmp_path):
    worker = start_worker(redis_server.url, "metered", "--metrics", "127.0.0.1:0")
    try:
        async with running_bot(tmp_path, engine={"transport": "redis", "redis_url": redis_server.url,
                                                 "redis_secret": SECRET},
                               sections={"metrics": {"address": "127.0.0.1:0"}}) as (sim, bot):
            svc = bot.services
            mine = f"127.0.0.1:{svc.metrics.port}"
            face = await finished(
                sim, await project(sim, ALICE, encode(grace_hopper(), "JPEG"), "g.jpg", "image/jpeg"), 180
            )
            assert "likeness" in face.last_content(), face.last_content()
            stranger = await finished(sim, await sim.invoke(ALICE, "random", [option("seed", 3, 4)]), 60)
            assert "seed3.png" in stranger.all_files()
            got = scrape(mine)
            assert got['wspace_jobs_total{kind="project",outcome="ok"}'] == 1.0
            assert got['wspace_jobs_total{kind="random",outcome="ok"}'] == 1.0
            assert got["wspace_projection_steps_total"] == 20.0  # the harness's project_steps
            assert got["wspace_ack_seconds_count"] >= 2 and got["wspace_ack_seconds_sum"] > 0
            assert got["wspace_job_wait_seconds_count"] >= 1
            assert got["wspace_queue_depth"] == 0 and got["wspace_workers"] == 1 and got["wspace_engine_up"] == 1
            assert "wspace_engine_restarts_total" in got and "wspace_dead_letters" in got
            for _ in range(150):  # members and faces stored: counted at the bot's next heartbeat (10 s)
                if scrape(mine).get("wspace_faces") == 1.0:
                    break
                await asyncio.sleep(0.2)
            assert scrape(mine)["wspace_faces"] == 1.0 and scrape(mine)["wspace_members"] >= 1
            theirs = svc.transport.workers["metered"]["metrics"]
            assert theirs, "the worker says where its metrics are"
            w = scrape(theirs)
            assert w['wspace_worker_jobs_total{worker="metered"}'] == 2.0
            assert w['wspace_worker_busy_seconds_total{worker="metered"}'] > 0
            assert w['wspace_worker_dead_letters_total{worker="metered"}'] == 0
    finally:
        worker.kill()
        worker.wait()
