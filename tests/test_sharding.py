"""The auto-sharded bot: two gateway shards, each guild's interactions answered once by its own shard."""

from __future__ import annotations

import discord

from tests.bot_harness import running_bot
from tests.discord_sim import DiscordSimulator
from tests.test_bot_e2e import ALICE, finished, option


async def test_two_shards_each_answer_their_own_guild(tmp_path):
    sim = DiscordSimulator()
    sim.recommended_shards = 2
    await sim.start()
    try:
        async with running_bot(tmp_path, sim, discord_settings={"sharded": True}) as (_, bot):
            assert isinstance(bot, discord.AutoShardedClient)
            await sim.wait_for(lambda: sorted(sim.shard_of.values()) == [(0, 2), (1, 2)], 60)
            other_guild = sim.guild_id + (1 << 22)  # the next shard's guild
            assert {sim.shard_for(sim.guild_id, 2), sim.shard_for(other_guild, 2)} == {0, 1}
            for guild in (sim.guild_id, other_guild):
                inter = await finished(
                    sim, await sim.invoke(ALICE, "random", [option("seed", 3, 4)], guild_id=guild), 60
                )
                assert "seed3.png" in inter.all_files(), inter.last_content()
            assert sim.interactions_per_shard == {(0, 2): 1, (1, 2): 1}, (
                "each guild's interaction went to its own shard"
            )
    finally:
        await sim.stop()
