"""Several members' jobs at once: their projections advance together in one batch.

A handler that projects or draws is a generator (:func:`engine.jobs.handlers.project_aligned`):
it yields each projection it needs, or the faces it wants drawn (a
:class:`~engine.jobs.asks.Draw`), and is sent the result. :func:`engine.jobs.dispatch.run` drives one alone;
the :class:`Scheduler` drives up to ``max_jobs`` of them together, in this one thread.
Between two steps of the shared :class:`~engine.latent.batch.ProjectionBatch` it takes the jobs
that arrived; the faces they ask for (a render, an edit, a blend) are drawn together, one
forward pass for all of them, and a projection joins the batch at the next step. When a
member's projection is done, its job carries on to its next projection or its result.
A job the member stopped (engine/serving/stops.py) is answered as stopped before the next step.

One thread, not one per job: torch's CPU thread pool is per calling thread, and on a
machine with as many threads as cores a second pool made every projection 1.8× slower
(measured); dlib is not thread-safe either. A member's projection is the same alone or in
a batch (engine/latent/batch.py). A job that fails fails alone: its error becomes its answer, and
the batch goes on without it.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import queue
import traceback

from engine.jobs import dispatch
from engine.jobs.answers import failure, read_request
from engine.jobs.asks import Draw
from engine.latent.batch import Member
from engine.model import host
from engine.protocol import Request, Started, Stopped
from engine.serving.stops import STOPPED, StopList

log = logging.getLogger("wspace.engine")


class _Job:
    arrivals = itertools.count()

    def __init__(self, request: Request, steps, emit, on_answer) -> None:
        self.born = next(self.arrivals)  # newer jobs take their turn first in a drawing round
        self.request, self.steps = request, steps  # steps: the handler's generator
        self.emit, self.on_answer = emit, on_answer  # where its events go; called once it has answered
        self.asked: list[Member] = []  # the projections it waits for (several: a /team photo's faces)
        self.as_list = False
        self.done: dict[int, object] = {}


class Scheduler:
    def __init__(self, engine, emit, max_jobs: int, stops: StopList | None = None) -> None:
        self.engine, self.emit, self.max_jobs, self.stops = engine, emit, max_jobs, stops
        self.batch = engine.new_batch()
        self.jobs: dict[int, _Job] = {}  # id(member) -> the job waiting for it
        self.draws: list[tuple[_Job, Draw]] = []  # jobs waiting for faces to be drawn, with what they asked
        self.most = 0  # the most members one step has carried
        self.most_drawn = 0  # the most jobs one drawing pass has served

    # --- jobs ----------------------------------------------------------------------------------

    def take(self, job_id: str, data: bytes) -> None:
        """Start one job from its wire bytes (the local engine's queue)."""
        request = read_request(data, job_id, self.emit)
        if request is not None:
            self.start(request, self.emit)

    def start(self, request: Request, emit, on_answer=None) -> None:
        """Start one job: run it to its result, or to its first projection. Its events go to
        ``emit``; ``on_answer()`` is called once its result or failure has been emitted."""
        job = _Job(request, None, emit, on_answer)
        try:
            if self.stops is not None:
                self.stops.check(request.id, fresh=True)
            emit(Started(request.id))
            out = dispatch.start(self.engine, request, self._reporter(request.id, emit))
        except Exception as exc:  # noqa: BLE001 (its answer, not our crash)
            self._answer(job, failure(request, exc))
            return
        if inspect.isgenerator(out):
            job.steps = out
            self._advance(job, None)
        else:
            self._answer(job, dispatch.finish(self.engine, request, out))

    def _reporter(self, job_id: str, emit):
        """The job's progress: emitted, then a stopped job stops there (a long job with no
        projection, e.g. a morph's frames, stops at its next report)."""
        if self.stops is None:
            return emit

        def report(event) -> None:
            emit(event)
            self.stops.check(job_id)
        return report

    def _answer(self, job: _Job, event) -> None:
        job.emit(event)
        if job.on_answer is not None:
            job.on_answer()

    def _advance(self, job: _Job, answer) -> None:
        """Send a job what it waited for; it asks for its next projection(s) or answers."""
        try:
            ask = job.steps.send(answer) if answer is not None else next(job.steps)
            if isinstance(ask, Draw):
                job.asked, job.as_list, job.done = [], False, {}
                self.draws.append((job, ask))
                return
            job.as_list, job.done = isinstance(ask, list), {}
            job.asked = ask if job.as_list else [ask]
            for member in job.asked:
                member.progress = _guarded(member.progress)
                self.batch.add(member)
                self.jobs[id(member)] = job
        except StopIteration as done:
            self._answer(job, dispatch.finish(self.engine, job.request, done.value))
        except Exception as exc:  # noqa: BLE001
            self._fail(job, exc)

    def _finished(self, member: Member, projection) -> None:
        job = self.jobs.pop(id(member))
        job.done[id(member)] = projection
        if len(job.done) == len(job.asked):
            answers = [job.done[id(m)] for m in job.asked]
            self._advance(job, answers if job.as_list else answers[0])

    def _fail(self, job: _Job, exc: BaseException) -> None:
        """The job answers with its error; its other projections leave the batch."""
        for member in job.asked:
            if self.jobs.pop(id(member), None) is not None and any(m is member for m in self.batch.members):
                self.batch.remove(member)
        job.steps.close()
        self._answer(job, failure(job.request, exc))

    # --- the loop ------------------------------------------------------------------------------

    def _stop_stopped(self) -> None:
        """Jobs their members stopped answer so now; their projections leave the batch."""
        jobs = list({id(j): j for j in self.jobs.values()}.values())
        gone = self.stops.which(j.request.id for j in jobs) if self.stops is not None and jobs else ()
        for job in jobs:
            if job.request.id in gone:
                self._fail(job, Stopped(STOPPED))

    def _draw(self) -> None:
        """Every job waiting for faces gets them, all drawn together (a job whose draw fails
        when they are drawn one by one fails alone). One round a step: what a job asks next
        waits for the next step, so a long job (a morph's frames, a search's populations)
        takes its turns between the other members' steps instead of holding the thread. An ask
        marked ``alone`` is drawn by itself (a search whose path must not depend on who else
        is served)."""
        waiting, self.draws = self.draws, []
        if not waiting:
            return
        self.most_drawn = max(self.most_drawn, len(waiting))
        shared = [k for k, (_, ask) in enumerate(waiting) if not ask.alone]
        try:
            images = dict(zip(shared, self.engine.draw_all([waiting[k][1] for k in shared])))
        except Exception:  # noqa: BLE001 (found out below, job by job)
            images = {}
        for k in sorted(range(len(waiting)), key=lambda k: -waiting[k][0].born):  # newest first: likely the shortest
            job, ask = waiting[k]
            try:
                drawn = images[k] if k in images else self.engine.draw_all([ask])[0]
            except Exception as exc:  # noqa: BLE001
                self._fail(job, exc)
                continue
            self._advance(job, drawn)

    def busy(self) -> bool:
        """Work in hand: projections in the batch or faces to draw."""
        return bool(len(self.batch) or self.draws)

    def step(self) -> None:
        """Draw what jobs asked to be drawn, then one step of every waiting projection;
        finished ones go back to their jobs."""
        host.working()
        self._stop_stopped()
        self._draw()
        if not len(self.batch):
            return
        self.most = max(self.most, len(self.batch))
        try:
            finished = self.batch.step()
        except Exception as exc:  # noqa: BLE001 (a bug in a step: its members' jobs are told, we serve on)
            log.error("projection batch failed:\n%s", traceback.format_exc())
            for job in {id(j): j for j in self.jobs.values()}.values():
                self._fail(job, exc)
            return
        for member, projection in finished:
            if id(member) not in self.jobs:
                continue  # its job already failed
            if member.progress.failure is not None:
                self._fail(self.jobs[id(member)], member.progress.failure)
            else:
                self._finished(member, projection)
        for member in [m for m in self.batch.members if m.progress.failure is not None]:
            if id(member) in self.jobs:
                self._fail(self.jobs[id(member)], member.progress.failure)

    def running(self) -> int:
        """Jobs waiting for projections or drawings now."""
        return len({id(job) for job in self.jobs.values()} | {id(job) for job, _ in self.draws})

    def serve(self, job_queue) -> None:
        """Until ``None`` arrives on the queue (then finish what was started)."""
        stopping = False
        while not stopping or self.busy():
            while not stopping and self.running() < self.max_jobs:
                if not self.busy():
                    host.idle()  # waiting for work: other engines on this host may take our cores
                try:
                    item = job_queue.get(block=not self.busy())
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                self.take(*item)
            if self.busy():
                self.step()


def _guarded(progress):
    """A progress callback that cannot break the batch: what it raises is kept for its job."""
    def call(*args):
        if progress is None or call.failure is not None:
            return
        try:
            progress(*args)
        except Exception as exc:  # noqa: BLE001 (handed back to the job that owns it)
            call.failure = exc
    call.failure = None
    return call

