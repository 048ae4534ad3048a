"""The Stop button under a long job's message (a projection, a team photo, a morph…).

The member who started the job, or a member with Manage Server, may press it; the job's
future resolves at once (``Transport.cancel``) and its own message says it stopped, while
the engine drops the job before its next step (engine/serving/stops.py). The custom id carries the
job id, but who may stop it is read from what the bot holds (``Services.stoppable``), not
from the button.
"""

from __future__ import annotations

import discord

from bot.commands.common import refuse

FINISHED = "That job has already finished."
NOT_YOURS = "Only the member who started this job (or a moderator) can stop it."


class StopButton(discord.ui.DynamicItem[discord.ui.Button], template=r"wspace:stop:(?P<job>[0-9a-f]{12})"):
    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(label="Stop", style=discord.ButtonStyle.danger,
                                           custom_id=f"wspace:stop:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        svc = interaction.client.services
        held = svc.stoppable.get(self.job_id)
        if held is None:
            await refuse(interaction, FINISHED)
            return
        owner, engine = held
        moderator = interaction.permissions.manage_guild and interaction.user.id != owner
        if interaction.user.id != owner and not moderator:
            await refuse(interaction, NOT_YOURS)
            return
        sentence = "A moderator stopped this." if moderator else "Stopped, as you asked."
        if not engine.cancel(self.job_id, sentence):
            await refuse(interaction, FINISHED)
            return
        try:
            await interaction.response.defer()  # the job's own message says it stopped
        except (discord.NotFound, discord.HTTPException):
            pass


def stop_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(StopButton(job_id))
    return view
