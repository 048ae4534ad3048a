"""The engine process: load the model once, run jobs, never die on a bad job.

Reads :class:`~engine.jobs.Job` objects from one queue and writes events (ready,
progress, result, failure) to another. ``None`` on the job queue stops it.
"""

from __future__ import annotations

import logging
import os
import traceback
import uuid

from engine.errors import UserError
from engine.jobs import Job, JobFailed, Progress, WorkerReady

log = logging.getLogger("wspace.engine")


def run_job(engine, job: Job, emit) -> None:
    """Run one job, emitting its events; any failure becomes a :class:`JobFailed`."""
    try:
        if not isinstance(job, Job):
            raise TypeError(f"not a job: {type(job).__name__}")
        emit(Progress(job.id, 0, 0, "started"))
        emit(engine.run(job, emit))
    except UserError as exc:
        log.info("job %s (%s) refused: %s %s", getattr(job, "id", "?"), getattr(job, "kind", "?"), exc, exc.details or "")
        emit(JobFailed(job.id, exc.code, str(exc)))
    except Exception as exc:  # a bug, or a hostile input we did not foresee: keep serving
        detail = traceback.format_exc()
        log.error("job %s failed:\n%s", getattr(job, "id", "?"), detail)
        emit(JobFailed(getattr(job, "id", "?"), "internal", f"{type(exc).__name__}", detail))


def serve(job_queue, event_queue, model_path=None, device: str = "cpu", directions_path=None,
          threads: int | None = None, worker_id: str | None = None, parent_pid: int | None = None) -> None:
    """Process entry point (spawned by the bot's engine client). With ``parent_pid`` the
    process dies with the bot, whatever kills the bot."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    from engine.runtime import die_with_parent, prepare_process

    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the bot decides, then stops us

    prepare_process(threads)
    from engine.ops import Engine

    engine = Engine(model_path, device, directions_path)
    event_queue.put(WorkerReady(worker_id or uuid.uuid4().hex[:8], engine.model_id, engine.G.resolution,
                                engine.G.num_ws, engine.G.w_dim, sorted(engine.directions), device, os.getpid()))
    while True:
        job = job_queue.get()
        if job is None:
            break
        run_job(engine, job, event_queue.put)
