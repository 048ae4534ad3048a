"""A burst from many members through the real bot (reduced size of bench/bot_load.py):
everything acknowledged and answered, the queue and per-member caps hold, memory flat."""

from __future__ import annotations

import asyncio

from bench.bot_load import measure


def test_a_burst_is_acknowledged_bounded_and_leaves_memory_flat():
    r = asyncio.run(measure(20, 100, server_rate=100_000, per_member_queued=1, queue_size=16))
    for burst in r["bursts"]:
        assert burst["acknowledged"] == burst["interactions"] == 100
        assert burst["ack_ms_max"] < 3000, "Discord drops interactions not acknowledged within 3 s"
        answers = burst["answers"]
        assert answers.get("other", 0) == 0, burst["other_examples"]
        assert answers.get("queue_full", 0) > 0, "the queue is bounded"
        assert answers.get("member_cap", 0) > 0, "per-member caps hold"
        assert answers.get("answered", 0) >= 20
    assert r["engine_after"]["queued"] == 0 and r["engine_after"]["restarts"] == 0
    rss = r["rss_mb"]
    for proc in ("bot", "engine"):
        growth = rss["after_burst_2"][proc] - rss["after_burst_1"][proc]
        assert growth < 40, f"{proc} grew {growth} MB over an identical second burst: {rss}"
