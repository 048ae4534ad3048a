"""Where a burst's acknowledgement time goes, printed as JSON.

Runs ``bench/bot_load.py``'s burst (the real bot, its engine and the simulator in its own
process) with timestamps added from outside: when the simulator sent each
INTERACTION_CREATE, when the bot parsed it, when it started the callback request, and
when the simulator handled that request (all on the machine's one monotonic clock). Per
burst, p50/p99/max of each leg:

- ``to_bot``: the simulator sent the event -> the bot parsed it;
- ``in_bot``: parsed -> the bot started its acknowledgement;
- ``to_ack``: that request started -> the simulator recorded it (waiting for a pooled
  connection, then the simulator's own queue);

and ``others_before_last_ack`` (other requests that got a connection before the burst's
last acknowledgement), the longest pause between the simulator's request handlers, and
the bot's full (generation-2) garbage collections during the burst.

    python -m bench.ack_split [--busy 6] [--members 100] [--burst 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time

import aiohttp
import discord
import numpy as np
from aiohttp import web
from discord.webhook import async_ as webhook_async

import bench.bot_load as load
import tests.discord_sim as sim_module

# Everything below runs at import, so the simulator's process (spawned: it imports this
# file as its main module) is instrumented too.
HANDLED: list[tuple[float, float]] = []  # simulator: (start, end) of every request handler
FULL_GCS: list[float] = []  # this process: start of every generation-2 collection
PARSED: dict[str, float] = {}  # bot: interaction id -> parsed
ACK_STARTED: dict[str, float] = {}  # bot: interaction id -> callback request started
CONNECTED: list[tuple[bool, float]] = []  # bot: (is a callback, got a connection)


@web.middleware
async def _time_handler(request, handler):
    t = time.monotonic()
    try:
        return await handler(request)
    finally:
        HANDLED.append((t, time.monotonic()))


_app_init = web.Application.__init__


def _instrumented_app(self, *args, **kwargs):
    kwargs["middlewares"] = [*kwargs.get("middlewares", ()), _time_handler]
    _app_init(self, *args, **kwargs)


web.Application.__init__ = _instrumented_app
gc.callbacks.append(
    lambda phase, info: phase == "start" and info["generation"] == 2 and FULL_GCS.append(time.monotonic())
)

_dispatch = sim_module.DiscordSimulator._dispatch


async def _timed_dispatch(self, ws, event, data):
    await _dispatch(self, ws, event, data)
    if event == "INTERACTION_CREATE":
        self.interactions[data["id"]].sent_at = time.monotonic()


sim_module.DiscordSimulator._dispatch = _timed_dispatch

_parse = discord.state.ConnectionState.parse_interaction_create


def _timed_parse(self, data):
    PARSED[data["id"]] = time.monotonic()
    return _parse(self, data)


discord.state.ConnectionState.parse_interaction_create = _timed_parse

_respond = webhook_async.AsyncWebhookAdapter.create_interaction_response


def _timed_respond(self, interaction_id, token, **kwargs):
    ACK_STARTED[str(interaction_id)] = time.monotonic()
    return _respond(self, interaction_id, token, **kwargs)


webhook_async.AsyncWebhookAdapter.create_interaction_response = _timed_respond

_connect = aiohttp.BaseConnector.connect


async def _timed_connect(self, req, traces, timeout):
    conn = await _connect(self, req, traces, timeout)
    CONNECTED.append((req.url.path.endswith("/callback"), time.monotonic()))
    return conn


aiohttp.BaseConnector.connect = _timed_connect

_one_burst = load.one_burst


async def _traced_burst(sim, members, burst, round_no):
    """In the simulator's process: the burst, plus what the simulator saw of it."""
    known = set(sim.interactions)
    out = await _one_burst(sim, members, burst, round_no)
    new = [i for k, i in sim.interactions.items() if k not in known]
    start = min(i.created for i in new)
    out["_events"] = [(i.id, i.sent_at, i.acked_at) for i in new]
    starts = sorted(a for a, _ in HANDLED if a >= start)
    out["_longest_pause_ms"] = round(1000 * max(np.diff(starts)), 1) if len(starts) > 1 else None
    HANDLED.clear()
    return out


load.one_burst = _traced_burst


def stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float) * 1000
    v = v[np.isfinite(v)]
    return {
        "p50": round(float(np.percentile(v, 50)), 1),
        "p99": round(float(np.percentile(v, 99)), 1),
        "max": round(float(v.max()), 1),
    }


def split(burst: dict) -> dict:
    events = burst.pop("_events")
    legs = {"to_bot": [], "in_bot": [], "to_ack": []}
    for iid, sent, acked in events:
        parsed, started = PARSED.get(iid, np.nan), ACK_STARTED.get(iid, np.nan)
        legs["to_bot"].append(parsed - sent)
        legs["in_bot"].append(started - parsed)
        legs["to_ack"].append(acked - started if acked is not None else np.nan)
    first = min(sent for _, sent, _ in events)
    last_ack = max(acked for _, _, acked in events if acked is not None)
    return {
        "ack_ms_p99": burst["ack_ms_p99"],
        **{k: stats(v) for k, v in legs.items()},
        "others_before_last_ack": sum(1 for cb, t in CONNECTED if not cb and first <= t <= last_ack),
        "simulator_longest_pause_ms": burst.pop("_longest_pause_ms"),
        "bot_full_gcs_ms_after_start": [round(1000 * (t - first)) for t in FULL_GCS if first <= t <= last_ack],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--burst", type=int, default=500)
    ap.add_argument("--busy", type=int, default=6)
    args = ap.parse_args()
    run = asyncio.run(load.measure(args.members, args.burst, busy=args.busy))
    print(
        json.dumps(
            {
                "members": args.members,
                "burst": args.burst,
                "busy_projections": args.busy,
                "bursts": [split(b) for b in run["bursts"]],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
