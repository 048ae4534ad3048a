"""/morph: the team morph, a looping walk through members' faces."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.blend import MENTION
from bot.commands.common import Reply, Services, defer, latent_of, run_job, still_here


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="morph", description="A looping GIF (or MP4) walking through members' faces: the team morph.")
    @app_commands.describe(users="Members to include, e.g. @ana @bo (default: everyone who shares a face)",
                           frames="Frames in the whole loop", format="gif or mp4")
    @app_commands.choices(format=[app_commands.Choice(name="gif", value="gif"), app_commands.Choice(name="mp4", value="mp4")])
    async def morph(interaction: discord.Interaction, users: str | None = None,
                    frames: app_commands.Range[int, 8, 240] | None = None, format: str = "gif") -> None:
        await defer(interaction)
        cap = svc.settings.limits.morph_max_members
        try:
            if users:
                ids = list(dict.fromkeys(int(m) for m in MENTION.findall(users)))
                if not ids:
                    raise Reply("Mention the members to morph, like @ana @bo, or leave it empty for everyone who shares.")
                if len(ids) > cap:
                    raise Reply(f"At most {cap} members in one morph, please.")
                latents = [await latent_of(svc, interaction, None if i == interaction.user.id else discord.Object(i))
                           for i in ids]
            else:
                ids = await svc.storage.sharing_members_with_latents(interaction.guild_id or 0, svc.model_id)
                if interaction.user.id not in ids and await svc.storage.latent(
                        interaction.guild_id or 0, interaction.user.id, svc.model_id):
                    ids.append(interaction.user.id)
                ids = [i for i in ids if i == interaction.user.id
                       or await still_here(interaction, discord.Object(i))][:cap]  # members who left are skipped
                latents = [await latent_of(svc, interaction, None if i == interaction.user.id else discord.Object(i))
                           for i in ids]
            if len(latents) < 2:
                raise Reply("A morph needs at least two faces; ask members to /project and share with /privacy.")
        except Reply as exc:
            await interaction.edit_original_response(content=str(exc))
            return
        frames = min(frames or 12 * len(latents), svc.settings.limits.max_frames)
        await run_job(svc, interaction, "morph", {"frames": frames, "format": format},
                      {str(i): ws for i, ws in enumerate(latents)}, title=f"**The morph of {len(latents)} faces** ")
