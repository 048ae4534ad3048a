"""/privacy and /forget: consent and erasure. No engine involved, answered at once."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.common import Services, reply_now
from bot.storage import StorageError


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="privacy", description="Choose whether other members may use your face.")
    @app_commands.describe(share="on: others may blend, mix and morph your face; off: only you")
    @app_commands.choices(
        share=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]
    )
    async def privacy(interaction: discord.Interaction, share: str) -> None:
        if interaction.guild_id is None and share == "on":
            await reply_now(
                interaction,
                "Sharing is per server: run /privacy share:on in the server where other members may use your face.",
            )
            return
        try:
            await svc.storage.set_share(interaction.guild_id or 0, interaction.user.id, share == "on")
        except StorageError:
            await reply_now(interaction, "My database is having trouble right now; try again in a minute.")
            return
        await reply_now(
            interaction,
            "Sharing is on: other members can use your face."
            if share == "on"
            else "Sharing is off: only you can use your face.",
        )

    @tree.command(name="forget", description="Delete everything stored about you in this server.")
    async def forget(interaction: discord.Interaction) -> None:
        key = (interaction.guild_id or 0, interaction.user.id)
        svc.forget_epoch[key] += 1  # a job still running for you will not store its result
        try:
            await svc.storage.forget(*key)
        except StorageError:
            await reply_now(
                interaction, "My database is having trouble right now; nothing was deleted, try again in a minute."
            )
            return
        await reply_now(interaction, "Done: your face, your settings and your job history here are deleted.")
