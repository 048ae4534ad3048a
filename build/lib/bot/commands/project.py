"""/project, /me, /random, /adopt: getting a face into latent space."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.common import Reply, Services, defer, latent_or_answer, name_of, reply_now, run_job
from bot.commands.views import after_project_view

ALLOWED_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(name="project", description="Project your selfie into StyleGAN2's latent space; it becomes your face here.")
    @app_commands.describe(image="A photo with your face (PNG, JPEG, WebP or GIF)",
                           steps="Optimisation steps: more is closer but slower")
    async def project(interaction: discord.Interaction, image: discord.Attachment,
                      steps: app_commands.Range[int, 10, 2000] | None = None) -> None:
        await defer(interaction)
        steps = steps or svc.settings.limits.project_steps
        try:
            if steps > svc.settings.limits.max_project_steps:
                raise Reply(f"At most {svc.settings.limits.max_project_steps} steps, please.")
            if image.size > svc.settings.limits.max_image_bytes:
                raise Reply(f"That file is {image.size / 1e6:.1f} MB; the limit is "
                            f"{svc.settings.limits.max_image_bytes / 1e6:.0f} MB.")
            ctype = (image.content_type or "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith("image/"):
                raise Reply("That attachment is not an image; send a PNG, JPEG, WebP or GIF photo.")
            try:
                data = await image.read()
            except discord.HTTPException:
                raise Reply("I could not download that attachment; try sending it again.") from None
        except Reply as exc:
            await interaction.edit_original_response(content=str(exc))
            return
        await run_job(svc, interaction, "project", {"image": data, "steps": steps,
                                                    "max_image_bytes": svc.settings.limits.max_image_bytes},
                      title="**/project** ", keep_latent="me", view_factory=after_project_view)

    @tree.command(name="me", description="Show your face in latent space, or another member's if they share it.")
    @app_commands.describe(user="Whose face (default: yours)")
    async def me(interaction: discord.Interaction, user: discord.User | None = None) -> None:
        ws = await latent_or_answer(svc, interaction, user)
        if ws is None:
            return
        who = "Your" if user is None or user.id == interaction.user.id else f"{name_of(user)}'s"
        await run_job(svc, interaction, "render", latents={"a": ws}, title=f"{who} face ")

    @tree.command(name="random", description="A person who does not exist; /adopt keeps it as your face.")
    @app_commands.describe(seed="Seed (the same seed draws the same person)",
                           truncation="0 = the average face, 1 = anything goes")
    async def random_face(interaction: discord.Interaction, seed: app_commands.Range[int, 0, 4294967295] | None = None,
                          truncation: app_commands.Range[float, 0.0, 1.0] = 0.7) -> None:
        import secrets

        seed = secrets.randbelow(2**32) if seed is None else seed
        await run_job(svc, interaction, "random", {"seed": seed, "truncation": truncation}, keep_latent="pending")

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
