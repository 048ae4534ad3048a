"""A busy engine: several members' /project jobs at once, their projections batched, each
member getting exactly the face they would have got alone; one bad job fails alone."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bot.transport.local import LocalTransport
from engine.jobs.dispatch import run
from engine.protocol import JobFailed, Progress, ProjectRequest, RenderRequest, Result, wire
from engine.protocol.spec import EngineSpec
from engine.serving.scheduler import Scheduler
from tests.closeness import WS_TOL, same_fit, same_kept_face
from tests.photos import astronaut, encode, grace_hopper

REPO = Path(__file__).resolve().parents[1]


def photos() -> list[bytes]:
    return [encode(astronaut(), "JPEG"), encode(grace_hopper(), "JPEG")]


def pixels_apart(a: bytes, b: bytes) -> int:
    """The largest difference between two pictures' pixels (levels of 255)."""
    import io

    from PIL import Image

    x, y = (np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), dtype=int) for d in (a, b))
    assert x.shape == y.shape
    return int(np.abs(x - y).max())


async def run_all(engine: LocalTransport, jobs) -> tuple[list, dict[str, list[float]]]:
    heard: dict[str, list[float]] = {j.id: [] for j in jobs}

    def progress(event):
        heard[event.job_id].append(time.monotonic())

    results = await asyncio.wait_for(asyncio.gather(*[engine.submit(j, progress) for j in jobs]), 600)
    return results, heard


def test_concurrent_projections_are_batched_and_each_member_gets_their_solo_fit():
    async def main():
        solo, busy = LocalTransport(EngineSpec(threads=2, batch=1)), LocalTransport(EngineSpec(threads=2, batch=4))
        await solo.start(timeout=300)
        await busy.start(timeout=300)
        try:
            a, b = photos()
            asks = [dict(image=a, steps=12), dict(image=b, steps=9), dict(image=a, steps=5, encoder=False)]
            alone, _ = await run_all(solo, [ProjectRequest(**k) for k in asks])
            jobs = [ProjectRequest(**k) for k in asks] + [RenderRequest(face=alone[0].faces[0])]
            together, heard = await run_all(busy, jobs)
        finally:
            await solo.close()
            await busy.close()
        return alone, together, heard, jobs

    alone, together, heard, jobs = asyncio.run(main())
    assert all(isinstance(r, Result) for r in alone + together), [
        r for r in alone + together if isinstance(r, JobFailed)
    ]
    for x, y in zip(alone, together):  # the face they would have got alone, up to a batch's rounding
        same_kept_face(x.faces[0], y.faces[0])
        same_fit(x, y)
    projections = [heard[j.id] for j in jobs[:3]]
    assert max(h[0] for h in projections) < min(h[-1] for h in projections), "the projections did not overlap"
    assert together[3].files[0].name.endswith(".png")  # a render ran beside the batch


def test_a_bad_job_in_a_busy_engine_fails_alone():
    async def main():
        engine = LocalTransport(EngineSpec(threads=2, batch=4))
        await engine.start(timeout=300)
        try:
            a, _ = photos()
            no_face = encode(np.full((200, 200, 3), 128, np.uint8), "PNG")
            jobs = [
                ProjectRequest(image=a, steps=6),
                ProjectRequest(image=no_face, steps=6),
                ProjectRequest(image=b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, steps=6),
                ProjectRequest(image=a, steps=4),
            ]
            results, _ = await run_all(engine, jobs)
            positions = engine.pending
        finally:
            await engine.close()
        return results, positions

    results, pending = asyncio.run(main())
    assert [type(r).__name__ for r in results] == ["Result", "JobFailed", "JobFailed", "Result"]
    assert results[1].code == "no_face" and results[2].code == "not_an_image"
    assert not pending


def test_a_job_whose_progress_fails_leaves_the_batch_and_the_others_finish(tiny_model):
    from engine.jobs.engine import Engine

    engine = Engine(tiny_model)
    a, b = photos()
    good, bad = ProjectRequest(image=a, steps=8), ProjectRequest(image=b, steps=8)
    events: list = []

    def emit(event):
        if isinstance(event, Progress) and event.job_id == bad.id and event.step >= 3:
            raise OSError("the event queue is gone")
        events.append(event)

    jobs = queue.Queue()
    for job in (good, bad):
        jobs.put((job.id, wire.dumps(job)))
    jobs.put(("0" * 12, b"no request"))
    jobs.put(None)
    scheduler = Scheduler(engine, emit, max_jobs=4)
    scheduler.serve(jobs)
    answers = {e.job_id: e for e in events if isinstance(e, (Result, JobFailed))}
    assert isinstance(answers[good.id], Result) and answers[good.id].faces[0].ws.shape == (
        engine.G.num_ws,
        engine.G.w_dim,
    )
    assert isinstance(answers[bad.id], JobFailed) and answers[bad.id].code == "internal"
    assert answers["0" * 12].message == "That request could not be read."
    assert scheduler.most == 2 and len(scheduler.batch) == 0 and not scheduler.jobs


def test_the_gpu_bench_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    failed = {k: v for k, v in figures.items() if isinstance(v, dict) and "error" in v}
    assert not failed, failed
    batched = figures["alone_vs_batched"]
    assert batched["ws_max_diff"] < WS_TOL, batched  # a batch changes nobody's face beyond rounding
    assert abs(batched["psnr_alone"] - batched["psnr_batched"]) < 0.1, batched
    assert figures["projection_embedded"]["steps_ms"]["eager_fp32_default_b8"] > 0
    assert figures["generator_1024"]["gflop_per_image"] > 0


def test_a_team_photo_projects_its_faces_as_one_batch_beside_another_job(tiny_model):
    """/team asks for all its faces at once: one batch, beside a member's /project, and the
    faces are the ones the team gets when run alone."""
    from engine.jobs.engine import Engine
    from engine.protocol import TeamRequest
    from tests.photos import group_photo

    engine = Engine(tiny_model)
    group = encode(group_photo()[0], "JPEG")
    team, single = TeamRequest(image=group, steps=4, frames=8), ProjectRequest(image=photos()[0], steps=6)
    alone = run(engine, team)
    events: list = []
    jobs = queue.Queue()
    for job in (team, single):
        jobs.put((job.id, wire.dumps(job)))
    jobs.put(None)
    scheduler = Scheduler(engine, events.append, max_jobs=4)
    scheduler.serve(jobs)
    answers = {e.job_id: e for e in events if isinstance(e, (Result, JobFailed))}
    assert isinstance(answers[team.id], Result) and isinstance(answers[single.id], Result)
    assert scheduler.most == len(alone.faces) + 1  # every face of the team and the member, one batch
    for x, y in zip(alone.faces, answers[team.id].faces):
        same_kept_face(x, y)


def test_a_step_that_fails_tells_its_members_jobs_and_the_engine_serves_on(tiny_model, monkeypatch):
    from engine.jobs.engine import Engine

    engine = Engine(tiny_model)
    a, b = photos()
    first, second, later = (
        ProjectRequest(image=a, steps=6),
        ProjectRequest(image=b, steps=6),
        ProjectRequest(image=a, steps=3),
    )
    events: list = []
    scheduler = Scheduler(engine, events.append, max_jobs=4)
    real_step, calls = scheduler.batch.step, [0]

    def step_once_broken():
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("a bug in a step")
        return real_step()

    monkeypatch.setattr(scheduler.batch, "step", step_once_broken)
    jobs = queue.Queue()
    for job in (first, second):
        jobs.put((job.id, wire.dumps(job)))
    scheduler.take(*jobs.get())
    scheduler.take(*jobs.get())
    while len(scheduler.batch):
        scheduler.step()
    scheduler.take(later.id, wire.dumps(later))
    while len(scheduler.batch):
        scheduler.step()
    answers = {e.job_id: e for e in events if isinstance(e, (Result, JobFailed))}
    assert answers[first.id].code == answers[second.id].code == "internal"
    assert isinstance(answers[later.id], Result) and not scheduler.jobs


def test_the_gpu_bench_skips_what_does_not_fit_its_time(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--quick", "--budget", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert "parity" in figures["skipped_for_time"] and "projection_1024" in figures["skipped_for_time"]
    assert "projection_embedded" not in figures


def test_renders_edits_and_blends_of_several_jobs_are_drawn_together_as_they_would_be_alone():
    """Quick jobs that arrive together are drawn in one forward pass, each member getting the
    pictures (within a level of 255; identical wherever measured) and the very kept faces
    their job gives alone; a job that fails fails alone."""
    from engine.jobs.engine import Engine
    from engine.protocol import BlendRequest, EditRequest, GridRequest, MixRequest, RandomRequest, SwapRequest

    engine = Engine()
    a, b, c = (run(engine, RandomRequest(seed=s)).faces[0] for s in (11, 12, 13))
    direction = sorted(engine.directions)[0]
    jobs = [
        RenderRequest(face=a),
        RandomRequest(seed=5),
        BlendRequest(a=a, b=b, ratio=0.3),
        EditRequest(face=b, direction=direction, amount=2.0),
        EditRequest(face=c, direction=direction, strip=True),
        MixRequest(coarse=a, fine=c),
        SwapRequest(a=b, b=c),
        GridRequest(a=a, b=b, c=c, size=3),
        EditRequest(face=a, direction="no_such_direction"),
    ]
    alone = {job.id: run(engine, job) for job in jobs[:-1]}
    events: list = []
    queue_ = queue.Queue()
    for job in jobs:
        queue_.put((job.id, wire.dumps(job)))
    queue_.put(None)
    scheduler = Scheduler(engine, events.append, max_jobs=len(jobs))
    scheduler.serve(queue_)
    answers = {e.job_id: e for e in events if isinstance(e, (Result, JobFailed))}
    assert scheduler.most_drawn == len(jobs) - 1, "every job that draws was drawn in the same pass"
    assert isinstance(answers[jobs[-1].id], JobFailed) and answers[jobs[-1].id].code == "unknown_direction"
    for job in jobs[:-1]:
        got, want = answers[job.id], alone[job.id]
        assert isinstance(got, Result), got
        assert [f.name for f in got.files] == [f.name for f in want.files], job.kind
        for x, y in zip(got.files, want.files):  # 0 levels apart at every setting bench/numerics.py ran
            assert pixels_apart(x.data, y.data) <= 1, job.kind
        for x, y in zip(got.faces, want.faces):
            assert np.array_equal(x.ws, y.ws) and (x.noise is None) == (y.noise is None)
