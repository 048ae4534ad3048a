"""/project, /me, /random, /adopt: getting a face into latent space."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.commands.common import Reply, Services, declare_max, defer, faces_of, name_of, read_photo, refuse, reply_now
from bot.commands.running import files_of, run_job
from bot.commands.views import after_project_view
from engine.protocol import ProjectRequest, RandomRequest, RenderRequest, Result
from engine.protocol.requests import MAX_SEED

STEPS = app_commands.Range[int, ProjectRequest.STEPS[0], ProjectRequest.STEPS[1]]
TRUNCATION = app_commands.Range[float, RandomRequest.TRUNCATION[0], RandomRequest.TRUNCATION[1]]

PICK_SECONDS = 120


async def project_face(svc: Services, interaction: discord.Interaction, data: bytes, steps: int,
                       number: int | None) -> Result | None:
    """Project face ``number`` of the photo; with none given and several found, the result is
    the numbered faces (``Result.choose``), left for the caller to show."""
    title = "**/project** " if number is None else f"**/project** face {number}: "
    return await run_job(
        svc,
        interaction,
        ProjectRequest(
            image=data,
            steps=steps,
            face=number,
            ask_if_several=number is None,
            max_image_bytes=svc.settings.limits.max_image_bytes,
        ),
        title=title,
        keep="me",
        view_factory=after_project_view,
        show=lambda result: not result.choose,
    )


EXPIRED = "That menu has expired; send the photo again with /project."


class FacePicker(discord.ui.View):
    """A select menu under the numbered montage, shown only to the member who sent the photo
    (a group photo shows people who did not ask to be projected): they pick their face
    (largest first); the choice starts the projection, whose result alone is public. The
    photo stays in memory only."""

    def __init__(self, svc: Services, origin: discord.Interaction, data: bytes, steps: int, count: int) -> None:
        super().__init__(timeout=PICK_SECONDS)
        self.svc, self.origin, self.data, self.steps = svc, origin, data, steps
        self.message: discord.WebhookMessage | None = None  # the private message the menu is on
        options = [
            discord.SelectOption(label=f"Face {i}" + (" (the largest)" if i == 1 else ""), value=str(i))
            for i in range(1, min(count, 25) + 1)
        ]
        self.select = discord.ui.Select(
            placeholder="Which face is you?", options=options, custom_id=f"wspace:pick:{origin.id}"
        )
        self.select.callback = self.chosen
        self.add_item(self.select)
        svc.pickers.add(origin.id)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.origin.user.id:
            await interaction.response.send_message("Only the member who sent the photo can choose.", ephemeral=True)
            return False
        return True

    def stop(self) -> None:
        self.svc.pickers.discard(self.origin.id)
        super().stop()

    async def chosen(self, interaction: discord.Interaction) -> None:
        number = int(self.select.values[0])
        self.stop()
        await interaction.response.edit_message(
            content=f"Face {number} it is; its projection shows where you sent the photo.", attachments=[], view=None
        )
        self.data, data = b"", self.data
        await self.origin.edit_original_response(
            content=f"**/project** face {number}: starting…", attachments=[], view=None
        )
        await project_face(self.svc, self.origin, data, self.steps, number)

    async def on_timeout(self) -> None:
        self.svc.pickers.discard(self.origin.id)
        self.data = b""
        try:
            await self.origin.edit_original_response(
                content="No face was chosen in time, so nothing was projected; run /project again.",
                attachments=[],
                view=None,
            )
            if self.message is not None:
                await self.message.edit(content="No face was chosen in time.", attachments=[], view=None)
        except discord.HTTPException:
            pass


class PickExpired(discord.ui.DynamicItem[discord.ui.Select], template=r"wspace:pick:(?P<origin>[0-9]{1,20})"):
    """Any face menu, even one whose picker is gone (it chose, timed out, or the bot restarted):
    a press on a dead menu gets one private sentence instead of Discord's "interaction failed"."""

    def __init__(self, origin: int) -> None:
        super().__init__(
            discord.ui.Select(custom_id=f"wspace:pick:{origin}", options=[discord.SelectOption(label="-")])
        )
        self.origin = origin

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["origin"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if self.origin in interaction.client.services.pickers:
            return  # a live menu: its picker answers
        await refuse(interaction, EXPIRED)


def register(tree: app_commands.CommandTree, svc: Services) -> None:
    @tree.command(
        name="project", description="Project your selfie into StyleGAN2's latent space; it becomes your face here."
    )
    @app_commands.describe(
        image="A photo with your face (PNG, JPEG, WebP or GIF)", steps="Optimisation steps: more is closer but slower"
    )
    async def project(interaction: discord.Interaction, image: discord.Attachment, steps: STEPS | None = None) -> None:
        await defer(interaction)
        limits = svc.settings.limits
        steps = steps or limits.project_steps
        if steps > limits.max_project_steps:
            raise Reply(f"At most {limits.max_project_steps} steps, please.")
        data = await read_photo(svc, image)
        # One job: a photo of one face is projected at once; with several, the engine answers with
        # the numbered faces instead, and the member picks theirs (the choice is a second job).
        found = await project_face(svc, interaction, data, steps, None)
        if found is not None and found.choose:
            svc.limits.refund(interaction.guild_id or 0, interaction.user.id, "project")  # nothing was projected yet
            picker = FacePicker(svc, interaction, data, steps, found.choose)
            await interaction.edit_original_response(
                content=f"**/project** {found.choose} faces in that photo: I sent you a private menu to pick "
                "yours; only its projection will show here.",
                attachments=[],
                view=None,
            )
            picker.message = await interaction.followup.send(
                f"{found.text} Which one is you? (choose within {PICK_SECONDS // 60} minutes)",
                files=files_of(found),
                view=picker,
                ephemeral=True,
                wait=True,
            )


    declare_max(project, "steps", svc and svc.settings.limits.max_project_steps)

    @tree.command(name="me", description="Show your face in latent space, or another member's if they share it.")
    @app_commands.describe(user="Whose face (default: yours)")
    async def me(interaction: discord.Interaction, user: discord.User | None = None) -> None:
        (face,) = await faces_of(svc, interaction, [user])
        who = "Your" if user is None or user.id == interaction.user.id else f"{name_of(user)}'s"
        await run_job(svc, interaction, RenderRequest(face=face), title=f"**{who} face**: ")

    @tree.command(name="random", description="A person who does not exist; /adopt keeps it as your face.")
    @app_commands.describe(
        seed="Seed (the same seed draws the same person)", truncation="0 = the average face, 1 = anything goes"
    )
    async def random_face(
        interaction: discord.Interaction,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        truncation: TRUNCATION = 0.7,
    ) -> None:
        import secrets

        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else seed
        await run_job(svc, interaction, RandomRequest(seed=seed, truncation=truncation), keep="pending")

    @tree.command(name="adopt", description="Keep your last /random face as your own.")
    async def adopt(interaction: discord.Interaction) -> None:
        try:
            model_id = svc.model_id
            info = svc.transport.info
            ok = await svc.storage.adopt_pending(
                interaction.guild_id or 0, interaction.user.id, model_id, info.num_ws, info.w_dim
            )
        except Reply as exc:
            await reply_now(interaction, str(exc))
            return
        await reply_now(
            interaction,
            "Adopted: that face is yours now." if ok else "There is no /random face to adopt; run /random first.",
        )
