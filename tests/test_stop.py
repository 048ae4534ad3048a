"""Stopping a job: the engine gives up on it before its next step (or never starts it), the
other members' jobs carry on unchanged, and the bot's transport answers the member at once."""

from __future__ import annotations

import asyncio
import queue

from bot.transport.local import LocalTransport
from engine.jobs.dispatch import run
from engine.protocol import JobFailed, MorphRequest, Progress, ProjectRequest, RandomRequest, Result, Stopped, wire
from engine.protocol.spec import EngineSpec
from engine.serving.scheduler import Scheduler
from engine.serving.stops import StopList, drain
from tests.closeness import same_kept_face
from tests.photos import astronaut, encode, grace_hopper


def test_the_scheduler_stops_what_was_stopped_and_nothing_else(tiny_model):
    from engine.jobs.engine import Engine

    engine = Engine(tiny_model)
    faces = [run(engine, RandomRequest(seed=s)).faces[0] for s in (1, 2)]
    long = ProjectRequest(image=encode(astronaut(), "JPEG"), steps=400)
    other = ProjectRequest(image=encode(grace_hopper(), "JPEG"), steps=12)
    never = ProjectRequest(image=encode(astronaut(), "JPEG"), steps=12)
    morph = MorphRequest(faces=tuple(faces), frames=96)
    stopped: list[str] = [never.id]  # stopped while it waited in the queue
    events: list = []

    def emit(event):
        events.append(event)
        if isinstance(event, Progress) and event.step >= 3 and event.job_id in (long.id, morph.id):
            stopped.append(event.job_id)  # the member presses Stop once the job is under way

    def fetch(_asked):
        out = list(stopped)
        stopped.clear()
        return out

    jobs = queue.Queue()
    for job in (long, other, never, morph):
        jobs.put((job.id, wire.dumps(job)))
    jobs.put(None)
    Scheduler(engine, emit, max_jobs=4, stops=StopList(fetch)).serve(jobs)

    answers = {e.job_id: e for e in events if isinstance(e, (Result, JobFailed))}
    for job in (long, never, morph):
        assert isinstance(answers[job.id], JobFailed) and answers[job.id].code == Stopped.code, answers[job.id]
    steps = [e.step for e in events if isinstance(e, Progress) and e.job_id == long.id]
    assert max(steps) < long.steps // 4, "the stopped projection ran on"
    assert not [e for e in events if isinstance(e, Progress) and e.job_id == never.id], "a stopped job never starts"
    frames = [e.step for e in events if isinstance(e, Progress) and e.job_id == morph.id]
    assert max(frames) < morph.frames
    alone = run(engine, other)  # the member beside them got their face (up to a batch's rounding)
    same_kept_face(answers[other.id].faces[0], alone.faces[0])


def test_a_stop_list_keeps_only_well_formed_ids_and_a_bounded_number():
    heard = ["0123456789ab", "not an id", b"ffffffffffff", *[f"{i:012x}" for i in range(6)], "ffffffffffff"]
    stops = StopList(lambda asked: heard, keep=7)
    assert stops.which(["0123456789ab", "ffffffffffff"]) == {"ffffffffffff"}  # the first fell out of the 7 kept
    assert stops.which([f"{5:012x}", "not an id"]) == {f"{5:012x}"}
    assert len(stops.ids) == 7


def test_drain_reads_a_stop_queue_without_waiting():
    q = queue.Queue()
    for job_id in ("0123456789ab", "ba9876543210"):
        q.put(job_id)
    assert drain(q)([]) == ["0123456789ab", "ba9876543210"]
    assert drain(q)([]) == []


def test_the_local_transport_answers_at_once_and_the_engine_gives_up():
    """A serial engine: the long projection must stop for the next job to run, and the job
    stopped while it waited never runs; both are confirmed by the engine itself."""
    async def main():
        engine = LocalTransport(EngineSpec(threads=2, batch=1))
        await engine.start(timeout=300)
        try:
            started = asyncio.Event()

            def progress(event):
                if event.step >= 1:
                    started.set()

            photo = encode(grace_hopper(), "JPEG")
            first, second = ProjectRequest(image=photo, steps=2000), ProjectRequest(image=photo, steps=2000)
            running, waiting = engine.submit(first, progress), engine.submit(second)
            await asyncio.wait_for(started.wait(), 120)
            assert engine.position(second.id) == 2
            assert engine.cancel(second.id, "Stopped, as you asked.")
            assert engine.cancel(first.id, "Stopped, as you asked.")
            assert not engine.cancel(first.id, "again"), "a job is stopped once"
            answers = [running.result(), waiting.result()]  # resolved already: no await
            after = await asyncio.wait_for(engine.submit(RandomRequest(seed=4)), 300)
            return answers, after, engine.stops_confirmed, engine.duplicates
        finally:
            await engine.close()

    answers, after, confirmed, duplicates = asyncio.run(main())
    assert all(isinstance(a, JobFailed) and a.code == Stopped.code and a.message == "Stopped, as you asked."
               for a in answers)
    assert isinstance(after, Result)
    assert confirmed == 2 and duplicates == 0
