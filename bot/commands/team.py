"""/team, /claim, /lookalike: a whole group photo in latent space, and who you look like.

A group photo holds people who did not ask to be projected. Its faces are kept as
unclaimed *team faces* of the channel where /team ran: nobody's face until a member
/claims one, never used by any other command, deleted when claimed, when they expire
(``limits.team_face_hours``) or when the member who ran /team uses /forget.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.common import (
    Refusal,
    Services,
    declare_max,
    defer,
    display_name,
    faces_of,
    members_here,
    name_of,
    read_photo,
    reply_now,
)
from bot.commands.running import files_of, precheck, run_job
from engine.protocol import LookalikeRequest, StrangerRequest, TeamRequest
from engine.protocol.requests import MAX_FACES

LOOKALIKE_MEMBERS = 64  # sharing members a /lookalike compares at most (and asks Discord about at most twice that)
FRAMES = app_commands.Range[int, TeamRequest.FRAMES[0], TeamRequest.FRAMES[1]]
CLAIMED = {
    "no_team": "There is no /team photo in this channel to claim from (or its faces have expired).",
    "no_face": "That number is not one of the unclaimed faces of this channel's latest /team photo.",
    "taken": "Another member claimed that face a moment before you; pick another number.",
    "other_model": "Those team faces were made with another model than the one loaded now; run /team again.",
}


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="team", description="Every face of a group photo projected, and morphed into one looping GIF.")
    @app_commands.describe(image="A group photo", frames="Frames in the whole loop", format="gif or mp4")
    @app_commands.choices(format=[app_commands.Choice(name=f, value=f) for f in TeamRequest.FORMATS])
    async def team(interaction: discord.Interaction, image: discord.Attachment, frames: FRAMES | None = None,
                   format: str = "gif") -> None:
        await defer(interaction)
        limits = svc.settings.limits
        data = await read_photo(svc, image)
        guild_id, channel_id, owner = interaction.guild_id or 0, interaction.channel_id or 0, interaction.user.id
        hours = limits.team_face_hours

        async def keep_team(result, forgot: bool) -> str:
            if forgot:
                return "\nYou ran /forget while this was running, so none of these faces were kept."
            await svc.storage.save_team(result.job_id, guild_id, channel_id, owner, result.model_id, list(result.faces),
                                        hours * 3600)
            return (f"\nAnyone in this channel can adopt one of these faces as their own with `/claim number` "
                    f"(numbered as on the picture). They are nobody's face until claimed, can be claimed only here, "
                    f"and are deleted after {hours:g} hours or when {name_of(interaction.user)} "
                    "uses /forget.")

        request = TeamRequest(
            image=data,
            steps=limits.team_steps,
            format=format,
            max_image_bytes=limits.max_image_bytes,
            frames=None if frames is None else min(frames, limits.max_frames),
        )
        await run_job(svc, interaction, request, title="**/team** ", after=keep_team)


    declare_max(team, "frames", svc and svc.settings.limits.max_frames)

    @tree.command(name="claim", description="Adopt one face of this channel's latest /team photo as your own.")
    @app_commands.describe(number="The face's number on the /team picture")
    async def claim(interaction: discord.Interaction, number: app_commands.Range[int, 1, MAX_FACES]) -> None:
        outcome = await svc.storage.claim_team_face(
            interaction.guild_id or 0, interaction.channel_id or 0, interaction.user.id, number, svc.model_id
        )
        if outcome != "claimed":
            raise Refusal(CLAIMED[outcome])  # told to the member alone, as every refusal
        await reply_now(
            interaction,
            f"Face {number} of the team photo is your face now; /me shows it, and others may "
            "use it only if you share with /privacy.",
            ephemeral=False,
        )

    @tree.command(
        name="lookalike",
        description="Who looks like you: the nearest member who shares, and a stranger the generator draws.",
    )
    @app_commands.describe(user="Whose look-alikes (default: yours)")
    async def lookalike(interaction: discord.Interaction, user: discord.User | None = None) -> None:
        precheck(svc, interaction, "lookalike")  # a refused search looks nobody up
        (face,) = await faces_of(svc, interaction, [user])
        guild_id = interaction.guild_id or 0
        target_id = interaction.user.id if user is None else user.id
        ids = (
            []
            if interaction.guild_id is None
            else [  # in a DM nobody has consented: only the stranger
                i for i in await svc.storage.sharing_members_with_latents(guild_id, svc.model_id) if i != target_id
            ]
        )
        ids = await members_here(interaction, ids, LOOKALIKE_MEMBERS)
        others = await svc.storage.faces_of_members(guild_id, svc.model_id, ids)
        title, shown = "**/lookalike** ", ()
        if others:
            found = await run_job(
                svc, interaction, LookalikeRequest(face=face, others=tuple(others.values())), title=title, show=False
            )
            if found is None:
                return
            nearest = list(others)[found.figures["nearest"] - 1]
            title += f"Nearest member: {await display_name(interaction, nearest)}, {found.text}\n"
            shown = tuple(files_of(found))  # both faces have consent: the asker's (or a sharer's) and a sharer's
        elif interaction.guild_id is None:
            title += "In a direct message I compare you only with strangers; in a server, with members who share.\n"
        else:
            title += "No other member shares a face yet.\n"
        await run_job(
            svc,
            interaction,
            StrangerRequest(face=face, seconds=svc.settings.limits.stranger_seconds),
            title=title,
            extra_files=shown,
        )
