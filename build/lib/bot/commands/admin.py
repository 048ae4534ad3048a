"""/wspace stats and /wspace reload, for members with Manage Server."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.commands.common import Services, reply_now
from bot.config import ConfigError, load_settings

log = logging.getLogger("wspace.admin")


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    group = app_commands.Group(name="wspace", description="wspace administration",
                               default_permissions=discord.Permissions(manage_guild=True), guild_only=True)

    @group.command(name="stats", description="Queue, throughput, model and storage figures.")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def stats(interaction: discord.Interaction) -> None:
        e = svc.engine.stats()
        s = await svc.storage.stats(interaction.guild_id)
        jobs = ", ".join(f"{k} {v}" for k, v in sorted(s["jobs"].items())) or "none yet"
        lines = [
            f"**Queue** {e['queued']}/{e['queue_size']} · {e['jobs_last_hour']} jobs in the last hour"
            + (f" · mean {s['mean_job_seconds']} s" if s["mean_job_seconds"] else ""),
            f"**Engine** ({e['transport']}) {'up' if e['alive'] else 'down'} · model `{e['model_id']}` · {e['resolution']} px · "
            f"{e['device']} · restarts {e['restarts']} · directions: {', '.join(e['directions']) or 'none'}",
            *[f"**Worker** `{w['id']}` on {w['host']} · model `{w['model_id']}` · {w['device']} · "
              f"{w['jobs_done']} jobs ({w['jobs_per_minute']}/min){' · busy' if w['busy'] else ''}"
              for w in e.get("workers", [])],
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
            await reply_now(interaction, f"The config file has a problem, so I kept the old settings: {str(exc).splitlines()[-1].strip()}")
            return
        restart = settings.engine != svc.settings.engine
        interaction.client.apply_settings(settings)
        if restart:
            await interaction.client.restart_engine()
        await reply_now(interaction, "Configuration reloaded" + (" and the engine restarted." if restart else "."))

    tree.add_command(group)
