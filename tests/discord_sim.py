"""A local Discord API simulator: REST + gateway websocket on 127.0.0.1.

Enough of Discord for the real discord.py client to log in, connect, receive slash
command interactions and answer them: ``/gateway/bot``, the gateway (HELLO, IDENTIFY,
READY, GUILD_CREATE, heartbeats, INTERACTION_CREATE), application commands, interaction
callbacks, webhook edits and follow-ups (multipart with files), channel messages and
attachment downloads. Everything the bot sends is recorded for tests to inspect.

Also simulates what goes wrong on Discord's side: expired interaction tokens (50027)
and deleted messages (10008).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

APP_ID = 900000000000000001
BOT_ID = APP_ID
_ids = itertools.count(1_000_000_000_000_000_000)


def json_response(data, status: int = 200) -> web.Response:
    """JSON with exactly ``application/json`` (discord.py parses nothing else as JSON)."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def snowflake() -> str:
    return str(next(_ids))


def member_payload(user_id: int, permissions: int) -> dict:
    """A guild member as an interaction carries it (with the member's resolved permissions)."""
    return {"user": user_payload(user_id), "roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False,
            "mute": False, "flags": 0, "permissions": str(permissions)}


def user_payload(user_id: int, name: str | None = None, bot: bool = False) -> dict:
    return {"id": str(user_id), "username": name or f"user{user_id % 100000}", "discriminator": "0",
            "global_name": name, "avatar": None, "bot": bot}


@dataclass
class Sent:
    """One message the bot produced (original response, edit, follow-up or channel message)."""

    kind: str  # "callback", "edit", "followup", "channel"
    content: str | None
    files: dict[str, bytes]
    payload: dict
    at: float = field(default_factory=time.monotonic)
    id: str | None = None  # a follow-up's own message id (the others are the original response)


@dataclass
class SimInteraction:
    id: str
    token: str
    user_id: int
    guild_id: int
    channel_id: int
    name: str
    created: float = field(default_factory=time.monotonic)
    acked_at: float | None = None
    callback_type: int | None = None
    messages: list[Sent] = field(default_factory=list)
    expired: bool = False
    original_deleted: bool = False
    original_id: str = field(default_factory=snowflake)
    # what the original message shows now (an edit without them keeps them)
    components: list = field(default_factory=list)

    @property
    def ack_seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.created

    def last_content(self) -> str:
        for m in reversed(self.messages):
            if m.content is not None:
                return m.content
        return ""

    def all_files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for m in self.messages:
            out.update(m.files)
        return out


class DiscordSimulator:
    def __init__(self, guild_id: int = 500000000000000001, channel_id: int = 600000000000000001) -> None:
        self.guild_id, self.channel_id = guild_id, channel_id
        self.owner_id = 700000000000000001
        self.interactions: dict[str, SimInteraction] = {}
        self.by_token: dict[str, SimInteraction] = {}
        self.channel_messages: list[Sent] = []
        self.attachments: dict[str, tuple[bytes, str]] = {}
        self.commands: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.identified = asyncio.Event()
        self.seq = 0
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.valid_tokens: set[str] | None = None  # None: any bot token logs in
        self.left_members: set[int] = set()
        self.recommended_shards = 1
        self.shard_of: dict[web.WebSocketResponse, tuple[int, int]] = {}  # socket -> (shard id, shard count)
        self.interactions_per_shard: dict[tuple[int, int], int] = {}

    # --- server ------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/api/v10/gateway/bot", self.gateway_bot)
        r.add_get("/gateway", self.gateway)
        r.add_get("/api/v10/users/@me", self.me)
        r.add_get("/api/v10/oauth2/applications/@me", self.app_info)
        r.add_put("/api/v10/applications/{app}/commands", self.put_commands)
        r.add_put("/api/v10/applications/{app}/guilds/{guild}/commands", self.put_commands)
        r.add_get("/api/v10/applications/{app}/commands", self.get_commands)
        r.add_post("/api/v10/interactions/{iid}/{token}/callback", self.callback)
        r.add_patch("/api/v10/webhooks/{app}/{token}/messages/{mid}", self.edit_message)
        r.add_get("/api/v10/webhooks/{app}/{token}/messages/{mid}", self.get_message)
        r.add_delete("/api/v10/webhooks/{app}/{token}/messages/{mid}", self.delete_message)
        r.add_post("/api/v10/webhooks/{app}/{token}", self.followup)
        r.add_post("/api/v10/channels/{cid}/messages", self.channel_message)
        r.add_get("/api/v10/guilds/{guild}/members/{uid}", self.guild_member)
        r.add_get("/attachments/{aid}/{name}", self.download)
        app.middlewares.append(self._record)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self.api_base

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    async def wait_bot_ready(self, bot_ready, timeout: float = 60.0) -> None:
        """Until the bot has identified on the gateway, registered its commands and says it is ready."""
        await asyncio.wait_for(self.identified.wait(), timeout)
        await self.wait_for(lambda: bot_ready() and self.commands, timeout)

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self.runner:
            await self.runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler):
        self.requests.append((request.method, request.path))
        return await handler(request)

    # --- gateway -----------------------------------------------------------------------------

    async def gateway_bot(self, request):
        return json_response(
            {
                "url": f"ws://127.0.0.1:{self.port}/gateway",
                "shards": self.recommended_shards,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
            }
        )

    async def me(self, request):
        token = request.headers.get("Authorization", "").removeprefix("Bot ")
        if self.valid_tokens is not None and token not in self.valid_tokens:
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return json_response(user_payload(BOT_ID, "wspace", bot=True))

    async def get_commands(self, request):
        return json_response(self.commands)

    async def app_info(self, request):
        return json_response(
            {
                "id": str(APP_ID),
                "name": "wspace",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "00",
                "owner": user_payload(self.owner_id, "owner"),
                "team": None,
                "flags": 0,
                "rpc_origins": [],
                "summary": "",
            }
        )

    async def gateway(self, request):
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data["op"] == 1:
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif data["op"] == 2:
                shard = tuple(data["d"].get("shard") or (0, 1))
                self.shard_of[ws] = shard
                mine = self.shard_for(self.guild_id, shard[1]) == shard[0]
                await self._dispatch(
                    ws,
                    "READY",
                    {
                        "v": 10,
                        "user": user_payload(BOT_ID, "wspace", bot=True),
                        "shard": list(shard),
                        "guilds": [{"id": str(self.guild_id), "unavailable": True}] if mine else [],
                        "session_id": "sim",
                        "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                        "application": {"id": str(APP_ID), "flags": 0},
                        "private_channels": [],
                        "relationships": [],
                    },
                )
                if mine:
                    await self._dispatch(ws, "GUILD_CREATE", self.guild_payload())
                self.identified.set()
        if ws in self.sockets:
            self.sockets.remove(ws)
        self.shard_of.pop(ws, None)
        return ws

    @staticmethod
    def shard_for(guild_id: int, shard_count: int) -> int:
        """Discord's rule: a guild's events go to shard (guild_id >> 22) % shard_count."""
        return (guild_id >> 22) % shard_count

    def guild_payload(self) -> dict:
        return {
            "id": str(self.guild_id),
            "name": "sim guild",
            "owner_id": str(self.owner_id),
            "icon": None,
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    "id": str(self.guild_id),
                    "name": "@everyone",
                    "permissions": "0",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "channels": [
                {
                    "id": str(self.channel_id),
                    "type": 0,
                    "name": "general",
                    "position": 0,
                    "permission_overwrites": [],
                    "guild_id": str(self.guild_id),
                }
            ],
            "members": [],
            "threads": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_flags": 0,
            "max_members": 1000,
        }

    async def _dispatch(self, ws, event: str, data: dict) -> None:
        self.seq += 1
        await ws.send_json({"op": 0, "t": event, "s": self.seq, "d": data})

    # --- interactions ------------------------------------------------------------------------

    def add_attachment(self, data: bytes, filename: str = "selfie.png", content_type: str = "image/png") -> dict:
        aid = snowflake()
        self.attachments[aid] = (data, content_type)
        return {
            "id": aid,
            "filename": filename,
            "size": len(data),
            "content_type": content_type,
            "url": f"http://127.0.0.1:{self.port}/attachments/{aid}/{filename}",
            "proxy_url": f"http://127.0.0.1:{self.port}/attachments/{aid}/{filename}",
        }

    async def invoke(
        self,
        user_id: int,
        name: str,
        options: list[dict] | None = None,
        *,
        subcommand: str | None = None,
        resolved: dict | None = None,
        permissions: int = 0,
        guild_id: int | None = None,
        dm: bool | str = False,
        autocomplete: bool = False,
        target: int | None = None,
        user_install: bool = False,
    ) -> SimInteraction:
        """A member runs a slash command: INTERACTION_CREATE goes out on the gateway (``dm``: in a
        direct message with the bot, with no server). With ``target`` it is a right-click command
        (a context menu) opened on that user or message; ``resolved`` then carries it
        (:meth:`member_resolved`, :meth:`message_resolved`). ``dm="group"``: a group DM the bot is
        not in. ``user_install``: the member's own install of the app authorised it (in a server,
        one that has not added the bot)."""
        await asyncio.wait_for(self.identified.wait(), 30)
        guild_id = guild_id or self.guild_id
        iid, token = snowflake(), f"tok{snowflake()}"
        inter = SimInteraction(iid, token, user_id, guild_id, self.channel_id, name)
        self.interactions[iid] = inter
        self.by_token[token] = inter
        opts = options or []
        if subcommand:
            opts = [{"type": 1, "name": subcommand, "options": opts}]
        cmd = next((c for c in self.commands if c["name"] == name), None)
        data = {
            "id": cmd.get("id", snowflake()) if cmd else snowflake(),
            "name": name,
            "type": 1,
            "options": opts,
            "resolved": resolved or {},
        }
        if target is not None:  # a context menu: USER (2) or MESSAGE (3), as the command was registered
            data.update(type=cmd.get("type", 2) if cmd else 2, target_id=str(target))
            data.pop("options")
        payload = {
            "id": iid,
            "application_id": str(APP_ID),
            "type": 2,
            "data": data,
            "guild_id": str(guild_id),
            "channel_id": str(self.channel_id),
            "channel": self._channel(guild_id),
            "member": member_payload(user_id, permissions),
            "token": token,
            "version": 1,
            "app_permissions": str((1 << 50) - 1),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        if autocomplete:  # the member is typing an option marked "focused": the bot answers with choices
            payload["type"] = 4
        if user_install:
            payload["authorizing_integration_owners"] = {"1": str(user_id)}
        if dm:  # what Discord sends from a DM: a user, no member, no guild, a DM channel
            group = dm == "group"
            dm_channel = str((710000000000000000 if group else 700000000000000000) + user_id % 10**15)
            for key in ("guild_id", "member", "guild_locale"):
                payload.pop(key)
            payload.update(
                user=user_payload(user_id),
                channel_id=dm_channel,
                context=2 if group else 1,
                channel={"id": dm_channel, "type": 3 if group else 1, "recipients": [user_payload(user_id)]},
                authorizing_integration_owners={"1": str(user_id)},
            )
            inter.guild_id = 0
            guild_id = 0
        for ws in list(self.sockets):
            shard_id, count = self.shard_of.get(ws, (0, 1))
            if self.shard_for(guild_id, count) == shard_id:
                key = (shard_id, count)
                self.interactions_per_shard[key] = self.interactions_per_shard.get(key, 0) + 1
                await self._dispatch(ws, "INTERACTION_CREATE", payload)
        return inter

    async def click(
        self,
        user_id: int,
        custom_id: str,
        source: SimInteraction,
        values: list[str] | None = None,
        permissions: int = 0,
    ) -> SimInteraction:
        """A member presses a button under the bot's message for ``source`` (or, with
        ``values``, chooses in a select menu)."""
        iid, token = snowflake(), f"tok{snowflake()}"
        inter = SimInteraction(iid, token, user_id, self.guild_id, self.channel_id, f"button:{custom_id}")
        self.interactions[iid] = inter
        self.by_token[token] = inter
        carrier = next(
            (
                m
                for m in reversed(source.messages)
                if custom_id
                in json.dumps(m.payload.get("components") or (m.payload.get("data") or {}).get("components") or [])
            ),
            None,
        )
        if carrier is not None and carrier.id is not None:  # a component on a follow-up message: that message
            message = self._message(
                source,
                {
                    "content": carrier.content,
                    "components": carrier.payload["components"],
                    "flags": carrier.payload.get("flags", 0),
                },
                {},
                carrier.id,
            )
        else:
            message = self._message(
                source, {"content": source.last_content(), "components": source.components}, {}, source.original_id
            )
        payload = {
            "id": iid,
            "application_id": str(APP_ID),
            "type": 3,
            "guild_id": str(self.guild_id),
            "channel_id": str(self.channel_id),
            "message": message,
            "data": {"custom_id": custom_id, "component_type": 2}
            if values is None
            else {"custom_id": custom_id, "component_type": 3, "values": values},
            "channel": self._channel(self.guild_id),
            "member": member_payload(user_id, permissions),
            "token": token,
            "version": 1,
            "app_permissions": str((1 << 50) - 1),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": 8 * 1024 * 1024,
        }
        for ws in list(self.sockets):
            shard_id, count = self.shard_of.get(ws, (0, 1))
            if self.shard_for(self.guild_id, count) == shard_id:
                key = (shard_id, count)
                self.interactions_per_shard[key] = self.interactions_per_shard.get(key, 0) + 1
                await self._dispatch(ws, "INTERACTION_CREATE", payload)
        return inter

    def member_resolved(self, *user_ids: int) -> dict:
        return {
            "users": {str(u): user_payload(u) for u in user_ids},
            "members": {
                str(u): {
                    "roles": [],
                    "joined_at": "2024-01-01T00:00:00+00:00",
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                    "permissions": "0",
                }
                for u in user_ids
                if u not in self.left_members
            },
        }

    def message_resolved(self, message_id: int, author_id: int, attachments: list[dict]) -> dict:
        """A message in this channel, as a message context menu resolves it."""
        return {"messages": {str(message_id): {
            "id": str(message_id), "channel_id": str(self.channel_id), "author": user_payload(author_id),
            "content": "", "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
            "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": attachments,
            "embeds": [], "pinned": False, "type": 0}}}

    async def put_commands(self, request):
        body = await request.json()
        self.commands = [
            {
                **c,
                "id": snowflake(),
                "application_id": str(APP_ID),
                "version": snowflake(),
                "default_member_permissions": c.get("default_member_permissions"),
                "type": c.get("type", 1),
                "description": c.get("description", ""),  # Discord answers "" for a context menu's
            }
            for c in body
        ]
        return json_response(self.commands)

    async def _read_body(self, request) -> tuple[dict, dict[str, bytes]]:
        files: dict[str, bytes] = {}
        if request.content_type.startswith("multipart/"):
            payload: dict = {}
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files[part.filename or part.name] = bytes(await part.read(decode=False))
            return payload, files
        text = await request.text()
        return (json.loads(text) if text else {}), files

    def _channel(self, guild_id: int) -> dict:
        """The one text channel, as an interaction carries it."""
        return {"id": str(self.channel_id), "type": 0, "name": "general", "guild_id": str(guild_id), "position": 0,
                "permission_overwrites": []}

    def _message(
        self, inter: SimInteraction | None, payload: dict, files: dict[str, bytes], mid: str | None = None
    ) -> dict:
        attachments = [
            {
                "id": snowflake(),
                "filename": n,
                "size": len(b),
                "url": f"http://127.0.0.1:{self.port}/x/{n}",
                "proxy_url": f"http://127.0.0.1:{self.port}/x/{n}",
            }
            for n, b in files.items()
        ]
        return {
            "id": mid or snowflake(),
            "channel_id": str(self.channel_id),
            "type": 0,
            "content": payload.get("content") or "",
            "author": user_payload(BOT_ID, "wspace", bot=True),
            "attachments": attachments,
            "embeds": payload.get("embeds") or [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
            "timestamp": "2026-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": payload.get("flags", 0),
            "components": payload.get("components") or [],
            "application_id": str(APP_ID),
        }

    def _error(self, status: int, code: int, message: str):
        return json_response({"code": code, "message": message}, status=status)

    async def callback(self, request):
        inter = self.interactions.get(request.match_info["iid"])
        payload, files = await self._read_body(request)
        if inter is None or inter.token != request.match_info["token"]:
            return self._error(404, 10062, "Unknown interaction")
        if inter.callback_type is not None:
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - inter.created > 3.0 or inter.expired:
            return self._error(404, 10062, "Unknown interaction")
        inter.acked_at = time.monotonic()
        inter.callback_type = payload.get("type")
        data = payload.get("data") or {}
        inter.messages.append(Sent("callback", data.get("content"), files, payload))
        inter.components = data.get("components") or []
        message = self._message(inter, data, files, inter.original_id)
        return json_response(
            {
                "interaction": {
                    "id": inter.id,
                    "type": 2,
                    "response_message_id": inter.original_id,
                    "response_message_loading": inter.callback_type == 5,
                    "response_message_ephemeral": bool(data.get("flags", 0) & 64),
                },
                "resource": {"type": inter.callback_type, "message": message},
            }
        )

    def _by_token(self, request) -> SimInteraction | None:
        return self.by_token.get(request.match_info["token"])

    async def edit_message(self, request):
        inter = self._by_token(request)
        payload, files = await self._read_body(request)
        if inter is None or inter.expired:
            return self._error(401, 50027, "Invalid Webhook Token")
        if request.match_info["mid"] == "@original" and inter.original_deleted:
            return self._error(404, 10008, "Unknown Message")
        inter.messages.append(Sent("edit", payload.get("content"), files, payload))
        if "components" in payload and request.match_info["mid"] == "@original":
            inter.components = payload["components"] or []
        return json_response(
            self._message(inter, {**payload, "components": inter.components}, files, inter.original_id)
        )

    async def get_message(self, request):
        inter = self._by_token(request)
        if inter is None or inter.expired:
            return self._error(401, 50027, "Invalid Webhook Token")
        return json_response(self._message(inter, {"content": inter.last_content()}, {}, inter.original_id))

    async def delete_message(self, request):
        inter = self._by_token(request)
        if inter is None:
            return self._error(401, 50027, "Invalid Webhook Token")
        inter.original_deleted = True
        return web.Response(status=204)

    async def followup(self, request):
        inter = self._by_token(request)
        payload, files = await self._read_body(request)
        if inter is None or inter.expired:
            return self._error(401, 50027, "Invalid Webhook Token")
        mid = snowflake()
        inter.messages.append(Sent("followup", payload.get("content"), files, payload, id=mid))
        return json_response(self._message(inter, payload, files, mid))

    async def channel_message(self, request):
        payload, files = await self._read_body(request)
        sent = Sent("channel", payload.get("content"), files, payload)
        self.channel_messages.append(sent)
        return json_response(self._message(None, payload, files))

    async def guild_member(self, request):
        uid = int(request.match_info["uid"])
        if int(request.match_info["guild"]) != self.guild_id or uid in self.left_members:
            return self._error(404, 10007, "Unknown Member")
        return json_response({"user": user_payload(uid), **self.member_resolved(uid)["members"][str(uid)]})

    async def download(self, request):
        data, content_type = self.attachments.get(request.match_info["aid"], (None, None))
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type=content_type.split(";")[0] if content_type else None)

    # --- helpers for tests -------------------------------------------------------------------

    async def wait_for(self, predicate, timeout: float = 60.0, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for the bot")
