"""/wspace stats and /wspace reload, for members with Manage Server."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands

from bot.commands.common import Services, reply_now
from bot.config import ConfigError, load_settings
from bot.transport import EngineUnavailable

log = logging.getLogger("wspace.admin")


def restart_toll(e: dict) -> str:
    """What engine deaths cost members: jobs run again alone, jobs that ended with them."""
    rerun, failed = e.get("rerun_after_restart", 0), e.get("failed_after_restart", 0)
    return f" ({rerun} jobs run again, {failed} failed)" if rerun or failed else ""


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    group = app_commands.Group(name="wspace", description="wspace administration",
                               default_permissions=discord.Permissions(manage_guild=True),
                               # server-only, explicitly: guild_only alone loses to the tree's own defaults
                               allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=False,
                                                                               private_channel=False),
                               allowed_installs=app_commands.AppInstallationType(guild=True, user=False))

    @group.command(name="stats", description="Queue, throughput, model and storage figures.")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def stats(interaction: discord.Interaction) -> None:
        e = svc.transport.stats()
        s = await svc.storage.stats(interaction.guild_id)
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(s["jobs"].items())) or "none yet"
        lines = [
            f"**Queue** {e['queued']}/{e['queue_size']} · {e['jobs_last_hour']} jobs in the last hour"
            + (f" · mean {s['mean_job_seconds']} s" if s["mean_job_seconds"] else ""),
            f"**Engine** ({e['transport']}) {'up' if e['alive'] else 'down'} · model `{e['model_id']}` · "
            f"{e['resolution']} px · {e['device']} · restarts {e['restarts']}{restart_toll(e)} · "
            f"directions: {', '.join(e['directions']) or 'none'}"
            + (f"\n**Problem** {e['problem'][0].upper()}{e['problem'][1:]}." if e.get("problem") else ""),
            *[
                f"**Worker** `{w['id']}` on {w['host']} · model `{w['model_id']}` · {w['device']} · "
                f"{w['jobs_done']} jobs ({w['jobs_per_minute']}/min){' · busy' if w['busy'] else ''}"
                + (
                    f" · {w['rerun_alone']} run again alone, {w['set_aside']} set aside"
                    if w.get("rerun_alone") or w.get("set_aside")
                    else ""
                )
                for w in e.get("workers", [])
            ],
            f"**This server** {s['members']} members · {s['latents']} faces · jobs: {jobs}",
            f"**Storage** {s['database_bytes'] / 1e6:.2f} MB",
        ]
        await reply_now(interaction, "\n".join(lines))

    @group.command(name="reload", description="Reload the TOML configuration.")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def reload(interaction: discord.Interaction) -> None:
        if svc.config_path is None:
            await reply_now(interaction, "I was started without a config file, so there is nothing to reload.")
            return
        try:
            settings = load_settings(svc.config_path)
        except ConfigError as exc:
            log.warning("reload refused: %s", exc)
            await reply_now(
                interaction,
                f"The config file has a problem, so I kept the old settings: {str(exc).splitlines()[-1].strip()}",
            )
            return
        bot = interaction.client
        restart = settings.engine != bot.engine_settings
        if restart and bot.switching.locked():
            await reply_now(interaction, "An engine switch is already under way; reload again once it is done.")
            return
        bot.apply_settings(settings)
        if not restart:
            await reply_now(interaction, "Configuration reloaded.")
            return
        # Answered at once (Discord wants an answer within 3 s); the switch is reported when done.
        await reply_now(
            interaction,
            "Configuration reloaded. The new engine is starting beside the old one; "
            "jobs already queued finish there, and I'll say here when the new one takes over.",
        )
        asyncio.create_task(report_switch(bot, interaction), name="engine-switch")

    async def report_switch(bot, interaction: discord.Interaction) -> None:
        try:
            await bot.switch_engine()
            text = f"The new engine is serving now (model `{svc.model_id}`)."
        except EngineUnavailable as exc:
            log.error("engine switch failed: %s", exc)
            text = "The new engine did not start in time, so the old one keeps serving; check the [engine] settings."
        except Exception:
            log.exception("engine switch failed")
            text = "The new engine could not start, so the old one keeps serving; the log says why."
        try:
            await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.info("could not report the engine switch: %s", exc)

    tree.add_command(group)
