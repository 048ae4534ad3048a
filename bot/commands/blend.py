"""/blend, /average, /mix, /swap, /grid: faces from several members."""

from __future__ import annotations

import re

import discord
from discord import app_commands

from bot.commands.common import Reply, Services, faces_of, name_of
from bot.commands.running import run_job
from engine.protocol import AverageRequest, BlendRequest, GridRequest, MixRequest, SwapRequest
from engine.protocol.requests import LAYER_GROUPS

LAYER_CHOICES = [app_commands.Choice(name=n, value=n) for n in LAYER_GROUPS]
LAYER_MEANING = {"coarse": "pose and face shape", "middle": "features and expression", "fine": "colours and skin"}
MENTION = re.compile(r"<@!?(\d{1,20})>")
RATIO = app_commands.Range[float, BlendRequest.RATIO[0], BlendRequest.RATIO[1]]
SPLIT = app_commands.Range[int, MixRequest.SPLIT[0], MixRequest.SPLIT[1]]


def mentioned(users: str, most: int) -> list[int]:
    """Member ids mentioned in ``users``, in order, each once; a Reply when there are too many."""
    ids = list(dict.fromkeys(int(m) for m in MENTION.findall(users)))
    if len(ids) > most:
        raise Reply(f"At most {most} members at once, please.")
    return ids


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="blend", description="A face between two members: (1-ratio)·a + ratio·b.")
    @app_commands.describe(a="First member", b="Second member",
                           ratio="0 = a, 1 = b; beyond 0..1 exaggerates (1.5 = 50% more like b)",
                           layers="Blend only some styles: coarse (pose, shape), middle, fine (colours)")
    @app_commands.choices(layers=LAYER_CHOICES)
    async def blend(interaction: discord.Interaction, a: discord.User, b: discord.User, ratio: RATIO = 0.5,
                    layers: str = "all") -> None:
        fa, fb = await faces_of(svc, interaction, [a, b])
        await run_job(svc, interaction, BlendRequest(a=fa, b=fb, ratio=ratio, layers=layers),
                      title=f"**{name_of(a)} ⟷ {name_of(b)}** "  # the engine's sentence says the ratio and styles
                            + ("" if layers == "all" else f"({LAYER_MEANING[layers]}) "))

    @tree.command(name="average", description="The mean face of several members.")
    @app_commands.describe(users="Mention two or more members, e.g. @ana @bo @cy")
    async def average(interaction: discord.Interaction, users: str) -> None:
        ids = mentioned(users, min(svc.settings.limits.morph_max_members, AverageRequest.FACES[1]))
        if len(ids) < AverageRequest.FACES[0]:
            raise Reply("Mention at least two members, like @ana @bo.")
        faces = await faces_of(svc, interaction, [discord.Object(i) if i != interaction.user.id else None for i in ids])
        await run_job(svc, interaction, AverageRequest(faces=faces), title="**/average** ")

    @tree.command(
        name="mix", description="Style mixing: pose and face shape from one member, colours and skin from another."
    )
    @app_commands.describe(
        coarse="Whose pose and face shape",
        fine="Whose colours, skin and hair",
        split="Style index where the second face takes over",
    )
    async def mix(
        interaction: discord.Interaction, coarse: discord.User, fine: discord.User, split: SPLIT | None = None
    ) -> None:
        fc, ff = await faces_of(svc, interaction, [coarse, fine])
        await run_job(
            svc,
            interaction,
            MixRequest(coarse=fc, fine=ff, split=split),
            title=f"**{name_of(coarse)}'s shape, {name_of(fine)}'s colours** ",
        )

    @tree.command(
        name="swap",
        description="Two members swap their fine styles: each keeps their shape and wears the other's finish.",
    )
    @app_commands.describe(a="First member", b="Second member", split="Style index where the swapped styles begin")
    async def swap(
        interaction: discord.Interaction, a: discord.User, b: discord.User, split: SPLIT | None = None
    ) -> None:
        fa, fb = await faces_of(svc, interaction, [a, b])
        await run_job(svc, interaction, SwapRequest(a=fa, b=fb, split=split), title=f"**{name_of(a)} ⇄ {name_of(b)}** ")

    @mix.autocomplete("split")
    @swap.autocomplete("split")
    async def split_choices(
        interaction: discord.Interaction, current: int | str | None
    ) -> list[app_commands.Choice[int]]:
        """The style indices the loaded model takes (1 … its styles − 1), not the option's widest range."""
        info = svc.transport.info
        if info is None:
            return []
        typed = str(current or "").strip()
        return [
            app_commands.Choice(name=f"{k}: the first {k} style{'s' if k > 1 else ''} from the first face", value=k)
            for k in range(1, info.num_ws)
            if str(k).startswith(typed)
        ][:25]

    @tree.command(name="grid", description="A plane through three members' faces, as a montage.")
    @app_commands.describe(a="Top-left corner", b="Along the rows", c="Down the columns")
    async def grid(interaction: discord.Interaction, a: discord.User, b: discord.User, c: discord.User) -> None:
        fa, fb, fc = await faces_of(svc, interaction, [a, b, c])
        await run_job(svc, interaction, GridRequest(a=fa, b=fb, c=fc), title="**/grid** ")
