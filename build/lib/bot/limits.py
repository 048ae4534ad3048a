"""Per-member and per-server rate limits on top of asyncio-throttle.

``asyncio_throttle.Throttler`` keeps the sliding window of start times; a Discord
command cannot wait in line for its turn (the member would stare at "thinking…"), so
``check`` asks the throttler's window whether a slot is free and, if not, how many
seconds until one is, and only then takes the slot.
"""

from __future__ import annotations

import math
import time

from asyncio_throttle import Throttler


class RateLimited(Exception):
    def __init__(self, retry_after: float, scope: str) -> None:
        super().__init__(f"rate limited for {retry_after:.1f} s ({scope})")
        self.retry_after, self.scope = retry_after, scope

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class RateLimiter:
    def __init__(self, rate: int, period: float, max_keys: int = 100_000) -> None:
        self.rate, self.period, self.max_keys = rate, period, max_keys
        self.throttlers: dict[object, Throttler] = {}

    def retry_after(self, key) -> float:
        t = self.throttlers.get(key)
        if t is None:
            return 0.0
        t.flush()
        if len(t._task_logs) < t.rate_limit:
            return 0.0
        return max(0.0, t._task_logs[0] + t.period - time.monotonic())

    def take(self, key) -> None:
        t = self.throttlers.get(key)
        if t is None:
            if len(self.throttlers) >= self.max_keys:
                self._prune()
            t = self.throttlers[key] = Throttler(self.rate, self.period)
        t.flush()
        t._task_logs.append(time.monotonic())

    def _prune(self) -> None:
        for key, t in list(self.throttlers.items()):
            t.flush()
            if not t._task_logs:
                del self.throttlers[key]


class Limits:
    """The member and server windows checked together: a refused job takes no slot."""

    def __init__(self, member_rate: int, member_period: float, server_rate: int, server_period: float) -> None:
        self.member = RateLimiter(member_rate, member_period)
        self.server = RateLimiter(server_rate, server_period)

    def check(self, guild_id: int, user_id: int) -> None:
        wait = self.member.retry_after((guild_id, user_id))
        if wait > 0:
            raise RateLimited(wait, "member")
        wait = self.server.retry_after(guild_id)
        if wait > 0:
            raise RateLimited(wait, "server")
        self.member.take((guild_id, user_id))
        self.server.take(guild_id)
