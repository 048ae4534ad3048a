"""/project, /me, /random, /adopt: getting a face into latent space."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.common import Reply, Services, defer, faces_of, name_of, reply_now
from bot.commands.running import run_job
from bot.commands.views import after_project_view
from engine.protocol import ProjectRequest, RandomRequest, RenderRequest
from engine.protocol.requests import MAX_SEED

STEPS = app_commands.Range[int, ProjectRequest.STEPS[0], ProjectRequest.STEPS[1]]
TRUNCATION = app_commands.Range[float, RandomRequest.TRUNCATION[0], RandomRequest.TRUNCATION[1]]

ALLOWED_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="project", description="Project your selfie into StyleGAN2's latent space; it becomes your face here.")
    @app_commands.describe(image="A photo with your face (PNG, JPEG, WebP or GIF)",
                           steps="Optimisation steps: more is closer but slower")
    async def project(interaction: discord.Interaction, image: discord.Attachment,
                      steps: STEPS | None = None) -> None:
        await defer(interaction)
        limits = svc.settings.limits
        steps = steps or limits.project_steps
        if steps > limits.max_project_steps:
            raise Reply(f"At most {limits.max_project_steps} steps, please.")
        if image.size > limits.max_image_bytes:
            raise Reply(f"That file is {image.size / 1e6:.1f} MB; the limit is {limits.max_image_bytes / 1e6:.0f} MB.")
        ctype = (image.content_type or "").split(";")[0].strip().lower()
        if ctype and not ctype.startswith("image/"):
            raise Reply("That attachment is not an image; send a PNG, JPEG, WebP or GIF photo.")
        try:
            data = await image.read()
        except discord.HTTPException:
            raise Reply("I could not download that attachment; try sending it again.") from None
        await run_job(svc, interaction, ProjectRequest(image=data, steps=steps, max_image_bytes=limits.max_image_bytes),
                      title="**/project** ", keep="me", view_factory=after_project_view)

    @tree.command(name="me", description="Show your face in latent space, or another member's if they share it.")
    @app_commands.describe(user="Whose face (default: yours)")
    async def me(interaction: discord.Interaction, user: discord.User | None = None) -> None:
        (face,) = await faces_of(svc, interaction, [user])
        who = "Your" if user is None or user.id == interaction.user.id else f"{name_of(user)}'s"
        await run_job(svc, interaction, RenderRequest(face=face), title=f"{who} face ")

    @tree.command(name="random", description="A person who does not exist; /adopt keeps it as your face.")
    @app_commands.describe(seed="Seed (the same seed draws the same person)",
                           truncation="0 = the average face, 1 = anything goes")
    async def random_face(interaction: discord.Interaction, seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
                          truncation: TRUNCATION = 0.7) -> None:
        import secrets

        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
        await run_job(svc, interaction, RandomRequest(seed=seed, truncation=truncation), keep="pending")

    @tree.command(name="adopt", description="Keep your last /random face as your own.")
    async def adopt(interaction: discord.Interaction) -> None:
        try:
            model_id = svc.model_id
            info = svc.engine.info
            ok = await svc.storage.adopt_pending(interaction.guild_id or 0, interaction.user.id, model_id,
                                                 info.num_ws, info.w_dim)
        except Reply as exc:
            await reply_now(interaction, str(exc))
            return
        await reply_now(interaction, "Adopted: that face is yours now." if ok
                        else "There is no /random face to adopt; run /random first.")
