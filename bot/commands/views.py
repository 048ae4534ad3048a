"""Buttons under results for the obvious next step. They are ``DynamicItem``s: the
custom id carries everything (direction, amount, whose face), so they keep working
after the bot restarts."""

from __future__ import annotations

import discord

from bot.commands.common import latent_or_answer
from bot.commands.running import run_job
from engine.protocol import EditRequest

NEXT_STEPS = (("age", -2, "Younger"), ("age", 2, "Older"), ("smile", 2, "Smile"))


class EditButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"wspace:edit:(?P<direction>[a-z_]{1,32}):(?P<amount>-?\d{1,2}):(?P<user>\d{1,20})"):
    def __init__(self, direction: str, amount: int, user_id: int, label: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=label or f"{direction} {amount:+d}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"wspace:edit:{direction}:{amount}:{user_id}",
            )
        )
        self.direction, self.amount, self.user_id = direction, amount, user_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["direction"], int(match["amount"]), int(match["user"]), item.label)

    async def callback(self, interaction: discord.Interaction) -> None:
        svc = interaction.client.services
        owner = None if self.user_id == interaction.user.id else discord.Object(self.user_id)
        face = await latent_or_answer(svc, interaction, owner)
        if face is None:
            return
        await run_job(
            svc,
            interaction,
            EditRequest(face=face, direction=self.direction, amount=float(self.amount)),
            title=f"**{self.direction} {self.amount:+d}** ",
        )


def after_project_view(user_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for direction, amount, label in NEXT_STEPS:
        view.add_item(EditButton(direction, amount, user_id, label))
    return view
