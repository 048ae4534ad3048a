"""What the bot needs from a server, and the invite link that asks for exactly that.

Slash commands are answered through the interaction's own webhook, which needs no channel
permission. The bot needs channel permissions only where it calls Discord's REST API
itself: :data:`ROUTES` lists every such call and what it needs, and
``tests/test_bot_faults.py`` checks that the bot calls nothing else (a new call must say
here what it needs, so the invite cannot drift from the code). Intents: only ``guilds``
(no privileged intent: the bot reads no message content and no member list).
"""

from __future__ import annotations

import base64
import binascii

import discord

# (method, path template) -> the permissions the call needs in the channel or server.
ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    # A result posted in the channel once its interaction can no longer be edited (the member
    # deleted the "thinking…" message, or a job outlived the 15-minute token), in a thread too.
    ("POST", "/channels/{channel_id}/messages"): ("view_channel", "send_messages", "send_messages_in_threads",
                                                  "attach_files", "read_message_history"),
    # Whether a named member is still in the server (before their face is used).
    ("GET", "/guilds/{guild_id}/members/{user_id}"): (),
    # Logging in, the gateway, registering the slash commands, answering interactions.
    ("GET", "/gateway/bot"): (), ("GET", "/users/@me"): (), ("GET", "/oauth2/applications/@me"): (),
    ("PUT", "/applications/{application_id}/commands"): (),
    ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"): (),
    ("GET", "/applications/{application_id}/commands"): (),
    ("POST", "/interactions/{interaction_id}/{token}/callback"): (),
    ("POST", "/webhooks/{application_id}/{token}"): (),
    ("GET", "/webhooks/{application_id}/{token}/messages/{message_id}"): (),
    ("PATCH", "/webhooks/{application_id}/{token}/messages/{message_id}"): (),
    ("DELETE", "/webhooks/{application_id}/{token}/messages/{message_id}"): (),
}
SCOPES = ("bot", "applications.commands")


def permissions() -> discord.Permissions:
    """Every permission some call in :data:`ROUTES` needs, and nothing else."""
    return discord.Permissions(**{name: True for needs in ROUTES.values() for name in needs})


def application_id_from_token(token: str) -> int | None:
    """A bot token's first part is its user id in base64, which is its application's id."""
    head = token.split(".", 1)[0]
    try:
        text = base64.b64decode(head + "=" * (-len(head) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() and 15 <= len(text) <= 21 else None


def invite_url(application_id: int) -> str:
    """The OAuth2 link a server admin opens to add the bot with :func:`permissions`."""
    return discord.utils.oauth_url(application_id, permissions=permissions(), scopes=SCOPES)
