"""The bot's HTTP connection pool: bounded, and acknowledgements first.

Discord drops an interaction that is not acknowledged within 3 s, and a burst of
commands also makes the bot edit messages, upload results and send follow-ups. In one
pool they queue for connections in arrival order, so a late acknowledgement waited behind
hundreds of edits (``bench/ack_split.py``: ~600 other requests got a connection
before a 500-interaction burst's last acknowledgement). Here an interaction callback (the
acknowledgement, or a refusal that is one) never waits behind another request: while any
callback is waiting for a connection, other requests wait too, for at most
:data:`OTHERS_MAX_WAIT` seconds, so a steady stream of commands cannot starve them.
"""

from __future__ import annotations

import asyncio

import aiohttp

OTHERS_MAX_WAIT = 1.0  # seconds a non-callback request may be held back for acknowledgements


def is_callback(url) -> bool:
    """``POST /interactions/{id}/{token}/callback``: an interaction's acknowledgement."""
    return url.path.endswith("/callback") and "/interactions/" in url.path


class AcksFirstConnector(aiohttp.TCPConnector):
    """A TCP connector (``limit`` connections, 0 = unbounded) that hands free connections
    to interaction callbacks before any other request."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.callbacks_waiting = 0
        self._no_callbacks = asyncio.Event()
        self._no_callbacks.set()

    async def connect(self, req, traces, timeout):
        if is_callback(req.url):
            self.callbacks_waiting += 1
            self._no_callbacks.clear()
            try:
                return await super().connect(req, traces, timeout)
            finally:
                self.callbacks_waiting -= 1
                if not self.callbacks_waiting:
                    self._no_callbacks.set()
        if not self._no_callbacks.is_set():
            try:
                await asyncio.wait_for(self._no_callbacks.wait(), OTHERS_MAX_WAIT)
            except asyncio.TimeoutError:
                pass
        return await super().connect(req, traces, timeout)
