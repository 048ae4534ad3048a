"""The hostile-attachment corpus through the real bot: each upload gets one sentence (or
works), the database stays consistent and another member's data is never touched."""

from __future__ import annotations

import io

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from tests.bot_harness import running_bot
from tests.photos import encode, grace_hopper
from tests.test_bad_input import CORPUS
from tests.test_bot_e2e import finished, option, project

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALICE, MALLORY = 810000000000000001, 810000000000000002


def animated_gif() -> bytes:
    frames = [Image.fromarray(grace_hopper()), Image.fromarray(255 - grace_hopper())]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def three_faces() -> bytes:
    g = grace_hopper()
    small = np.asarray(Image.fromarray(g).resize((g.shape[1] // 2, g.shape[0] // 2)))
    canvas = np.full((g.shape[0], g.shape[1] + 2 * small.shape[1] + 40, 3), 200, np.uint8)
    canvas[:, :g.shape[1]] = g
    x = g.shape[1] + 20
    canvas[:small.shape[0], x:x + small.shape[1]] = small
    canvas[-small.shape[0]:, x + small.shape[1] + 10:x + 2 * small.shape[1] + 10] = small
    return encode(canvas, "JPEG")


def uploads() -> list[tuple[str, bytes, str]]:
    """Every 8th generated case, every named one, and what only a photo can be."""
    named = [c for c in CORPUS if not c[0].startswith(("random", "PNG", "JPEG", "WEBP", "GIF"))]
    sample = CORPUS[::8] + [c for c in named if c not in CORPUS[::8]]
    cases = [(name, data, "image/png") for name, data in sample]
    cases += [("animated GIF", animated_gif(), "image/gif"), ("three faces", three_faces(), "image/jpeg"),
              ("no face", encode(np.full((300, 300, 3), (120, 170, 230), np.uint8)), "image/png"),
              ("claims to be a PDF", encode(grace_hopper(), "JPEG"), "application/pdf")]
    return cases


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory):
    async with running_bot(tmp_path_factory.mktemp("hostile"), member_rate=10_000, server_rate=10_000,
                           per_member_queued=3) as (sim, bot):
        yield sim, bot


def one_sentence(text: str) -> bool:
    return bool(text) and "\n" not in text and text.rstrip()[-1] in ".!" and len(text) < 200


async def test_hostile_uploads_get_one_sentence_and_touch_no_one_else(env):
    sim, bot = env
    storage, model = bot.services.storage, bot.services.model_id
    first = await finished(sim, await project(sim, ALICE, encode(grace_hopper(), "JPEG"), "g.jpg", "image/jpeg"), 180)
    assert "likeness" in first.last_content(), first.last_content()
    alice_before = await storage.latent(sim.guild_id, ALICE, model)
    rows_before = await storage.rows_about(sim.guild_id, ALICE)

    cases = uploads()
    assert len(cases) >= 40
    answers = {}
    for name, data, content_type in cases:
        inter = await finished(sim, await project(sim, MALLORY, data, "upload.png", content_type), 180)
        text = inter.last_content()
        answers[name] = text
        if not inter.all_files():  # refused: one human sentence, never a traceback
            assert one_sentence(text), (name, text)
            assert "Traceback" not in text and "Error" not in text, (name, text)

    refused = [n for n, t in answers.items() if "likeness" not in t]
    assert {"empty", "bomb 30000x30000", "too many bytes", "no face", "claims to be a PDF"} <= set(refused), answers
    assert "I found 3 faces" in answers["three faces"] and "Which one is you?" in answers["three faces"], answers[
        "three faces"
    ]
    assert await storage.integrity_ok()
    alice_after = await storage.latent(sim.guild_id, ALICE, model)
    assert alice_after.ws.tobytes() == alice_before.ws.tobytes(), "another member's face was touched"
    assert await storage.rows_about(sim.guild_id, ALICE) == rows_before
    after = await finished(sim, await sim.invoke(MALLORY, "random", [option("seed", 5, 4)]), 60)
    assert "seed5.png" in after.all_files(), "the engine still serves the next job"
