"""/age, /edit, /loop: moving a face along learned directions."""

from __future__ import annotations

import re

import discord
from discord import app_commands

from bot.commands.common import Services, faces_of, name_of, plain
from bot.commands.running import run_job
from bot.commands.views import after_project_view
from engine.protocol import EditRequest, LoopRequest

AMOUNT = app_commands.Range[float, EditRequest.AMOUNT[0], EditRequest.AMOUNT[1]]
ATTRIBUTE = app_commands.Range[str, 1, EditRequest.DIRECTION_MAX]  # Discord refuses longer; plain() bounds a fake
UNNAMED = re.compile(r"sefa(\d{1,3})")  # directions the model's own weights give (SeFa), with no human label


def shown(direction: str) -> str:
    """A direction as members read it: "surprise 1" for the model's unlabelled ones."""
    match = UNNAMED.fullmatch(direction)
    return f"surprise {int(match[1]) + 1}" if match else direction


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    async def edit_job(interaction, attribute: str, amount: float, user, strip: bool) -> None:
        (face,) = await faces_of(svc, interaction, [user])
        whose = "" if user is None or user.id == interaction.user.id else f"{name_of(user)}, "
        await run_job(
            svc,
            interaction,
            EditRequest(face=face, direction=attribute, amount=amount, strip=strip),
            title=f"**{whose}{plain(shown(attribute))} {amount:+g}** ",
            view_factory=None if strip else after_project_view,
        )

    @tree.command(name="age", description="Make a face older (+) or younger (-).")
    @app_commands.describe(
        amount="-5 (much younger) to 5 (much older)",
        user="Whose face (default: yours)",
        strip="Show a strip from -amount to +amount instead",
    )
    async def age(
        interaction: discord.Interaction, amount: AMOUNT, user: discord.User | None = None, strip: bool = False
    ) -> None:
        await edit_job(interaction, "age", amount, user, strip)

    @tree.command(name="edit", description="Move a face along a learned direction (smile, gender, pose, …).")
    @app_commands.describe(
        attribute="Which direction",
        amount="-5 to 5",
        user="Whose face (default: yours)",
        strip="Show a strip from -amount to +amount instead",
    )
    async def edit(
        interaction: discord.Interaction,
        attribute: ATTRIBUTE,
        amount: AMOUNT,
        user: discord.User | None = None,
        strip: bool = False,
    ) -> None:
        await edit_job(interaction, attribute, amount, user, strip)

    @edit.autocomplete("attribute")
    async def attribute_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = svc.transport.info.directions if svc.transport.info else []
        typed = current.lower()
        return [
            app_commands.Choice(name=n if shown(n) == n else f"{shown(n)}: a direction the model found, unnamed",
                                value=n)
            for n in names
            if typed in n.lower() or typed in shown(n)
        ][:25]

    @tree.command(name="loop", description="A face that breathes: a seamless looping GIF.")
    @app_commands.describe(user="Whose face (default: yours)", layers="Which styles move")
    @app_commands.choices(layers=[app_commands.Choice(name=n, value=n) for n in ("coarse", "middle", "fine", "all")])
    async def loop(interaction: discord.Interaction, user: discord.User | None = None, layers: str = "middle") -> None:
        (face,) = await faces_of(svc, interaction, [user])
        frames = max(LoopRequest.FRAMES[0], min(48, svc.settings.limits.max_frames))
        await run_job(svc, interaction, LoopRequest(face=face, layers=layers, frames=frames), title="**/loop** ")
