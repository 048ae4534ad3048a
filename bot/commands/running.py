"""The one path a job takes from a slash command to the engine and back to Discord.

defer at once -> :class:`Slot` (the member's queue cap and budget, given back once; a
job that never starts costs nothing) -> submit -> "position N", kept true as the line
moves -> :class:`ProgressReporter` (at most one edit per ``progress_interval``, with a
preview; a long job's first edit brings its Stop button, ``stop.py``) -> :meth:`Job._deliver`
(keep the new face if asked, then the pictures). Anything a member caused gets one
sentence; anything else an apology with the job id, the traceback in the log. If the
interaction expired (15 min) or its message was deleted, the result goes to the channel
instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import time
from collections.abc import Callable

import discord

from bot.commands.common import Refusal, Reply, Services, defer, plain, refuse
from bot.commands.stop import stop_view
from bot.limits import RateLimited
from bot.storage import Reach, StorageError
from bot.transport import RERUN, EngineUnavailable, QueueFull, ShuttingDown, Transport
from engine.protocol import JobFailed, Progress, Request, Rerun, Result, Started, UserError, WorkerReady
from engine.protocol.requests import MAX_ATTACHMENT_BYTES

log = logging.getLogger("wspace.bot")

READY_TIMEOUT = 120.0
KEEP = object()  # JobMessage.edit: leave the buttons under the message as they are
QUEUE_FULL = "The queue is full right now; try again in a minute."
QUIET_SECONDS = 8.0  # a running job's message is edited at least this often (bench/silences.py)
ENGINE_SENTENCE_MAX = 1500  # an engine's one sentence, as shown (it may echo what a member typed)


class JobMessage:
    """The member's one message for a job, edited as the job moves; falls back to the
    channel when the interaction can no longer be edited."""

    def __init__(self, interaction: discord.Interaction, interval: float) -> None:
        self.interaction, self.interval = interaction, interval
        self.last_edit = 0.0
        self.content = ""  # what the message says now
        self.broken = False
        self.lock = asyncio.Lock()
        self.stop = None  # the Stop button, shown from the next edit until the job answers

    async def edit(self, content: str, files: list[discord.File] | None = None, view=KEEP, force: bool = True) -> None:
        """Edit the message; ``view``: the buttons under it (``None`` removes them, ``KEEP``
        leaves them, and shows the Stop button when it is not shown yet)."""
        now = time.monotonic()
        if self.broken or (not force and now - self.last_edit < self.interval):
            return
        async with self.lock:
            self.last_edit, self.content = now, content
            try:
                kwargs = {"content": content, "attachments": files or []}
                if view is not KEEP:
                    kwargs["view"] = view
                elif self.stop is not None:
                    kwargs["view"], self.stop = self.stop, None
                await self.interaction.edit_original_response(**kwargs)
            except (discord.NotFound, discord.HTTPException) as exc:
                log.info("cannot edit the response of interaction %s (%s)", self.interaction.id, exc)
                self.broken = True

    async def still_working(self, since: float) -> None:
        """A long quiet phase (finding faces, a search, encoding): the same words and picture,
        with how long the job has run, so the member sees it is alive."""
        if self.broken or not self.content:
            return
        async with self.lock:
            self.last_edit = time.monotonic()
            text = f"{self.content.split(' · still working')[0]} · still working ({self.last_edit - since:.0f} s)"
            try:
                await self.interaction.edit_original_response(content=text)  # attachments and buttons stay
            except (discord.NotFound, discord.HTTPException) as exc:
                log.info("cannot edit the response of interaction %s (%s)", self.interaction.id, exc)
                self.broken = True

    async def finish(self, content: str, files: list[discord.File] | None = None, view=None) -> None:
        """The job's last word: ``content`` with ``view``'s buttons (or none: a Stop button goes)."""
        self.stop = None
        await self.edit(content, files, view)
        if self.broken:  # expired token or deleted message: post where the member asked
            channel = self.interaction.client.get_partial_messageable(self.interaction.channel_id)
            mention = self.interaction.user.mention
            for f in files or []:
                f.reset()
            kwargs = {"content": f"{mention} {content}", "files": files or [],
                      "allowed_mentions": discord.AllowedMentions(users=[self.interaction.user])}
            if view is not None:
                kwargs["view"] = view
            try:
                await channel.send(**kwargs)
            except discord.HTTPException:
                log.exception("could not deliver the result of interaction %s", self.interaction.id)


class Slot:
    """A member's place for one job: the per-member cap on waiting jobs and the cost budget,
    taken together with no await between (a burst cannot slip past either), released once.
    A job refused before it started is refunded."""

    def __init__(self, svc: Services, guild_id: int, user_id: int, kind: str) -> None:
        self.svc, self.key, self.kind = svc, (guild_id, user_id), kind
        self.held = self.started = False

    def check(self) -> None:
        """Raise the :class:`Refusal` (or ``RateLimited``) taking the slot would meet now;
        takes nothing."""
        waiting = self.svc.queued[self.key]
        if waiting >= self.svc.settings.limits.per_member_queued:
            raise Refusal(
                f"You already have {'a job' if waiting == 1 else f'{waiting} jobs'} waiting; let it finish first."
            )
        self.svc.limits.check(*self.key, self.kind)
        if self.svc.transport.full():
            raise Refusal(QUEUE_FULL)

    async def __aenter__(self) -> Slot:
        svc, key = self.svc, self.key
        self.check()
        svc.limits.charge(*key, self.kind)
        svc.queued[key] += 1
        self.held = True
        return self

    def release(self) -> None:
        """The job is over: storing its result does not hold the member's slot."""
        if self.held:
            self.held = False
            self.svc.queued[self.key] -= 1
            if self.svc.queued[self.key] <= 0:
                del self.svc.queued[self.key]

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, Refusal) and not self.started:
            self.svc.limits.refund(*self.key, self.kind)
        self.release()
        return False


def precheck(svc: Services, interaction: discord.Interaction, kind: str) -> None:
    """The caps and budgets a job of ``kind`` would meet, checked before a command spends
    anything on it (Discord lookups of members): a :class:`Refusal`, answered privately. A
    command that passes holds one of the member's places while it looks members up, so
    concurrent commands cannot all pass together (six /morph at once did, 276 lookups); its
    job takes the place over (:func:`run_job`), or the command's end gives it back
    (:func:`release_hold`, from the bot's completion and error handlers)."""
    key = (interaction.guild_id or 0, interaction.user.id)
    try:
        Slot(svc, *key, kind).check()
    except RateLimited as exc:
        raise Refusal(rate_sentence(exc)) from None
    release_hold(svc, interaction)  # a command prechecks once; a second call holds nothing more
    svc.queued[key] += 1
    interaction.extras["held"] = key


def release_hold(svc: Services, interaction: discord.Interaction) -> None:
    """Give back the place :func:`precheck` held for this interaction (if any)."""
    key = interaction.extras.pop("held", None)
    if key is not None:
        svc.queued[key] -= 1
        if svc.queued[key] <= 0:
            del svc.queued[key]


def rate_sentence(exc: RateLimited) -> str:
    when = wait_words(exc.seconds)
    return (
        f"You're going a little fast; try again in {when}."
        if exc.scope == "member"
        else f"This server is busy with faces; try again in {when}."
    )


def wait_words(seconds: float) -> str:
    """A wait as a member reads it: "40 seconds", "a minute", "30 minutes", "2 hours"."""
    seconds = max(1, round(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = round(seconds / 60)
    if minutes < 90:
        return "a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(minutes / 60)
    return f"{hours} hours"


class ProgressReporter:
    """Turns engine progress into paced edits of the member's message."""

    def __init__(self, svc: Services, engine: Transport, msg: JobMessage, title: str, job_id: str) -> None:
        self.svc, self.engine, self.msg, self.title, self.job_id = svc, engine, msg, title, job_id
        self.rerun = False
        self.submitted: float | None = None  # when the job went to the engine (the wait is counted from it)
        self.started: float | None = None  # when the engine said it started the job

    async def __call__(self, p: Progress | Started | Rerun) -> None:
        if isinstance(p, Rerun):  # the engine died; this job runs again alone
            self.rerun = True
            await self.msg.edit(f"{self.title}{RERUN[0].lower()}{RERUN[1:-1]} — working on it…", force=True)
            return
        if isinstance(p, Started):
            self.started = self.started or time.monotonic()
            if self.svc.metrics is not None and self.submitted is not None:
                self.svc.metrics.wait.observe(time.monotonic() - self.submitted)
            await self.svc.storage.job_started(self.job_id)
            again = " again, after an engine restart" if self.rerun else ""
            await self.msg.edit(f"{self.title}working on it{again}…", force=self.rerun)
            return
        files = [discord.File(io.BytesIO(p.preview_png), "preview.png")] if p.preview_png else None
        # A step-0 preview is the encoder's first guess, the last step says what comes next (e.g. encoding
        # the GIF): both shown at once, the steps between as paced.
        await self.msg.edit(f"{self.title}{p.message or f'{p.step}/{p.total}'}", files, force=p.step in (0, p.total))

    async def keep_alive(self) -> None:
        """Once the engine has started the job, never more than QUIET_SECONDS without an edit."""
        while True:
            await asyncio.sleep(1.0)
            if self.started is not None and time.monotonic() - self.msg.last_edit >= QUIET_SECONDS:
                await self.msg.still_working(self.started)

    async def follow_position(self, shown: int | None) -> None:
        """Show a waiting member's "position N" and keep it true as the line moves; stops once
        the job is next or running, when progress takes over. The first edit waits one
        progress interval: in a burst, every member's acknowledgement goes before any
        position (measured: docs/benchmarks.md), and a job that starts by then needs none."""
        while True:
            await asyncio.sleep(self.svc.settings.limits.progress_interval)
            position = self.engine.position(self.job_id)
            if position is None or position <= 1:
                return
            if position != shown:
                shown = position
                await self.msg.edit(f"{self.title}queued — position {position}.", force=False)


def files_of(result: Result) -> list[discord.File]:
    return [
        discord.File(io.BytesIO(f.data), filename=f.name, description=f.description[:1000] or None)
        for f in result.files
    ]


def describe(request: Request, result: Result) -> str:
    """The reply's text: the engine's sentences, in what the request's kind adds for its members."""
    return request.reply.format(text=result.text)


def check_kept(info: WorkerReady | None, request: Request, result: Result) -> None:
    """A face about to be kept must be one of the model that ran the job (whatever the wire brought)."""
    face = result.face
    try:
        face.validate("new face")
        fits = info is not None and result.model_id == info.model_id and face.ws.shape == (info.num_ws, info.w_dim)
    except UserError:
        fits = False
    if not fits:
        log.error("job %s returned a face that does not fit model %s: %r", request.id, info and info.model_id, face)
        raise Reply(f"Sorry, something went wrong on my side (job {request.id}); it has been logged.")


@dataclasses.dataclass(frozen=True)
class Delivery:
    """How a job's answer reaches the member: its ``title``; ``keep`` "me" keeps the new face as
    the member's, "pending" for /adopt; ``view_factory(user_id)`` the buttons under it; ``show``
    (or a predicate of the result) false leaves the message to the command, which goes on;
    ``after(result, forgot)`` stores what else the command keeps and returns a sentence to add;
    ``extra_files`` go before the result's own (an earlier job's picture the same message shows)."""

    title: str = ""
    keep: str | None = None
    view_factory: Callable | None = None
    show: bool | Callable = True
    after: Callable | None = None
    extra_files: tuple = ()


class Job:
    """One engine request for one interaction, and its life: refused, or queued (its row
    recorded, the member charged) -> running (rerun after an engine death) -> answered or failed
    (refunded when its error class says so) -> delivered. The storage rows it owns are opened
    and closed here, whatever ends it."""

    def __init__(self, svc: Services, interaction: discord.Interaction, request: Request, delivery: Delivery) -> None:
        self.svc, self.interaction, self.request, self.delivery = svc, interaction, request, delivery
        self.key = (interaction.guild_id or 0, interaction.user.id)
        self.msg = JobMessage(interaction, svc.settings.limits.progress_interval)
        self.slot = Slot(svc, *self.key, request.kind)
        self.recorded: str | None = None  # the id of a job row this job must still close
        self.outcome = "refused"  # for the metrics: "ok", an error code, or how it ended
        self.submitted: float | None = None
        self.result: Result | None = None

    async def run(self) -> Result | None:
        """Returns the Result, or None on failure (which the member has been told)."""
        try:
            # A command refused by a cap, a rate limit or a full queue is answered before anything is
            # shown: its one private message is the acknowledgement (a burst's refusals cost Discord
            # one request each, not three). Taking the slot checks again after the await.
            release_hold(self.svc, self.interaction)  # the job takes over its precheck's place (no await between)
            self.slot.check()
            await defer(self.interaction)
            async with self.slot:
                return await self._through(self.svc.transport)  # this engine, even if a reload switches meanwhile
        except Refusal as exc:
            await refuse(self.interaction, str(exc))
        except Reply as exc:
            await self.msg.finish(str(exc))
        except RateLimited as exc:
            self.outcome = "rate_limited"
            await refuse(self.interaction, rate_sentence(exc))
        except (ShuttingDown, EngineUnavailable, StorageError, asyncio.TimeoutError) as exc:
            self.outcome, sentence = next(end for kind, end in ENDINGS.items() if isinstance(exc, kind))
            if isinstance(exc, StorageError):
                log.error("storage error: %s", exc)
            await self.msg.finish(sentence)
        finally:
            await self._ended()
        return None

    async def _through(self, engine: Transport) -> Result | None:
        """Queued, running, answered: the slot is held until the answer, then the answer is delivered."""
        if engine.info is None:
            await engine.wait_ready(READY_TIMEOUT)
        interaction, svc = self.interaction, self.svc
        cap = min(interaction.filesize_limit, svc.settings.limits.max_gif_bytes, MAX_ATTACHMENT_BYTES)
        self.request = request = dataclasses.replace(self.request, model_id=engine.info.model_id, max_bytes=cap)
        epoch = svc.forget_epoch[self.key]
        future = await self._submit(engine)
        outcome = await asyncio.wait_for(future, svc.settings.engine.job_timeout_seconds + 60)
        self.outcome = "ok" if isinstance(outcome, Result) else outcome.code
        self.result = outcome if isinstance(outcome, Result) else None
        if isinstance(outcome, JobFailed) and outcome.refunded:  # the input was refused, or the engine lost it
            svc.limits.refund(*self.key, request.kind)
        log.info("job %s (%s) answered: %s", request.id, request.kind, self.outcome)
        self.slot.release()
        self.recorded = None
        await self._deliver(outcome, forgot=svc.forget_epoch[self.key] != epoch, info=engine.info)
        return self.result

    async def _submit(self, engine: Transport) -> asyncio.Future:
        """Record the job, hand it to the engine, and follow it (position, progress, keep-alive)."""
        interaction, request, svc = self.interaction, self.request, self.svc
        reporter = ProgressReporter(svc, engine, self.msg, self.delivery.title, request.id)
        reach = Reach(interaction.application_id, interaction.token, interaction.channel_id)
        await svc.storage.job_queued(request.id, *self.key, request.kind, reach)  # before any work starts
        self.recorded = request.id
        try:
            self.submitted = reporter.submitted = time.monotonic()
            future = engine.submit(request, reporter)
            log.info("job %s (%s) submitted for member %s in server %s", request.id, request.kind, *self.key[::-1])
        except QueueFull:
            await svc.storage.job_finished(request.id, "queue_full")
            self.recorded = None
            raise Refusal(QUEUE_FULL) from None
        self.slot.started = True
        if request.stoppable:
            svc.stoppable[request.id] = (self.key[1], engine)
            self.msg.stop = stop_view(request.id)
        position = engine.position(request.id)
        if position and position > 1:  # shown from the first tick on: a burst's acks go first
            watcher = asyncio.create_task(reporter.follow_position(None))
            future.add_done_callback(lambda _: watcher.cancel())
        alive = asyncio.create_task(reporter.keep_alive())
        future.add_done_callback(lambda _: alive.cancel())
        return future

    async def _deliver(self, outcome: Result | JobFailed, forgot: bool, info: WorkerReady | None) -> None:
        """Close the job's row, keep the new face if asked (and not forgotten meanwhile), run
        ``after``, show the pictures (unless the delivery says the command goes on)."""
        svc, request, d = self.svc, self.request, self.delivery
        if isinstance(outcome, JobFailed):
            await svc.storage.job_finished(request.id, outcome.code)
            if outcome.user_error:  # it may echo what the member typed: shown, never a ping
                raise Reply(plain(outcome.message, ENGINE_SENTENCE_MAX))
            log.error("job %s (%s) failed in the engine:\n%s", request.id, request.kind, outcome.detail)
            raise Reply(f"Sorry, something went wrong on my side (job {request.id}); it has been logged.")
        await svc.storage.job_finished(request.id)
        text = await self._keep(outcome, forgot, info)
        if d.after is not None:
            text += await d.after(outcome, forgot)
        if not (d.show(outcome) if callable(d.show) else d.show):
            return
        note = svc.notes.pop(self.interaction.id, None)
        if note is not None:
            text += note[0]
            await svc.storage.refresh_was_told(*note[1])
        view = d.view_factory(self.interaction.user.id) if d.view_factory else None
        await self.msg.finish(f"{d.title}{text}".strip(), list(d.extra_files) + files_of(outcome), view)

    async def _keep(self, outcome: Result, forgot: bool, info: WorkerReady | None) -> str:
        """Keep the new face as the delivery asks; the reply's text."""
        svc, request, keep = self.svc, self.request, self.delivery.keep
        text = describe(request, outcome)
        if not keep or outcome.face is None:
            return text
        check_kept(info, request, outcome)
        face = outcome.face
        if forgot:  # the engine's own sentence alone: the request's frame would promise a face that is not kept
            return outcome.text + "\nYou ran /forget while this was running, so nothing was kept."
        if keep == "me":
            await svc.storage.save_latent(*self.key, outcome.model_id, face.ws, request.kind, face.noise)
        elif keep == "pending":
            await svc.storage.save_pending(*self.key, outcome.model_id, face.ws, face.noise)
        return text

    async def _ended(self) -> None:
        svc, request = self.svc, self.request
        svc.stoppable.pop(request.id, None)
        svc.notes.pop(self.interaction.id, None)
        if svc.metrics is not None:
            svc.metrics.ended(request.kind, self.outcome, self.submitted, self.result)
        if self.recorded is not None:  # ended here (timeout, engine gone, shutdown): not "interrupted" next start
            with contextlib.suppress(StorageError, ValueError):
                await svc.storage.job_finished(self.recorded, "stopped")


# How a job ends when something outside it gives out: (its metrics outcome, what the member reads).
ENDINGS = {
    ShuttingDown: ("shutting_down", "The bot is restarting, so this stopped; run the command again in a minute."),
    EngineUnavailable: ("engine_unavailable", "The face engine is not available right now; try again in a minute."),
    StorageError: ("storage_error", "My database is having trouble right now; try again in a minute."),
    asyncio.TimeoutError: ("timeout", "That took far too long and was stopped; try again with fewer steps or frames."),
}


async def run_job(svc: Services, interaction: discord.Interaction, request: Request, **delivery) -> Result | None:
    """Run one engine request for a command (``delivery``: the fields of :class:`Delivery`);
    returns the Result, or None on failure (which the member has been told)."""
    return await Job(svc, interaction, request, Delivery(**delivery)).run()
