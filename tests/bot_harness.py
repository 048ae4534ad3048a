"""Start the real bot (discord.py client + engine process + SQLite) against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import discord
import torch

from bot.app import configure_api_base, make_bot
from bot.config import parse_settings
from engine.model.checkpoints import DEFAULT_MODEL, save_native
from engine.model.networks import Generator, GeneratorConfig
from tests.discord_sim import DiscordSimulator

ORIGINAL_BASE = discord.http.Route.BASE
ORIGINAL_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


def engine_model(tmp: Path) -> str | None:
    """The embedded model; before it has been trained, a random-init 64-px stand-in."""
    if DEFAULT_MODEL.exists():
        return None
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=64, z_dim=100, w_dim=256, mapping_layers=8,
                                  channels={4: 256, 8: 256, 16: 256, 32: 128, 64: 64}))
    path = tmp / "standin.safetensors"
    save_native(G, path, {"note": "random-init stand-in for tests"})
    return str(path)


@contextlib.asynccontextmanager
async def running_bot(tmp: Path, sim=None, engine: dict | None = None, discord_settings: dict | None = None,
                      sections: dict | None = None, **limits):
    """The bot against ``sim`` (default: a new in-process DiscordSimulator); anything with
    ``api_base``, ``gateway_url`` and ``wait_bot_ready`` will do."""
    own = sim is None
    if own:
        sim = DiscordSimulator()
        await sim.start()
    model = engine_model(tmp)
    config = {"discord": {"token": "sim-token", "api_base": sim.api_base, "gateway_url": sim.gateway_url,
                          **(discord_settings or {})},
              "storage": {"database": str(tmp / "wspace.sqlite3")},
              "engine": {"threads": 1, **({"model": model} if model else {}), **(engine or {})},
              "limits": {"project_steps": 20, "progress_interval": 0.5, **limits}, **(sections or {})}
    settings = parse_settings(config)
    configure_api_base(settings)
    bot = make_bot(settings)
    task = asyncio.create_task(bot.start("sim-token"))
    try:
        await sim.wait_bot_ready(lambda: bot.services is not None, 60)
        await bot.services.transport.wait_ready(120)
        yield sim, bot
    finally:
        await bot.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if own:
            await sim.stop()
        discord.http.Route.BASE = ORIGINAL_BASE
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = ORIGINAL_GATEWAY
