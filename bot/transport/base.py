"""What every transport shares, and the interface the command layer sees.

A transport carries :mod:`engine.protocol` requests to an engine and brings back its
events; commands know only :class:`Transport`: ``start``, ``submit``, ``cancel``,
``position``, ``stats``, ``close``. ``local.py`` spawns one engine process here;
``redis_streams.py`` feeds workers on any host. Both encode with :mod:`engine.protocol.wire` (data only).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine.protocol import Event, JobFailed, Progress, Request, Rerun, Result, Started, Stopped, WorkerReady

ProgressCallback = Callable[[Progress | Started | Rerun], Awaitable[None] | None]  # a job's signals before its answer
RERUN = "The engine restarted; running your job again."  # what a member hears when their job is rerun
STOPPED_KEPT = 4096  # ids of stopped jobs remembered, so their late answers are not duplicates


class QueueFull(Exception):
    pass


class EngineUnavailable(Exception):
    """No engine can take the job now."""


class ShuttingDown(EngineUnavailable):
    """The bot is stopping (SIGTERM, SIGINT, a deploy): the member should simply retry soon."""


@dataclass
class _Pending:
    job: Request
    future: asyncio.Future
    on_progress: ProgressCallback | None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    crashes_seen: int = 0  # engine deaths while the engine held this job
    in_engine: bool = False  # sent to the engine that runs now (not held back by a solo retry)


class Transport(ABC):
    """The bounded book of pending jobs every transport keeps (their futures, progress
    callbacks and positions; each job id resolves once), and the interface commands use."""

    transport = "?"

    def __init__(self, queue_size: int = 32, job_timeout: float = 900.0) -> None:
        self.queue_size, self.job_timeout = queue_size, job_timeout
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.info: WorkerReady | None = None
        self.restarts = 0
        self.rerun_after_restart = 0  # jobs an engine death interrupted, run again alone
        self.failed_after_restart = 0  # jobs that ended because an engine died while holding them
        self.duplicates = 0  # answers for a job that already had one (at-least-once delivery)
        self.completed: deque[float] = deque(maxlen=10_000)
        self.stopped: OrderedDict[str, None] = OrderedDict()  # jobs cancelled here (their late events are dropped)
        self.stops_confirmed = 0  # of those, the ones the engine answered as stopped
        self.process = None
        self._ready = asyncio.Event()

    async def wait_ready(self, timeout: float = 120.0) -> WorkerReady:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise EngineUnavailable("the engine did not start in time") from None
        return self.info

    def full(self) -> bool:
        """No room for another job now (``submit`` would raise :class:`QueueFull`)."""
        return len(self.pending) >= self.queue_size

    def _book(self, job: Request, on_progress: ProgressCallback | None) -> asyncio.Future:
        if self.full():
            raise QueueFull()
        fut = asyncio.get_running_loop().create_future()
        self.pending[job.id] = _Pending(job, fut, on_progress)
        return fut

    def _deliver(self, event: Event) -> None:
        p = self.pending.get(event.job_id)
        if p is None:
            if event.job_id in self.stopped:
                self.stops_confirmed += isinstance(event, JobFailed) and event.code == Stopped.code
            elif isinstance(event, (Result, JobFailed)):
                self.duplicates += 1
            return
        if isinstance(event, (Started, Progress)):
            if isinstance(event, Started) and p.started is None:
                p.started = time.monotonic()
            self._notify(p, event)
        elif isinstance(event, (Result, JobFailed)):
            del self.pending[event.job_id]
            self.completed.append(time.monotonic())
            if not p.future.done():
                p.future.set_result(event)

    @staticmethod
    def _notify(p: _Pending, event: Progress | Started | Rerun) -> None:
        """Hand a progress event to the job's callback (a coroutine runs as a task)."""
        if p.on_progress is not None:
            outcome = p.on_progress(event)
            if asyncio.iscoroutine(outcome):
                asyncio.ensure_future(outcome)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        p = self.pending.pop(job_id, None)
        if p is not None and not p.future.done():
            p.future.set_result(JobFailed(job_id, code, message))

    def cancel(self, job_id: str, sentence: str) -> bool:
        """Stop a pending job: its future resolves now to a ``JobFailed`` ("cancelled",
        ``sentence``) and the engine is told to drop it (it gives up before its next step).
        False when the job is not pending here (it has answered already)."""
        p = self.pending.pop(job_id, None)
        if p is None:
            return False
        self.stopped[job_id] = None
        while len(self.stopped) > STOPPED_KEPT:
            self.stopped.popitem(last=False)
        if not p.future.done():
            p.future.set_result(JobFailed(job_id, Stopped.code, sentence))
        self._tell_stop(job_id)
        return True

    def _tell_stop(self, job_id: str) -> None:
        """Tell the engine(s) that ``job_id`` was stopped (best effort: its answer is dropped anyway)."""

    def hung_jobs(self) -> list[_Pending]:
        """Jobs past their time: running for longer than ``job_timeout``, or never started after
        twice that (an engine that took them and went silent), so none holds the queue for good."""
        now = time.monotonic()
        return [p for p in self.pending.values()
                if (now - p.started > self.job_timeout if p.started is not None
                    else now - p.submitted > 2 * self.job_timeout)]

    def position(self, job_id: str) -> int | None:
        """1 = being worked on (or next), 2 = one job ahead, …; None when not queued. Jobs the
        engine has started (several at once when it batches) are all at 1."""
        waiting_ahead, running = 0, False
        for job_id_, p in self.pending.items():
            if job_id_ == job_id:
                return 1 if p.started is not None else 1 + waiting_ahead + running
            if p.started is None:
                waiting_ahead += 1
            else:
                running = True
        return None

    async def run(self, job: Request, on_progress: ProgressCallback | None = None) -> Result | JobFailed:
        return await self.submit(job, on_progress)

    # --- the interface ---------------------------------------------------------------------------

    @abstractmethod
    async def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        """Connect (or spawn) and, with ``wait``, return once an engine is ready."""

    @abstractmethod
    def submit(self, job: Request, on_progress: ProgressCallback | None = None) -> asyncio.Future:
        """Queue a job; the future resolves to a ``Result`` or a ``JobFailed``. Raises
        :class:`QueueFull` or :class:`EngineUnavailable` when it cannot be queued."""

    @abstractmethod
    async def close(self) -> None:
        """Stop; every job still pending ends with :class:`ShuttingDown`."""

    @abstractmethod
    def stats(self) -> dict:
        """Figures for /wspace stats."""

    def _stats(self) -> dict:
        now = time.monotonic()
        return {
            "transport": self.transport,
            "queued": len(self.pending),
            "queue_size": self.queue_size,
            "jobs_last_hour": sum(1 for t in self.completed if now - t < 3600),
            "restarts": self.restarts,
            "rerun_after_restart": self.rerun_after_restart,
            "failed_after_restart": self.failed_after_restart,
            "duplicates": self.duplicates,
            "model_id": self.info.model_id if self.info else None,
            "resolution": self.info.resolution if self.info else None,
            "directions": list(self.info.directions) if self.info else [],
        }
