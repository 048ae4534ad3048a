"""/morph: the team morph, a looping walk through members' faces."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.blend import mentioned
from bot.commands.common import Reply, Services, declare_max, defer, faces_of, members_here
from bot.commands.running import precheck, run_job
from engine.protocol import MorphRequest

FRAMES = app_commands.Range[int, MorphRequest.FRAMES[0], MorphRequest.FRAMES[1]]


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="morph", description="A looping GIF (or MP4) walking through members' faces: the team morph.")
    @app_commands.describe(users="Members to include, e.g. @ana @bo (default: everyone who shares a face)",
                           frames="Frames in the whole loop", format="gif or mp4")
    @app_commands.choices(format=[app_commands.Choice(name=f, value=f) for f in MorphRequest.FORMATS])
    async def morph(interaction: discord.Interaction, users: str | None = None,
                    frames: FRAMES | None = None, format: str = "gif") -> None:
        precheck(svc, interaction, "morph")  # a refused morph looks nobody up
        await defer(interaction)
        cap = min(svc.settings.limits.morph_max_members, MorphRequest.FACES[1])
        if users:
            ids = mentioned(users, cap)
            if not ids:
                raise Reply("Mention the members to morph, like @ana @bo, or leave it empty for everyone who shares.")
        elif interaction.guild_id is None:
            raise Reply("In a direct message there is only your own face; morph in your server, or mention nobody "
                        "there and everyone who shares joins.")
        else:
            guild_id = interaction.guild_id
            ids = await svc.storage.sharing_members_with_latents(guild_id, svc.model_id)
            if interaction.user.id not in ids and await svc.storage.latent(guild_id, interaction.user.id, svc.model_id):
                ids.insert(0, interaction.user.id)
            ids = await members_here(interaction, ids, cap)  # members who left are skipped
        latents = await faces_of(
            svc, interaction, [None if i == interaction.user.id else discord.Object(i) for i in ids]
        )
        if len(latents) < MorphRequest.FACES[0]:
            raise Reply("A morph needs at least two faces; ask members to /project and share with /privacy.")
        request = MorphRequest(faces=latents, format=format)
        frames = max(MorphRequest.FRAMES[0], min(frames or request.frame_count, svc.settings.limits.max_frames))
        await run_job(
            svc,
            interaction,
            MorphRequest(faces=latents, frames=frames, format=format),
            title=f"**The morph of {len(latents)} faces** ",
        )

    declare_max(morph, "frames", svc and svc.settings.limits.max_frames)

