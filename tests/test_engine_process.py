"""The engine process: survives any single bad job, is restarted when killed, bounds its queue."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import numpy as np
import pytest

from bot.transport import QueueFull
from bot.transport.local import LocalTransport
from engine.jobs.answers import run_job
from engine.jobs.engine import Engine
from engine.protocol import (
    BlendRequest,
    EditRequest,
    JobFailed,
    MorphRequest,
    Progress,
    ProjectRequest,
    RandomRequest,
    RenderRequest,
    Rerun,
    Result,
    Started,
    as_face,
    wire,
)
from engine.protocol.spec import EngineSpec
from tests.photos import encode, grace_hopper

WS = as_face(np.zeros((2, 3)))  # a face of no model here


@pytest.fixture(scope="module")
def engine(tiny_model):
    return Engine(tiny_model)


@pytest.mark.parametrize(
    "job, code",
    [
        (BlendRequest(a=WS, b=WS, ratio=float("nan")), "bad_argument"),
        (RandomRequest(seed=-1), "bad_argument"),
        (RandomRequest(seed=2**40), "bad_argument"),
        (RandomRequest(truncation="lots"), "bad_argument"),
        (ProjectRequest(image=b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, steps=5), "not_an_image"),
        (ProjectRequest(image=b"x", steps=10**9), "bad_argument"),
        (RenderRequest(face=as_face([[1.0, 2.0]])), "model_mismatch"),
        (EditRequest(face=None, direction="../../etc/passwd"), "bad_argument"),
        (MorphRequest(faces=(None,), frames=10), "bad_argument"),
    ],
)
def test_a_bad_job_fails_alone_and_the_engine_keeps_serving(engine, job, code):
    events = []
    run_job(engine, job, events.append)
    failures = [e for e in events if isinstance(e, JobFailed)]
    assert len(failures) == 1 and failures[0].code == code, events
    assert "\n" not in failures[0].message
    good = []
    run_job(engine, RandomRequest(seed=3), good.append)
    assert isinstance(good[-1], Result) and good[-1].files[0].name == "seed3.png"


@pytest.mark.parametrize(
    "data", [b"not a job", b"", wire.dumps(RandomRequest(seed=1))[:-3], wire.dumps(JobFailed("0" * 12, "x", "y"))]
)
def test_bytes_that_are_no_request_fail_once_by_their_id(engine, data):
    from engine.serving.scheduler import Scheduler

    events = []
    Scheduler(engine, events.append, 1).take("abcdefabcdef", data)
    assert len(events) == 1 and isinstance(events[0], JobFailed) and events[0].job_id == "abcdefabcdef"
    assert events[0].message == "That request could not be read."


def test_latents_of_another_model_are_refused(engine):
    events = []
    job = RenderRequest(face=as_face(np.zeros((engine.G.num_ws, engine.G.w_dim))), model_id="some-other-model")
    run_job(engine, job, events.append)
    assert isinstance(events[-1], JobFailed) and events[-1].code == "model_mismatch"


async def test_engine_killed_mid_projection_is_restarted_and_the_job_runs_again(tiny_model):
    client = LocalTransport(EngineSpec(str(tiny_model), threads=1), queue_size=4)
    await client.start(timeout=120)
    try:
        heard = []
        fut = client.submit(ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=300), heard.append)
        deadline = time.monotonic() + 60
        while not any(isinstance(p, Progress) and p.step > 0 for p in heard) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert any(isinstance(p, Progress) and p.step > 0 for p in heard), "the projection was running"
        old_pid = client.process.pid
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while client.restarts == 0 and time.monotonic() - killed_at < 30:
            await asyncio.sleep(0.05)
        await client.wait_ready(30)
        assert client.process.pid != old_pid and client.restarts == 1
        assert time.monotonic() - killed_at < 5 + 10, "noticed within the watchdog period (model load on top)"
        result = await asyncio.wait_for(fut, 120)
        assert isinstance(result, Result), result
        assert any(isinstance(p, Rerun) for p in heard), "the member heard that their job runs again"
        assert client.stats()["rerun_after_restart"] == 1 and client.stats()["failed_after_restart"] == 0
        result = await asyncio.wait_for(client.run(RandomRequest(seed=1)), 60)
        assert isinstance(result, Result)
    finally:
        await client.close()


async def test_the_queue_is_bounded(tiny_model):
    client = LocalTransport(EngineSpec(str(tiny_model), threads=1), queue_size=2)
    await client.start(timeout=120)
    try:
        futs = [client.submit(RandomRequest(seed=i)) for i in range(2)]
        with pytest.raises(QueueFull):
            client.submit(RandomRequest(seed=9))
        assert client.position(list(client.pending)[1]) == 2
        results = await asyncio.wait_for(asyncio.gather(*futs), 60)
        assert all(isinstance(r, Result) for r in results)
        assert client.stats()["queued"] == 0
    finally:
        await client.close()


def test_progress_events_carry_previews(engine):
    events = []
    run_job(engine, ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=20), events.append)
    assert isinstance(events[0], Started), "the worker says when it starts"
    progress = [e for e in events if isinstance(e, Progress)]
    assert any(p.preview_png and p.preview_png[:4] == b"\x89PNG" for p in progress)
    assert isinstance(events[-1], Result) and events[-1].face.ws.shape == (engine.G.num_ws, engine.G.w_dim)
