"""/blend, /average, /mix, /grid: faces from several members."""

from __future__ import annotations

import re

import discord
from discord import app_commands

from bot.commands.common import Reply, Services, defer, latent_of, name_of, run_job

LAYER_CHOICES = [app_commands.Choice(name=n, value=n) for n in ("all", "coarse", "middle", "fine")]
LAYER_MEANING = {"coarse": "pose and face shape", "middle": "features and expression", "fine": "colours and skin"}
MENTION = re.compile(r"<@!?(\d{1,20})>")


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    async def gather(interaction, users) -> dict | None:
        try:
            return {str(i): await latent_of(svc, interaction, u) for i, u in enumerate(users)}
        except Reply as exc:
            await interaction.edit_original_response(content=str(exc))
            return None

    @tree.command(name="blend", description="A face between two members: (1-ratio)·a + ratio·b.")
    @app_commands.describe(a="First member", b="Second member",
                           ratio="0 = a, 1 = b; beyond 0..1 exaggerates (1.5 = 50% more like b)",
                           layers="Blend only some styles: coarse (pose, shape), middle, fine (colours)")
    @app_commands.choices(layers=LAYER_CHOICES)
    async def blend(interaction: discord.Interaction, a: discord.User, b: discord.User,
                    ratio: app_commands.Range[float, -2.0, 3.0] = 0.5, layers: str = "all") -> None:
        await defer(interaction)
        got = await gather(interaction, [a, b])
        if got is not None:
            await run_job(svc, interaction, "blend", {"ratio": ratio, "layers": layers}, {"a": got["0"], "b": got["1"]},
                          title=f"**{name_of(a)} ⟷ {name_of(b)}** at {ratio:g}"
                                + ("" if layers == "all" else f", {layers} styles only ({LAYER_MEANING[layers]})") + " ")

    @tree.command(name="average", description="The mean face of several members.")
    @app_commands.describe(users="Mention two or more members, e.g. @ana @bo @cy")
    async def average(interaction: discord.Interaction, users: str) -> None:
        await defer(interaction)
        ids = list(dict.fromkeys(int(m) for m in MENTION.findall(users)))
        if len(ids) < 2:
            await interaction.edit_original_response(content="Mention at least two members, like @ana @bo.")
            return
        if len(ids) > svc.settings.limits.morph_max_members:
            await interaction.edit_original_response(
                content=f"At most {svc.settings.limits.morph_max_members} members at once, please.")
            return
        got = await gather(interaction, [discord.Object(i) if i != interaction.user.id else None for i in ids])
        if got is not None:
            await run_job(svc, interaction, "average", latents=got, title=f"**The average of {len(ids)} faces** ")

    @tree.command(name="mix", description="Style mixing: pose and face shape from one member, colours and skin from another.")
    @app_commands.describe(coarse="Whose pose and face shape", fine="Whose colours, skin and hair",
                           split="Style index where the second face takes over")
    async def mix(interaction: discord.Interaction, coarse: discord.User, fine: discord.User,
                  split: app_commands.Range[int, 1, 17] | None = None) -> None:
        await defer(interaction)
        got = await gather(interaction, [coarse, fine])
        if got is not None:
            await run_job(svc, interaction, "mix", {"split": split}, {"coarse": got["0"], "fine": got["1"]},
                          title=f"**{name_of(coarse)}'s shape, {name_of(fine)}'s colours** ")

    @tree.command(name="grid", description="A plane through three members' faces, as a montage.")
    @app_commands.describe(a="Top-left corner", b="Along the rows", c="Down the columns")
    async def grid(interaction: discord.Interaction, a: discord.User, b: discord.User, c: discord.User) -> None:
        await defer(interaction)
        got = await gather(interaction, [a, b, c])
        if got is not None:
            await run_job(svc, interaction, "grid", {"size": 5}, {"a": got["0"], "b": got["1"], "c": got["2"]},
                          title="**/grid** ")
