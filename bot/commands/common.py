"""What every command shares: the services, the one-sentence answers (:class:`Reply`),
and looking up a member's kept face with consent. How a job runs is ``running.py``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

import discord
from discord import app_commands

from bot.config import Settings
from bot.limits import Limits
from bot.storage import Storage
from bot.transport import Transport
from engine.protocol import Face

log = logging.getLogger("wspace.bot")
REFRESH_NOTE = ("\n-# Your face was kept by an older projector, so blends, morphs and edits of it can smear; "
                "a fresh /project with your photo gives better ones (this is said once).")

class Reply(Exception):
    """Stop the command and tell the member this one sentence."""


class Refusal(Reply):
    """A command that did not start (a limit, a full queue): told to the member alone."""


def acknowledged(interaction: discord.Interaction) -> None:
    """Count an interaction's acknowledgement time (metrics, when on)."""
    svc = getattr(interaction.client, "services", None)
    if svc is not None and svc.metrics is not None:
        svc.metrics.acknowledged(interaction.extras.get("received"))


async def refuse(interaction: discord.Interaction, sentence: str) -> None:
    """Only the member sees a refusal: an ephemeral answer (the public "thinking…" of a
    deferred command is removed first)."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(sentence, ephemeral=True)
            acknowledged(interaction)
            return
        await interaction.delete_original_response()
        await interaction.followup.send(sentence, ephemeral=True)
    except (discord.NotFound, discord.HTTPException) as exc:
        log.info("could not refuse interaction %s privately (%s)", interaction.id, exc)


@dataclass
class Services:
    settings: Settings
    storage: Storage
    transport: Transport  # the engine, local or over Redis
    limits: Limits
    queued: Counter = field(default_factory=Counter)  # (guild, user) -> jobs waiting or running, or prechecked
    forget_epoch: Counter = field(default_factory=Counter)  # bumped by /forget
    stoppable: dict = field(default_factory=dict)  # job id -> (member who started it, its transport) while it runs
    config_path: object = None
    metrics: object = None  # bot.metrics.BotMetrics when metrics.address is set
    pickers: set = field(default_factory=set)  # interactions whose face menu is live (bot/commands/project.py)
    notes: dict = field(default_factory=dict)  # interaction id -> (a line its result adds, what to record once read)

    @property
    def model_id(self) -> str:
        if self.transport.info is None:
            raise Reply("The face engine is still starting; try again in a few seconds.")
        return self.transport.info.model_id


ECHO_MAX = 100  # characters of a member's text echoed back (Discord's own limits are far above)
_LINE_START = re.compile(r"(?m)^(\s*)(\d+)([.)])")  # "1. list" at a line's start


def plain(text: str, limit: int = ECHO_MAX) -> str:
    """Text a member typed, echoed as plain words on one line, at most ``limit`` characters:
    no markdown (links, headers, lists, spoilers, code), no mention, no ``<…>`` tag (command
    mentions, channels, timestamps, emoji)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = discord.utils.escape_markdown(discord.utils.escape_mentions(text))
    text = _LINE_START.sub(lambda m: f"{m[1]}{m[2]}\\{m[3]}", text)
    return text.replace("<", "\\<")


def declare_max(command: app_commands.Command, param: str, most: int | None) -> None:
    """Tell Discord the largest ``param`` this server's settings take (the request allows more),
    so Discord itself refuses larger values before the bot is asked. ``most`` None: no settings
    (the commands registered bare, as a test of the protocol's bounds does)."""
    option = command._params.get(param)  # discord.py keeps no public setter; the value goes out at sync
    if most is not None and option is not None and option.max_value is not None:
        option.max_value = min(option.max_value, most)


def name_of(user) -> str:
    name = getattr(user, "display_name", None) or getattr(user, "name", None) or "That member"
    return plain(name)


async def latent_of(svc: Services, interaction: discord.Interaction, user: discord.abc.User | None) -> Face:
    """The kept face (W+ and noise maps) of ``user`` (default: the member asking), honouring consent."""
    guild_id = interaction.guild_id or 0
    me = user is None or user.id == interaction.user.id
    target = interaction.user if user is None else user
    stored = await svc.storage.latent(guild_id, target.id, svc.model_id)
    if me:
        if stored is None:
            where = (" in direct messages (faces here are kept apart from your servers')"
                     if interaction.guild_id is None else "")
            raise Reply(f"You don't have a face{where} yet: use /project with a selfie, or /random and then /adopt.")
        if stored.outdated and not stored.refresh_told:  # said with this command's result, then never again
            svc.notes[interaction.id] = (REFRESH_NOTE, (guild_id, target.id, svc.model_id))
        return stored.face
    if interaction.guild_id is None:  # consent is given per server: a DM has nobody's consent
        raise Reply("In a direct message you can use only your own face; use other members' faces in your server.")
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


async def members_here(interaction: discord.Interaction, ids: list[int], want: int) -> list[int]:
    """Up to ``want`` of ``ids`` who are still in the server (the asker always is), asking
    Discord about at most ``2 * want`` of them: a command's lookups are bounded."""
    out, asked = [], 0
    for i in ids:
        if len(out) >= want or asked >= 2 * want:
            break
        if i != interaction.user.id:
            asked += 1
            if not await still_here(interaction, discord.Object(i)):
                continue
        out.append(i)
    return out


async def latent_or_answer(svc: Services, interaction: discord.Interaction, user) -> Face | None:
    """Defer, then the kept face of ``user`` (None = the asker); on a refusal, answer with
    its sentence and return None (for buttons, whose errors do not reach the tree)."""
    await defer(interaction)
    try:
        return await latent_of(svc, interaction, user)
    except Reply as exc:
        await answer(interaction, str(exc))
        return None


async def faces_of(svc: Services, interaction: discord.Interaction, users) -> tuple[Face, ...]:
    """The kept faces of several members (None = the asker), each with consent; a Reply on the first refusal."""
    await defer(interaction)
    return tuple([await latent_of(svc, interaction, u) for u in users])


async def answer(interaction: discord.Interaction, sentence: str) -> None:
    """Tell the member ``sentence`` as the command's answer (edits a deferred response)."""
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=sentence, attachments=[])
        else:
            await interaction.response.send_message(sentence)
    except (discord.NotFound, discord.HTTPException) as exc:
        log.info("could not answer interaction %s (%s)", interaction.id, exc)


async def reply_now(interaction: discord.Interaction, content: str, ephemeral: bool = True) -> None:
    """Quick answers that need no engine (privacy, errors before a job)."""
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(content, ephemeral=ephemeral)
        acknowledged(interaction)


async def read_photo(svc: Services, image: discord.Attachment) -> bytes:
    """An attached photo's bytes, after the checks that need no download; a Reply otherwise."""
    limit = svc.settings.limits.max_image_bytes
    if image.size > limit:
        raise Reply(f"That file is {image.size / 1e6:.1f} MB; the limit is {limit / 1e6:.0f} MB.")
    ctype = (image.content_type or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith("image/"):
        raise Reply("That attachment is not an image; send a PNG, JPEG, WebP or GIF photo.")
    try:
        return await image.read()
    except discord.HTTPException:
        raise Reply("I could not download that attachment; try sending it again.") from None


async def display_name(interaction: discord.Interaction, user_id: int) -> str:
    """A member's name as the server shows it (asked of Discord: the bot keeps no member list)."""
    try:
        data = await interaction.client.http.get_member(interaction.guild_id, user_id)
    except discord.HTTPException:
        return "a member"
    name = data.get("nick") or data["user"].get("global_name") or data["user"].get("username") or "a member"
    return plain(name)


async def defer(interaction: discord.Interaction) -> bool:
    """Acknowledge at once (Discord drops what is not acknowledged within 3 s)."""
    if interaction.response.is_done():
        return True
    try:
        await interaction.response.defer(thinking=True)
        acknowledged(interaction)
        return True
    except (discord.NotFound, discord.HTTPException) as exc:  # already expired: answer in the channel
        log.warning("could not defer interaction %s: %s", interaction.id, exc)
        return False
