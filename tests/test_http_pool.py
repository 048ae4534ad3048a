"""The bot's HTTP pool gives free connections to interaction callbacks first (bot/http_pool.py)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from bot.http_pool import AcksFirstConnector, is_callback


@pytest.fixture
async def server():
    async def slow(request):
        await asyncio.sleep(0.3)
        return web.Response(text="slow")

    async def fast(request):
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_post("/interactions/{iid}/{token}/callback", fast)
    app.router.add_patch("/webhooks/{app}/{token}/messages/@original", fast)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def order_of(base: str, connector: aiohttp.BaseConnector) -> list[str]:
    """One connection, held by a slow request; then an acknowledgement, an edit and a second
    acknowledgement ask for it, in that order. Returns the order they finished in."""
    done: list[str] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call(name: str, method: str, path: str) -> None:
            async with session.request(method, base + path) as r:
                await r.read()
            done.append(name)

        holder = asyncio.create_task(call("slow", "GET", "/slow"))
        await asyncio.sleep(0.05)
        tasks = []
        for name, method, path in (("ack1", "POST", "/interactions/1/t1/callback"),
                                   ("edit", "PATCH", "/webhooks/9/t0/messages/@original"),
                                   ("ack2", "POST", "/interactions/2/t2/callback")):
            tasks.append(asyncio.create_task(call(name, method, path)))
            await asyncio.sleep(0.02)
        await asyncio.gather(holder, *tasks)
    return done


async def test_acknowledgements_go_before_other_requests(server):
    assert await order_of(server, AcksFirstConnector(limit=1)) == ["slow", "ack1", "ack2", "edit"]


async def test_plain_pool_is_first_come_first_served(server):
    """The same requests through aiohttp's own pool: the edit takes the connection before
    the second acknowledgement (what the acks-first pool changes)."""
    assert await order_of(server, aiohttp.TCPConnector(limit=1)) == ["slow", "ack1", "edit", "ack2"]


def test_only_interaction_callbacks_count_as_acknowledgements():
    from yarl import URL

    assert is_callback(URL("https://discord.com/api/v10/interactions/1/tok/callback"))
    assert not is_callback(URL("https://discord.com/api/v10/webhooks/1/tok/messages/@original"))
    assert not is_callback(URL("https://discord.com/api/v10/channels/1/messages"))
