"""The local transport: one spawned engine process on this machine, restarted within
seconds when it dies or hangs.

Requests go to the process as wire bytes (``engine/protocol/wire.py``) on a
multiprocessing queue and events come back the same way. The process is started from
:func:`_engine_main`, which imports the engine only inside the child: this module, like
every module of the bot, imports no engine code but the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import os
import multiprocessing as mp
import queue
import threading

from bot.transport.base import ProgressCallback, ShuttingDown, Transport
from bot.transport.pidfile import EngineRegistry
from engine.protocol import JobFailed, Progress, Request, Result, WorkerReady, wire

log = logging.getLogger("wspace.transport")


def _engine_main(*args) -> None:
    """The child process: run the engine worker (torch is imported here, never in the bot)."""
    import importlib

    importlib.import_module("engine.worker").serve(*args)


class LocalTransport(Transport):
    """The local transport: one spawned engine process on this machine."""

    transport = "local"

    def __init__(self, model=None, device: str = "cpu", directions=None, threads: int | None = None,
                 queue_size: int = 32, job_timeout: float = 900.0, registry: EngineRegistry | None = None,
                 batch: int = 1) -> None:
        super().__init__(queue_size, job_timeout)
        self.registry = registry  # records each engine process, so a later bot can end what we leave
        self.model, self.device, self.directions, self.threads = model, device, directions, threads
        self.batch = batch  # jobs the engine works on at once (engine/scheduler.py)
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
        self.job_q, self.event_q, self.stop_q = self.ctx.Queue(), self.ctx.Queue(), self.ctx.Queue()
        self.process = self.ctx.Process(
            target=_engine_main, name="wspace-engine", daemon=True,
            args=(self.job_q, self.event_q, self.model, self.device, self.directions, self.threads, None, os.getpid(),
                  self.batch, self.stop_q))
        self.process.start()
        if self.registry is not None:
            self.registry.add(self.process.pid)
        gen, event_q = self._generation, self.event_q
        threading.Thread(target=self._read_events, args=(event_q, gen), daemon=True, name="engine-events").start()
        for p in self.pending.values():  # jobs still waiting go to the new process
            self.job_q.put((p.job.id, wire.dumps(p.job)))
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
        if self.registry is not None and self.process is not None:
            self.registry.remove(self.process.pid)
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
            try:
                event = wire.loads(event, expect=(Progress, Result, JobFailed, WorkerReady)) if isinstance(event, bytes) else None
            except wire.WireError as exc:
                log.error("unreadable event from the engine: %s", exc)
                continue
            if event is None:
                continue
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
            if self.registry is not None:
                self.registry.remove(self.process.pid)
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

    def submit(self, job: Request, on_progress: ProgressCallback | None = None) -> asyncio.Future:
        """Queue a job; the future resolves to a ``Result`` or a ``JobFailed``."""
        data = wire.dumps(job)
        fut = self._book(job, on_progress)
        self.job_q.put((job.id, data))
        return fut

    def _tell_stop(self, job_id: str) -> None:
        try:
            self.stop_q.put(job_id)
        except (OSError, ValueError) as exc:  # the process is being replaced: the job went with it
            log.info("could not tell the engine to stop job %s: %s", job_id, exc)

    def stats(self) -> dict:
        return {**self._stats(), "alive": bool(self.process and self.process.is_alive()),
                "pid": self.process.pid if self.process else None, "device": self.device, "workers": []}


