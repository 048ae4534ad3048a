"""The bot's side of the engine: submit jobs, follow progress, get results, and keep
an engine process alive (restart it within seconds when it dies or hangs).

The transport is a pair of multiprocessing queues to one spawned worker process; the
objects on them are those of ``engine/jobs.py`` and nothing in the command layer knows
more than ``submit`` and the events it gets back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import multiprocessing as mp
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine import worker as engine_worker  # no torch at import time; the worker imports it inside
from engine.jobs import Job, JobFailed, Progress, Result, WorkerReady

log = logging.getLogger("wspace.engine_client")

ProgressCallback = Callable[[Progress], Awaitable[None] | None]


class QueueFull(Exception):
    pass


class EngineUnavailable(Exception):
    """No engine can take the job now."""


class ShuttingDown(EngineUnavailable):
    """The bot is stopping (SIGTERM, SIGINT, a deploy): the member should simply retry soon."""


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future
    on_progress: ProgressCallback | None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    crashes_seen: int = 0  # engine deaths while this job was waiting


class JobBook:
    """What every transport shares: the bounded book of pending jobs, their futures and
    progress callbacks, positions, and delivery of events (each job id resolves once)."""

    transport = "?"

    def __init__(self, queue_size: int = 32, job_timeout: float = 900.0) -> None:
        self.queue_size, self.job_timeout = queue_size, job_timeout
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.info: WorkerReady | None = None
        self.restarts = 0
        self.duplicates = 0  # answers for a job that already had one (at-least-once delivery)
        self.completed: deque[float] = deque(maxlen=10_000)
        self.process = None
        self._ready = asyncio.Event()

    async def wait_ready(self, timeout: float = 120.0) -> WorkerReady:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise EngineUnavailable("the engine did not start in time") from None
        return self.info

    def _book(self, job: Job, on_progress: ProgressCallback | None) -> asyncio.Future:
        if len(self.pending) >= self.queue_size:
            raise QueueFull()
        fut = asyncio.get_running_loop().create_future()
        self.pending[job.id] = _Pending(job, fut, on_progress)
        return fut

    def _deliver(self, event) -> None:
        p = self.pending.get(event.job_id)
        if p is None:
            if isinstance(event, (Result, JobFailed)):
                self.duplicates += 1
            return
        if isinstance(event, Progress):
            if event.step == 0 and p.started is None:
                p.started = time.monotonic()
            if p.on_progress is not None:
                outcome = p.on_progress(event)
                if asyncio.iscoroutine(outcome):
                    asyncio.ensure_future(outcome)
        elif isinstance(event, (Result, JobFailed)):
            del self.pending[event.job_id]
            self.completed.append(time.monotonic())
            if not p.future.done():
                p.future.set_result(event)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        p = self.pending.pop(job_id, None)
        if p is not None and not p.future.done():
            p.future.set_result(JobFailed(job_id, code, message))

    def hung_job(self) -> _Pending | None:
        running = next((p for p in self.pending.values() if p.started is not None), None)
        if running is not None and time.monotonic() - running.started > self.job_timeout:
            return running
        return None

    def position(self, job_id: str) -> int | None:
        """1 = being worked on (or next), 2 = one job ahead, …; None when not queued."""
        for i, job_id_ in enumerate(self.pending):
            if job_id_ == job_id:
                return i + 1
        return None

    async def run(self, job: Job, on_progress: ProgressCallback | None = None):
        return await self.submit(job, on_progress)

    def _stats(self) -> dict:
        now = time.monotonic()
        return {"transport": self.transport, "queued": len(self.pending), "queue_size": self.queue_size,
                "jobs_last_hour": sum(1 for t in self.completed if now - t < 3600), "restarts": self.restarts,
                "duplicates": self.duplicates, "model_id": self.info.model_id if self.info else None,
                "resolution": self.info.resolution if self.info else None,
                "directions": self.info.directions if self.info else []}


class EngineClient(JobBook):
    """The local transport: one spawned engine process on this machine."""

    transport = "local"

    def __init__(self, model=None, device: str = "cpu", directions=None, threads: int | None = None,
                 queue_size: int = 32, job_timeout: float = 900.0) -> None:
        super().__init__(queue_size, job_timeout)
        self.model, self.device, self.directions, self.threads = model, device, directions, threads
        self.ctx = mp.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task | None = None
        self._closing = False
        self._generation = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._spawn()
        self._watchdog = asyncio.create_task(self._watch(), name="engine-watchdog")
        if wait:
            await self.wait_ready(timeout)

    def _spawn(self) -> None:
        self._generation += 1
        self._ready.clear()
        self.job_q, self.event_q = self.ctx.Queue(), self.ctx.Queue()
        self.process = self.ctx.Process(
            target=engine_worker.serve, name="wspace-engine", daemon=True,
            args=(self.job_q, self.event_q, self.model, self.device, self.directions, self.threads, None, os.getpid()))
        self.process.start()
        gen, event_q = self._generation, self.event_q
        threading.Thread(target=self._read_events, args=(event_q, gen), daemon=True, name="engine-events").start()
        for p in self.pending.values():  # jobs still waiting go to the new process
            self.job_q.put(p.job)
        log.info("engine process %s started (generation %d)", self.process.pid, gen)

    async def close(self) -> None:
        self._closing = True
        if self._watchdog:
            self._watchdog.cancel()
        if self.process and self.process.is_alive():
            try:
                self.job_q.put(None)
            except Exception:
                pass
            await asyncio.to_thread(self.process.join, 5)
            if self.process.is_alive():
                self.process.kill()
        for p in list(self.pending.values()):
            if not p.future.done():
                p.future.set_exception(ShuttingDown("the bot is shutting down"))
        self.pending.clear()

    def _read_events(self, event_q, generation: int) -> None:
        while not self._closing and generation == self._generation:
            try:
                event = event_q.get(timeout=0.25)
            except queue.Empty:
                continue
            except (EOFError, OSError, ValueError):
                return
            if self._loop and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._dispatch, event, generation)

    def _dispatch(self, event, generation: int) -> None:
        if generation != self._generation:
            return  # a late event from a process that was replaced
        if isinstance(event, WorkerReady):
            self.info = event
            self._ready.set()
            log.info("engine ready: model %s, %d px, directions %s", event.model_id, event.resolution, event.directions)
            return
        self._deliver(event)

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.2)
            hung = self.hung_job()
            if self.process.is_alive() and not hung:
                continue
            if hung:
                log.error("job %s ran past %.0f s; restarting the engine", hung.job.id, self.job_timeout)
                self.process.kill()
            await asyncio.to_thread(self.process.join, 2)
            log.error("engine process died (exit code %s); restarting", self.process.exitcode)
            self._fail_running("The engine stopped while working on your request; it has restarted, please try again.")
            self.restarts += 1
            self._spawn()

    def _fail_running(self, message: str) -> None:
        """The job the dead process had taken fails; jobs not yet taken are kept, unless
        they have now seen two deaths (a job that kills the engine before it reports
        starting must not crash it forever)."""
        for job_id, p in list(self.pending.items()):
            p.crashes_seen += 1
            if p.started is not None or p.crashes_seen >= 2:
                del self.pending[job_id]
                if not p.future.done():
                    p.future.set_result(JobFailed(job_id, "engine_restarted", message))

    # --- jobs ------------------------------------------------------------------------------------

    def submit(self, job: Job, on_progress: ProgressCallback | None = None) -> asyncio.Future:
        """Queue a job; the future resolves to a ``Result`` or a ``JobFailed``."""
        fut = self._book(job, on_progress)
        self.job_q.put(job)
        return fut

    def stats(self) -> dict:
        return {**self._stats(), "alive": bool(self.process and self.process.is_alive()),
                "pid": self.process.pid if self.process else None, "device": self.device, "workers": []}


def make_engine_client(engine, limits) -> JobBook:
    """The transport the config asks for (``engine`` and ``limits`` are the config sections)."""
    if engine.transport == "redis":
        from bot.redis_client import RedisEngineClient

        return RedisEngineClient(engine.redis_url, limits.queue_size, engine.job_timeout_seconds, engine.redis_prefix)
    return EngineClient(str(engine.model) if engine.model else None, engine.device,
                        str(engine.directions) if engine.directions else None, engine.threads,
                        limits.queue_size, engine.job_timeout_seconds)
