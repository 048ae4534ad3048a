"""Builds the Discord client, registers the command modules, starts the engine process."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from pathlib import Path

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.commands import admin, blend, edit, menus, morph, privacy, project, team
from bot.commands.common import Refusal, Reply, Services, answer, refuse, reply_now
from bot.commands.project import EXPIRED, PickExpired
from bot.commands.running import release_hold
from bot.commands.stop import FINISHED, StopButton
from bot.commands.views import EditButton
from bot.config import Settings, engines_path, heartbeat_path
from bot.http_pool import AcksFirstConnector
from bot.limits import Limits
from bot.storage import Interrupted, Storage, StorageError
from bot.transport import EngineUnavailable, Transport, make_transport
from bot.transport.pidfile import EngineRegistry
from engine.protocol import MixRequest

log = logging.getLogger("wspace.bot")

COMMAND_MODULES = (project, edit, blend, morph, team, privacy, admin, menus)  # menus last: they call the others



def make_limits(settings: Settings) -> Limits:
    lim = settings.limits
    return Limits(lim.member_rate, lim.member_period, lim.server_rate, lim.server_period, lim.costs)


class GatedTree(app_commands.CommandTree):
    """Answers only in the servers and channels the config allows."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        interaction.extras["received"] = time.monotonic()  # acknowledgement latency is counted from here
        if self.client.draining:
            await reply_now(interaction, "The bot is restarting; try again in a minute.")
            return False
        if interaction.guild_id and interaction.is_user_integration() and not interaction.is_guild_integration():
            # installed by the member, used in a server that has not added the bot: there is
            # nobody's consent to read there, and no server of ours to keep a face in
            await reply_now(interaction, "I'm not a member of this server: use me in our DM or a group DM, "
                            "or ask an admin to add me here.")
            return False
        d = self.client.settings.discord
        if d.allowed_guilds and interaction.guild_id not in d.allowed_guilds:
            await reply_now(interaction, "wspace is not enabled in this server.")
            return False
        if d.allowed_channels and interaction.channel_id not in d.allowed_channels:
            await reply_now(interaction, "wspace answers in its own channels; ask an admin which ones.")
            return False
        return True


HEARTBEAT_SECONDS = 10.0
UNANSWERED_COMPONENT_SECONDS = 1.0  # a component's own handler answers at once; after this, nobody will
TOKEN_LIFETIME = 14 * 60.0  # Discord's interaction tokens last 15 minutes; leave a margin
DRAIN_SECONDS = 3.0  # at SIGTERM/SIGINT: time for members' messages to say the bot is restarting
HEALTHY_WITHIN = 60.0  # `wspace health` fails when the heartbeat is older than this
ENGINE_START_SECONDS = 180.0  # a reload's new engine must be ready within this, else the old one stays

# The bot never joins a voice channel: discord.py's warnings about missing voice libraries (PyNaCl,
# davey) would be the first lines an operator reads, about nothing they use.
for _flag in ("warn_nacl", "warn_dave"):
    if hasattr(discord.VoiceClient, _flag):
        setattr(discord.VoiceClient, _flag, False)


class WspaceBot(discord.Client):
    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        kwargs = {}
        if settings.discord.sharded and settings.discord.shard_count:
            kwargs["shard_count"] = settings.discord.shard_count
        # Nothing the bot sends pings anyone unless a message names its member itself (echoed
        # text such as an /edit attribute of "@everyone" pings nobody).
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none(), **kwargs)
        self.settings, self.config_path = settings, config_path
        # Installable by a server and by a member (a user install: their own face in DMs and
        # group DMs where the bot is not a member); the admin group stays server-only.
        self.tree = GatedTree(
            self,
            allowed_installs=app_commands.AppInstallationType(guild=True, user=True),
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True, private_channel=True),
        )
        self.tree.on_error = self.on_command_error
        self.services: Services | None = None
        self.registry: EngineRegistry | None = None
        self.draining = False
        self.engine_settings = settings.engine  # what the serving engine was started with
        self.retiring: set[Transport] = set()  # engines finishing their jobs after a switch
        self.switching = asyncio.Lock()

    async def login(self, token: str) -> None:
        # discord.py's default pool is unbounded (TCPConnector(limit=0)): a burst of 500
        # interactions opened ~500 connections at once, each a TCP (on Discord, TLS)
        # handshake before its acknowledgement could go out. A bounded pool keeps a few
        # open and reuses them (bench/bot_load.py, docs/reliability.md), and gives free
        # connections to acknowledgements first (bot/http_pool.py).
        if self.http.connector is discord.utils.MISSING:
            self.http.connector = AcksFirstConnector(limit=self.settings.discord.http_connections)
        await super().login(token)

    async def setup_hook(self) -> None:
        storage = await Storage.open(self.settings.storage.database)
        interrupted = await storage.fail_unfinished_jobs()
        if interrupted:
            log.warning(
                "marked %d unfinished jobs from a previous run as failed; telling their members", len(interrupted)
            )
            self._told = asyncio.create_task(self.tell_interrupted(interrupted), name="tell-interrupted")
        self.registry = EngineRegistry(engines_path(self.settings))
        self.registry.end_orphans()  # engines a killed predecessor left behind
        engine = make_transport(self.settings, self.registry)
        await engine.start(wait=False)  # the bot answers while the model loads
        self.services = Services(
            self.settings,
            storage,
            engine,
            make_limits(self.settings),
            config_path=self.config_path,
            metrics=self.start_metrics(),
        )
        for module in COMMAND_MODULES:
            module.register(self.tree, self.services)
        self.add_dynamic_items(EditButton, StopButton, PickExpired)
        if self.settings.discord.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d application commands", len(synced))
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")
        self._ranges = asyncio.create_task(self.declare_model_ranges(), name="model-ranges")
        # What startup built (modules, commands, settings) lives as long as the process. A full
        # collection walked all of it and stopped the event loop for ~170 ms in the middle of a
        # burst (bench/bot_load.py, the ack split); frozen, later collections skip it.
        gc.collect()
        gc.freeze()

    async def declare_model_ranges(self) -> None:
        """Once the engine says which model it runs, declare the ranges that depend on it (/mix
        and /swap's split: 1 to its styles − 1, not the protocol's widest 31) and sync again if
        they changed, so Discord itself refuses a split the model cannot take."""
        try:
            info = await self.services.transport.wait_ready(ENGINE_START_SECONDS)
        except EngineUnavailable:
            return
        most = min(MixRequest.SPLIT[1], info.num_ws - 1)
        changed = False
        for name in ("mix", "swap"):
            command = self.tree.get_command(name)
            option = command._params.get("split") if command else None  # no public setter; it goes out at sync
            if option is not None and option.max_value != most:
                option.max_value, changed = most, True
        if changed and self.settings.discord.sync_commands and not self.draining:
            try:
                await self.tree.sync()
                log.info("/mix and /swap now take a split of 1 to %d (model %s)", most, info.model_id)
            except discord.HTTPException as exc:
                log.warning("could not declare the model's split range to Discord: %s", exc)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A button or menu nobody answered (its job ended and the component went, or the bot
        restarted): after a moment, one private sentence instead of Discord's "interaction failed"."""
        if interaction.type is not discord.InteractionType.component:
            return
        await asyncio.sleep(UNANSWERED_COMPONENT_SECONDS)
        if interaction.response.is_done():
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        sentence = (
            FINISHED
            if custom_id.startswith("wspace:stop:")
            else EXPIRED
            if custom_id.startswith("wspace:pick:")
            else "That button belongs to a finished job; run the command again."
        )
        await refuse(interaction, sentence)

    def start_metrics(self):
        """Prometheus metrics at ``metrics.address`` (off when empty); None when off."""
        if not self.settings.metrics.address:
            return None
        from bot.metrics import BotMetrics

        metrics = BotMetrics()
        metrics.engine.stats = lambda: self.services.transport.stats() if self.services else None
        try:
            metrics.serve(self.settings.metrics.address)
        except OSError as exc:
            raise ServeError(
                f"cannot serve metrics at {self.settings.metrics.address}: {exc.strerror or exc}"
            ) from None
        return metrics

    async def on_ready(self) -> None:
        # Connecting builds as much again (the guilds, the gateway's state), also for the life of
        # the connection: frozen too, the first burst's full collection fell from ~36 ms to 3–6 ms.
        gc.collect()
        gc.freeze()

    async def tell_interrupted(self, jobs: list[Interrupted]) -> None:
        """After a crash or kill: each member whose job was cut off gets one sentence, in the
        job's own message while its interaction token is valid, else in the channel."""
        for job in jobs:
            sentence = f"I restarted while working on your /{job.kind}, so it stopped; please run it again."
            reach = job.reach
            if reach.token and reach.application_id and time.time() - job.created_at < TOKEN_LIFETIME:
                try:
                    hook = discord.Webhook.partial(reach.application_id, reach.token, client=self)
                    await hook.edit_message("@original", content=sentence, attachments=[], view=None)
                    continue
                except (discord.NotFound, discord.HTTPException) as exc:
                    log.info("cannot edit the message of job %s (%s); posting in the channel", job.job_id, exc)
            if reach.channel_id:
                try:
                    await self.get_partial_messageable(reach.channel_id).send(
                        f"<@{job.user_id}> {sentence}",
                        allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
                    )
                except discord.HTTPException as exc:
                    log.warning("could not tell the member of job %s: %s", job.job_id, exc)

    async def _beat(self) -> None:
        """Touch the heartbeat file (``wspace health``, the Docker HEALTHCHECK) while the
        gateway is connected; stale when the bot hangs or has lost Discord."""
        path = heartbeat_path(self.settings)
        wrote = False
        while True:
            if self.services is not None:  # unclaimed /team faces past their time go
                try:
                    if gone := await self.services.storage.purge_team_faces():
                        log.info("deleted %d expired team faces", gone)
                    if self.services.metrics is not None:
                        stored = await self.services.storage.stats(None)
                        self.services.metrics.stored(stored["members"], stored["latents"])
                except StorageError as exc:
                    log.warning("could not delete expired team faces or count what is stored: %s", exc)
            if not self.is_closed() and self.is_ready():
                wrote = True
                engine = self.services.transport if self.services else None
                state = {"time": time.time(), "pid": os.getpid(), "engine_ready": bool(engine and engine.info)}
                try:
                    tmp = path.with_name(path.name + ".tmp")
                    tmp.write_text(json.dumps(state))
                    tmp.replace(path)
                except OSError as exc:
                    log.warning("cannot write the heartbeat %s: %s", path, exc)
            await asyncio.sleep(HEARTBEAT_SECONDS if wrote else 0.5)

    def apply_settings(self, settings: Settings) -> None:
        """New limits take effect at once; engine changes need ``restart_engine``."""
        self.settings = settings
        svc = self.services
        svc.settings = settings
        svc.limits = make_limits(settings)
        svc.transport.queue_size = settings.limits.queue_size

    async def switch_engine(self) -> None:
        """Start the engine the settings now describe beside the serving one. Once it is
        ready, new jobs go to it, and the old one finishes every job it holds (running and
        queued), then stops: a reload drops nothing. If the new one cannot start, the old
        one keeps serving and this raises :class:`EngineUnavailable`. Two models are in
        memory for the length of the switch."""
        async with self.switching:
            wanted = self.settings.engine
            new = make_transport(self.settings, self.registry)
            try:
                await new.start(wait=True, timeout=ENGINE_START_SECONDS)
            except BaseException:
                await new.close()
                raise
            old, self.services.transport, self.engine_settings = self.services.transport, new, wanted
            log.info("engine switched; the old one finishes its %d jobs", len(old.pending))
            self._ranges = asyncio.create_task(self.declare_model_ranges(), name="model-ranges")
            self.retiring.add(old)
        try:
            deadline = time.monotonic() + self.settings.engine.job_timeout_seconds + 60
            while old.pending and time.monotonic() < deadline and not self.draining:
                await asyncio.sleep(0.2)
        finally:
            self.retiring.discard(old)
            await old.close()

    async def on_app_command_completion(self, interaction: discord.Interaction, command) -> None:
        if self.services is not None:
            release_hold(self.services, interaction)

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if self.services is not None:
            release_hold(self.services, interaction)
        original = getattr(error, "original", None)  # what the command raised (CommandInvokeError)
        if isinstance(original, Refusal):
            await refuse(interaction, str(original))
            return
        if isinstance(original, Reply):  # one sentence for the member: the command's answer
            await answer(interaction, str(original))
            return
        if isinstance(error, app_commands.MissingPermissions):
            await reply_now(interaction, "Only members with Manage Server can use this.")
            return
        if isinstance(error, app_commands.CheckFailure):
            await reply_now(interaction, "You are not allowed to use this command here.")
            return
        log.error("command %s failed", getattr(interaction.command, "name", "?"), exc_info=error)
        try:
            await reply_now(
                interaction,
                f"Sorry, something went wrong on my side (interaction {interaction.id}); it has been logged.",
            )
        except discord.HTTPException:
            pass

    async def close(self) -> None:
        """Drain, then stop: refuse new commands, stop the engine (queued and running jobs
        end with "the bot is restarting"), give those members' messages up to
        DRAIN_SECONDS to be edited, then close storage and the gateway."""
        if self.draining:
            return await super().close()
        self.draining = True
        for task in (getattr(self, "_heartbeat", None), getattr(self, "_ranges", None)):
            if task is not None:
                task.cancel()
        if self.services is not None:
            for engine in [self.services.transport, *self.retiring]:
                await engine.close()
            deadline = time.monotonic() + DRAIN_SECONDS
            while self.services.queued and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self.services.storage.close()
        await super().close()


class ShardedWspaceBot(WspaceBot, discord.AutoShardedClient):
    """The same bot on discord.py's auto-sharded client: one process, several gateway shards."""


def make_bot(settings: Settings, config_path: Path | None = None) -> WspaceBot:
    return (ShardedWspaceBot if settings.discord.sharded else WspaceBot)(settings, config_path)


def configure_api_base(settings: Settings) -> None:
    """Point discord.py at another API root and gateway (the local simulator in tests)."""
    if settings.discord.api_base:
        discord.http.Route.BASE = settings.discord.api_base.rstrip("/")
    if settings.discord.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord.gateway_url)


class ServeError(RuntimeError):
    """The bot cannot start; ``str`` is one sentence for the operator."""


async def serve_until_stopped(bot: WspaceBot, token: str) -> None:
    """Run the bot until Discord closes or SIGTERM/SIGINT arrives; either signal drains
    (:meth:`WspaceBot.close`): the engine stops and the process exits 0 within about
    DRAIN_SECONDS + the engine's 5-second join."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(
                sig, lambda s=sig: (log.info("%s: draining", s.name), loop.create_task(bot.close()))
            )
        except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
            pass
    async with bot:
        await bot.start(token)


def run(settings: Settings, config_path: Path | None = None) -> None:
    configure_api_base(settings)
    bot = make_bot(settings, config_path)
    try:
        asyncio.run(serve_until_stopped(bot, settings.token()))
    except discord.LoginFailure:
        raise ServeError("Discord refused the bot token; check discord.token or the WSPACE_TOKEN variable.") from None
    except discord.PrivilegedIntentsRequired:
        raise ServeError("Discord refused an intent this bot asked for; enable it in the developer portal.") from None
    except (aiohttp.ClientConnectionError, discord.GatewayNotFound, OSError, TimeoutError) as exc:
        raise ServeError(f"Could not reach Discord ({type(exc).__name__}); check the network and try again.") from None
