"""The local transport: one spawned engine process on this machine, restarted within
seconds when it dies or hangs.

An engine that batches cannot say which of its jobs killed it. So after a death every job
the dead engine held is run again once, alone, one at a time in arrival order, before any
new work: the job that kills the engine again fails alone (a job present at two deaths
ends with one sentence), and the others complete. New jobs wait until those reruns are done.

Requests go to the process as wire bytes (``engine/protocol/wire.py``) on a
multiprocessing queue and events come back the same way. The process is started from
:func:`_engine_main`, which imports the engine only inside the child: this module, like
every module of the bot, imports no engine code but the protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque

from bot.transport.base import EngineUnavailable, ProgressCallback, ShuttingDown, Transport
from bot.transport.pidfile import EngineRegistry
from engine.protocol import EngineRestarted, JobFailed, Progress, Request, Rerun, Result, Started, WorkerReady, wire
from engine.protocol.errors import ENGINE_CANNOT_START
from engine.protocol.spec import EngineSpec

log = logging.getLogger("wspace.transport")

DIED_TWICE = "The engine stopped twice while working on your request, so I did not run it again."
TOO_LONG = "That took far too long and was stopped; try again."
MAX_START_FAILURES = 3  # deaths in a row before the engine was ever ready: stop restarting it
CANNOT_START = "The face engine cannot start right now; the server's admins have been told."


def _engine_main(spec: EngineSpec, job_q, event_q, stop_q) -> None:
    """The child process: the engine's declared entry point (torch is imported here, never in the bot)."""
    from engine.cli.entry import serve_local

    serve_local(spec, job_q, event_q, stop_q)


class LocalTransport(Transport):
    """The local transport: one spawned engine process on this machine."""

    transport = "local"

    def __init__(self, spec: EngineSpec | None = None, queue_size: int = 32, job_timeout: float = 900.0,
                 registry: EngineRegistry | None = None) -> None:
        super().__init__(queue_size, job_timeout)
        self.registry = registry  # records each engine process, so a later bot can end what we leave
        self.spec = spec or EngineSpec()  # the engine each spawned process runs (its pid added at the spawn)
        self.ctx = mp.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task | None = None
        self._closing = False
        self._generation = 0
        self._solo: deque[str] = deque()  # jobs a dead engine held, to run again one at a time
        self._held: deque[str] = deque()  # jobs waiting for those reruns before they go to the engine
        self.start_failures = 0  # engine deaths in a row before it was ready
        self.broken: str | None = None  # why the engine is no longer restarted (its model cannot load)
        self._gave_up = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._spawn()
        self._watchdog = asyncio.create_task(self._watch(), name="engine-watchdog")
        if wait:
            await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 120.0) -> WorkerReady:
        """Ready, or :class:`EngineUnavailable` at once when the engine cannot start at all."""
        ready, gave_up = asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._gave_up.wait())
        try:
            await asyncio.wait({ready, gave_up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel(), gave_up.cancel()
        if self.broken:
            raise EngineUnavailable(self.broken)
        if not self._ready.is_set():
            raise EngineUnavailable("the engine did not start in time")
        return self.info

    def _spawn(self) -> None:
        self._generation += 1
        self._ready.clear()
        self.job_q, self.event_q, self.stop_q = self.ctx.Queue(), self.ctx.Queue(), self.ctx.Queue()
        spec = dataclasses.replace(self.spec, parent_pid=os.getpid())
        self.process = self.ctx.Process(target=_engine_main, name="wspace-engine", daemon=True,
                                        args=(spec, self.job_q, self.event_q, self.stop_q))
        self.process.start()
        if self.registry is not None:
            self.registry.add(self.process.pid)
        gen, event_q = self._generation, self.event_q
        threading.Thread(target=self._read_events, args=(event_q, gen), daemon=True, name="engine-events").start()
        self._pump()
        log.info("engine process %s started (generation %d)", self.process.pid, gen)

    async def close(self) -> None:
        self._closing = True
        if self._watchdog:
            self._watchdog.cancel()
        if self.process and self.process.is_alive():
            try:
                self.job_q.put(None)
            except Exception:  # noqa: BLE001 (the queue may already be closed with a dead engine)
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
                expect = (Started, Progress, Result, JobFailed, WorkerReady)
                event = wire.loads(event, expect=expect) if isinstance(event, bytes) else None
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
            self.start_failures = 0
            self._ready.set()
            log.info("engine ready: model %s, %d px, directions %s", event.model_id, event.resolution, event.directions)
            return
        self._deliver(event)
        if isinstance(event, (Result, JobFailed)):
            self._pump()

    def _running_too_long(self):
        """The job the engine is on, when it has run past ``job_timeout`` (one engine process: a
        restart ends every job in it; the Redis transport's ``hung_jobs`` also counts jobs never
        taken, since there a job waits for any of several workers)."""
        running = next((p for p in self.pending.values() if p.started is not None), None)
        if running is not None and time.monotonic() - running.started > self.job_timeout:
            return running
        return None

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.2)
            hung = self._running_too_long()
            if self.process.is_alive() and not hung:
                continue
            if hung:
                log.error("job %s ran past %.0f s; restarting the engine", hung.job.id, self.job_timeout)
                self.process.kill()
                self._fail(hung.job.id, EngineRestarted.code, TOO_LONG)
                self.failed_after_restart += 1
            await asyncio.to_thread(self.process.join, 2)
            if self.registry is not None:
                self.registry.remove(self.process.pid)
            if not self._ready.is_set():
                self.start_failures += 1
            if self.process.exitcode == ENGINE_CANNOT_START or self.start_failures >= MAX_START_FAILURES:
                self._give_up()
                return
            log.error("engine process died (exit code %s); restarting", self.process.exitcode)
            self._after_death()
            self.restarts += 1
            self._spawn()

    def _give_up(self) -> None:
        """The engine dies before it is ready (its model, directions or encoder cannot be loaded):
        restarting cannot help. Tell the admin once (the engine's own line says why), fail what
        waits, and refuse new jobs until the config is fixed (``/wspace reload``)."""
        code = self.process.exitcode
        self.broken = (
            f"the engine cannot start (exit status {code}"
            f"{', its model could not be loaded' if code == ENGINE_CANNOT_START else ''}); check "
            "engine.model, engine.directions and engine.encoder, then run /wspace reload or restart the bot"
        )
        log.error("%s", self.broken)
        for job_id in list(self.pending):
            self._fail(job_id, "engine_unavailable", CANNOT_START)
        self._gave_up.set()

    def _after_death(self) -> None:
        """Every job the dead engine held is run again alone, once: one that was held at an
        earlier death too fails (it is the likeliest killer), the others queue for a solo
        rerun in arrival order and their members hear so. Jobs never sent keep waiting."""
        rerun = []
        for job_id, p in list(self.pending.items()):
            if not p.in_engine:
                continue
            p.in_engine, p.started = False, None
            p.crashes_seen += 1
            if job_id in self._solo:
                self._solo.remove(job_id)
            if p.crashes_seen >= 2:
                log.error("job %s was in the engine at two deaths; it fails", job_id)
                self._fail(job_id, EngineRestarted.code, DIED_TWICE)
                self.failed_after_restart += 1
                continue
            rerun.append(job_id)
            self.rerun_after_restart += 1
            self._notify(p, Rerun(job_id))
        self._solo.extend(rerun)
        self._held = deque(j for j in self._held if j not in rerun)

    def _send(self, job_id: str, data: bytes | None = None) -> None:
        p = self.pending[job_id]
        p.in_engine = True
        self.job_q.put((job_id, data if data is not None else wire.dumps(p.job)))

    def _pump(self) -> None:
        """Send what may go to the engine now: the next solo rerun once nothing else is in the
        engine, else (no rerun left) every held job."""
        self._solo = deque(j for j in self._solo if j in self.pending)
        self._held = deque(j for j in self._held if j in self.pending)
        if any(p.in_engine for p in self.pending.values()):
            return
        if self._solo:
            self._send(self._solo.popleft())
            return
        while self._held:
            self._send(self._held.popleft())

    # --- jobs ------------------------------------------------------------------------------------

    def submit(self, job: Request, on_progress: ProgressCallback | None = None) -> asyncio.Future:
        """Queue a job; the future resolves to a ``Result`` or a ``JobFailed``."""
        if self.broken:
            raise EngineUnavailable(self.broken)
        data = wire.dumps(job)  # a job the wire refuses is refused here, before it is booked
        fut = self._book(job, on_progress)
        if self._solo or any(p.in_engine and p.crashes_seen for p in self.pending.values()):
            self._held.append(job.id)  # reruns after an engine death go first
        else:
            self._send(job.id, data)
        return fut

    def _tell_stop(self, job_id: str) -> None:
        self._pump()  # a stopped rerun lets the next one go
        try:
            self.stop_q.put(job_id)
        except (OSError, ValueError) as exc:  # the process is being replaced: the job went with it
            log.info("could not tell the engine to stop job %s: %s", job_id, exc)

    def stats(self) -> dict:
        return {
            **self._stats(),
            "alive": bool(self.process and self.process.is_alive()),
            "pid": self.process.pid if self.process else None,
            "device": self.spec.device,
            "workers": [],
            "problem": self.broken,
        }

