"""The engine process: load the model once, run jobs, never die on a bad job.

Reads requests as wire bytes (``engine/protocol/wire.py``: data only, never a pickle)
from one queue and writes events (ready, progress, result, failure) as wire bytes to
another. ``None`` on the job queue stops it. The ids of jobs their members stopped come
on a third queue (engine/serving/stops.py).
"""

from __future__ import annotations

import logging
import os
import uuid

from engine.protocol import JobFailed, WorkerReady, wire
from engine.protocol.errors import ENGINE_CANNOT_START
from engine.protocol.spec import EngineSpec

log = logging.getLogger("wspace.engine")
ENGINE_NICENESS = 19  # a local engine runs at lower CPU priority than its bot (docs/benchmarks.md)


def encoded(put):
    """An ``emit`` that puts each event on a queue as wire bytes."""
    def emit(event) -> None:
        try:
            put(wire.dumps(event))
        except wire.WireError as exc:  # e.g. a result over the size cap: the member still gets an answer
            put(wire.dumps(JobFailed(event.job_id, "internal", "The answer was too large to send.", str(exc))))
    return emit


def serve(spec: EngineSpec, job_queue, event_queue, stop_queue=None) -> None:
    """Process entry point (spawned by the bot's local transport). With ``spec.parent_pid`` the
    process dies with the bot, whatever kills the bot. Up to ``spec.batch`` jobs run at once
    and their projections advance as one batch (engine/serving/scheduler.py); 1 is one at a time."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    from engine.model.runtime import die_with_parent, prepare_process

    if spec.parent_pid is not None:
        die_with_parent(spec.parent_pid)
        # The bot beside us must acknowledge every interaction within 3 s (and in well under
        # 250 ms); a batching engine keeps every core busy, so it yields to the bot.
        os.nice(ENGINE_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the bot decides, then stops us

    prepare_process(spec.threads)
    from engine.jobs.engine import Engine

    try:
        engine = Engine.of(spec)
    except Exception as exc:  # noqa: BLE001 (the model, its directions or encoder cannot be loaded: no restart will help)
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        log.error("the engine cannot start: %s", message)
        logging.shutdown()
        os._exit(ENGINE_CANNOT_START)
    emit = encoded(event_queue.put)
    emit(WorkerReady(spec.worker_id or uuid.uuid4().hex[:8], engine.model_id, engine.G.resolution, engine.G.num_ws,
                     engine.G.w_dim, tuple(sorted(engine.directions)), spec.device, os.getpid()))
    from engine.serving.scheduler import Scheduler
    from engine.serving.stops import StopList, drain

    stops = StopList(drain(stop_queue)) if stop_queue is not None else None
    Scheduler(engine, emit, max(1, spec.batch), stops).serve(job_queue)
