"""What every command shares: the services, latent lookup with consent, and the one
path a job takes from a slash command to the engine and back to Discord.

A job: defer at once (Discord drops what is not acknowledged in 3 s) -> rate limits
and queue caps -> submit -> "position N" -> progress edits (at most one per
``progress_interval``, with a preview) -> the pictures. Anything a member caused gets
one sentence; anything else an apology with the job id, the traceback in the log.
If the interaction expired (15 min) or its message was deleted, the result goes to
the channel instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import discord

from bot.config import Settings
from bot.engine_client import EngineClient, EngineUnavailable, QueueFull, ShuttingDown
from bot.limits import Limits, RateLimited
from bot.storage import Reach, Storage, StorageError
from engine.jobs import Job, JobFailed, Progress, Result

log = logging.getLogger("wspace.bot")

READY_TIMEOUT = 120.0


class Reply(Exception):
    """Stop the command and tell the member this one sentence."""


class Refusal(Reply):
    """A command that did not start (a limit, a full queue): told to the member alone."""


async def refuse(interaction: discord.Interaction, sentence: str) -> None:
    """Only the member sees a refusal: an ephemeral answer (the public "thinking…" of a
    deferred command is removed first)."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(sentence, ephemeral=True)
            return
        await interaction.delete_original_response()
        await interaction.followup.send(sentence, ephemeral=True)
    except (discord.NotFound, discord.HTTPException) as exc:
        log.info("could not refuse interaction %s privately (%s)", interaction.id, exc)


@dataclass
class Services:
    settings: Settings
    storage: Storage
    engine: EngineClient
    limits: Limits
    queued: Counter = field(default_factory=Counter)  # (guild, user) -> jobs waiting or running
    forget_epoch: Counter = field(default_factory=Counter)  # bumped by /forget
    config_path: object = None

    @property
    def model_id(self) -> str:
        if self.engine.info is None:
            raise Reply("The face engine is still starting; try again in a few seconds.")
        return self.engine.info.model_id


def name_of(user) -> str:
    name = getattr(user, "display_name", None) or getattr(user, "name", None) or "That member"
    return discord.utils.escape_markdown(discord.utils.escape_mentions(name))


async def latent_of(svc: Services, interaction: discord.Interaction, user: discord.abc.User | None):
    """The kept face (W+ and noise maps) of ``user`` (default: the member asking), honouring consent."""
    guild_id = interaction.guild_id or 0
    me = user is None or user.id == interaction.user.id
    target = interaction.user if user is None else user
    stored = await svc.storage.latent(guild_id, target.id, svc.model_id)
    if me:
        if stored is None:
            raise Reply("You don't have a face yet: use /project with a selfie, or /random and then /adopt.")
        return stored.face
    if getattr(target, "bot", False):
        raise Reply("Bots don't have faces here.")
    if not await still_here(interaction, target):
        raise Reply(f"{name_of(target)} is not in this server any more, so their face can't be used.")
    if not await svc.storage.shares(guild_id, target.id):
        raise Reply(f"{name_of(target)} keeps their face private (they can share it with /privacy).")
    if stored is None:
        raise Reply(f"{name_of(target)} hasn't projected a face yet.")
    return stored.face


async def still_here(interaction: discord.Interaction, user: discord.abc.Snowflake) -> bool:
    """Whether ``user`` is still a member of the server the command came from. A user option
    resolves to a Member only for members; a bare id (a mention typed in text) is asked of
    Discord, since the bot does not hold the privileged member list."""
    if interaction.guild_id is None or isinstance(user, discord.Member):
        return True
    if isinstance(user, discord.User):
        return False
    try:
        await interaction.client.http.get_member(interaction.guild_id, user.id)
    except discord.NotFound:
        return False
    return True


async def latent_or_answer(svc: Services, interaction: discord.Interaction, user):
    """Defer, then the latent of ``user`` (None = the asker); on a refusal, answer with its
    sentence and return None."""
    await defer(interaction)
    try:
        return await latent_of(svc, interaction, user)
    except Reply as exc:
        await interaction.edit_original_response(content=str(exc))
        return None


def files_of(result: Result) -> list[discord.File]:
    return [discord.File(io.BytesIO(f.data), filename=f.name, description=f.description[:1000] or None)
            for f in result.files]


class JobMessage:
    """The member's one message for a job, edited as the job moves; falls back to the
    channel when the interaction can no longer be edited."""

    def __init__(self, interaction: discord.Interaction, interval: float) -> None:
        self.interaction, self.interval = interaction, interval
        self.last_edit = 0.0
        self.broken = False
        self.lock = asyncio.Lock()

    async def edit(self, content: str, files: list[discord.File] | None = None, view=None, force: bool = True) -> None:
        now = time.monotonic()
        if self.broken or (not force and now - self.last_edit < self.interval):
            return
        async with self.lock:
            self.last_edit = now
            try:
                kwargs = {"content": content, "attachments": files or []}
                if view is not None:
                    kwargs["view"] = view
                await self.interaction.edit_original_response(**kwargs)
            except (discord.NotFound, discord.HTTPException) as exc:
                log.info("cannot edit the response of interaction %s (%s)", self.interaction.id, exc)
                self.broken = True

    async def finish(self, content: str, files: list[discord.File] | None = None, view=None) -> None:
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


async def follow_position(svc: Services, job_id: str, msg: JobMessage, title: str, shown: int) -> None:
    """Keep a waiting member's "position N" true as the line moves (at most one edit per
    progress interval); stops once the job is next or running, when progress takes over."""
    while True:
        await asyncio.sleep(svc.settings.limits.progress_interval)
        position = svc.engine.position(job_id)
        if position is None or position <= 1:
            return
        if position != shown:
            shown = position
            await msg.edit(f"{title}queued — position {position}.", force=False)


async def defer(interaction: discord.Interaction) -> bool:
    if interaction.response.is_done():
        return True
    try:
        await interaction.response.defer(thinking=True)
        return True
    except (discord.NotFound, discord.HTTPException) as exc:  # already expired: answer in the channel
        log.warning("could not defer interaction %s: %s", interaction.id, exc)
        return False


async def run_job(svc: Services, interaction: discord.Interaction, kind: str, args: dict | None = None,
                  latents: dict | None = None, *, title: str = "", view_factory=None, keep_latent: str | None = None
                  ) -> Result | None:
    """Run one engine job for a slash command; returns the Result (or None on failure)."""
    await defer(interaction)
    msg = JobMessage(interaction, svc.settings.limits.progress_interval)
    guild_id, user_id = interaction.guild_id or 0, interaction.user.id
    key = (guild_id, user_id)
    reserved = charged = False
    recorded = None  # the id of a job row this command must still close
    try:
        if svc.queued[key] >= svc.settings.limits.per_member_queued:
            waiting = "a job" if svc.queued[key] == 1 else f"{svc.queued[key]} jobs"
            raise Refusal(f"You already have {waiting} waiting; let it finish first.")
        svc.limits.check(guild_id, user_id, kind)
        svc.limits.charge(guild_id, user_id, kind)  # with no await between: a burst cannot overspend
        charged = True
        svc.queued[key] += 1  # reserved before anything awaits, so a burst cannot slip past the cap
        reserved = True
        if svc.engine.info is None:
            await svc.engine.wait_ready(READY_TIMEOUT)
        cap = min(interaction.filesize_limit, svc.settings.limits.max_gif_bytes)
        job = Job(kind, args or {}, latents or {}, svc.model_id, max_bytes=cap)
        epoch = svc.forget_epoch[key]

        async def on_progress(p: Progress) -> None:
            if p.step == 0 and p.preview_png is None:
                await svc.storage.job_started(job.id)
                await msg.edit(f"{title}working on it…", force=False)
                return
            files = [discord.File(io.BytesIO(p.preview_png), "preview.png")] if p.preview_png else None
            # A step-0 preview is the encoder's first guess: shown at once, the rest as paced.
            await msg.edit(f"{title}{p.message or f'{p.step}/{p.total}'}", files, force=p.step == 0)

        reach = Reach(interaction.application_id, interaction.token, interaction.channel_id)
        await svc.storage.job_queued(job.id, guild_id, user_id, kind, reach)  # recorded before any work starts
        recorded = job.id
        try:
            future = svc.engine.submit(job, on_progress)
        except QueueFull:
            await svc.storage.job_finished(job.id, "queue_full")
            recorded = None
            raise Refusal("The queue is full right now; try again in a minute.") from None
        position = svc.engine.position(job.id)
        if position and position > 1:
            await msg.edit(f"{title}queued — position {position}.")
            watcher = asyncio.create_task(follow_position(svc, job.id, msg, title, position))
            future.add_done_callback(lambda _: watcher.cancel())
        outcome = await asyncio.wait_for(future, svc.settings.engine.job_timeout_seconds + 60)
        svc.queued[key] -= 1  # the job is over; storing its result does not hold the member's slot
        reserved = False
        if svc.queued[key] <= 0:
            del svc.queued[key]
        if isinstance(outcome, JobFailed):
            await svc.storage.job_finished(job.id, outcome.code)
            recorded = None
            if outcome.user_error:
                raise Reply(outcome.message)
            log.error("job %s (%s) failed in the engine:\n%s", job.id, kind, outcome.detail)
            raise Reply(f"Sorry, something went wrong on my side (job {job.id}); it has been logged.")
        await svc.storage.job_finished(job.id)
        recorded = None
        text = describe(kind, outcome)
        if keep_latent and outcome.latent is not None:
            if svc.forget_epoch[key] != epoch:
                text += "\nYou ran /forget while this was running, so nothing was kept."
            elif keep_latent == "me":
                await svc.storage.save_latent(guild_id, user_id, outcome.model_id, outcome.latent, kind, outcome.noise)
            elif keep_latent == "pending":
                await svc.storage.save_pending(guild_id, user_id, outcome.model_id, outcome.latent, outcome.noise)
        view = view_factory(interaction.user.id) if view_factory else None
        await msg.finish(f"{title}{text}".strip(), files_of(outcome), view)
        return outcome
    except Refusal as exc:
        if charged:  # it never started: a refusal costs nothing
            svc.limits.refund(guild_id, user_id, kind)
        await refuse(interaction, str(exc))
    except Reply as exc:
        await msg.finish(str(exc))
    except RateLimited as exc:
        await refuse(interaction, f"You're going a little fast; try again in {exc.seconds} s." if exc.scope == "member"
                     else f"This server is busy with faces; try again in {exc.seconds} s.")
    except ShuttingDown:
        await msg.finish("The bot is restarting, so this stopped; run the command again in a minute.")
    except EngineUnavailable:
        await msg.finish("The face engine is not available right now; try again in a minute.")
    except StorageError as exc:
        log.error("storage error: %s", exc)
        await msg.finish("My database is having trouble right now; try again in a minute.")
    except asyncio.TimeoutError:
        await msg.finish("That took far too long and was stopped; try again with fewer steps or frames.")
    finally:
        if recorded is not None:  # ended here (timeout, engine gone, shutdown): not "interrupted" at the next start
            with contextlib.suppress(StorageError, ValueError):
                await svc.storage.job_finished(recorded, "stopped")
        if reserved:
            svc.queued[key] -= 1
            if svc.queued[key] <= 0:
                del svc.queued[key]
    return None


def describe(kind: str, result: Result) -> str:
    f = result.figures
    if kind == "project":
        verdict = "same person" if f.get("same_person") else "a resemblance"
        return (f"Here you are in latent space: likeness {f['likeness']:.2f} ({verdict}; below 0.60 is the same person "
                f"to dlib), PSNR {f['psnr']:.1f} dB after {f['steps']} steps ({f['loss']} loss)."
                + (f" I saw {f['faces_found']} faces and used the largest." if f.get("faces_found", 1) > 1 else "")
                + "\nThis face is now yours for /blend, /age, /morph…")
    if kind == "random":
        return f"Seed {f['seed']}, truncation {f['truncation']:g}: a person who does not exist. /adopt keeps it as yours."
    return result.text


async def reply_now(interaction: discord.Interaction, content: str, ephemeral: bool = True) -> None:
    """Quick answers that need no engine (privacy, errors before a job)."""
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(content, ephemeral=ephemeral)
