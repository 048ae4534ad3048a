"""Right-click commands (Discord's context menus): on a member, "Blend with me", "Morph with me"
and "Look-alike"; on a message with a photo, "Project this photo".

Each one *is* the slash command it names, called with the member or photo the menu was opened
on: the same budgets, consent, privacy, refunds, face picker and answers, because it runs the
same code. Registered after the slash commands (it looks them up in the tree).
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.common import Reply, Services

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def photo_in(message: discord.Message) -> discord.Attachment:
    """The message's first image attachment; a Reply when it has none."""
    for attachment in message.attachments:
        ctype = (attachment.content_type or "").split(";")[0].strip().lower()
        if ctype.startswith("image/") or (not ctype and attachment.filename.lower().endswith(IMAGE_SUFFIXES)):
            return attachment
    raise Reply("That message has no photo attached; right-click a message with a selfie in it.")


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    def slash(name: str):
        command = tree.get_command(name)
        if command is None:
            raise RuntimeError(f"the /{name} command must be registered before its right-click menu")
        return command.callback

    blend, morph, lookalike, project = (slash(n) for n in ("blend", "morph", "lookalike", "project"))

    @tree.context_menu(name="Blend with me")
    async def blend_with_me(interaction: discord.Interaction, user: discord.User) -> None:
        if user.id == interaction.user.id:
            raise Reply("Blending you with yourself gives your own face; right-click another member.")
        await blend(interaction, interaction.user, user)

    @tree.context_menu(name="Morph with me")
    async def morph_with_me(interaction: discord.Interaction, user: discord.User) -> None:
        if user.id == interaction.user.id:
            raise Reply("A morph needs two faces; right-click another member.")
        await morph(interaction, users=f"<@{interaction.user.id}> <@{user.id}>")

    @tree.context_menu(name="Look-alike")
    async def look_alike(interaction: discord.Interaction, user: discord.User) -> None:
        await lookalike(interaction, user)

    @tree.context_menu(name="Project this photo")
    async def project_this_photo(interaction: discord.Interaction, message: discord.Message) -> None:
        if message.author.id != interaction.user.id:
            raise Reply("Project only a photo you posted yourself: the face becomes yours here.")
        await project(interaction, photo_in(message))
