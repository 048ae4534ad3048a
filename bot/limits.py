"""Fair per-member and per-server limits: each job costs what it asks of the engine.

A budget per sliding window, in *projection-equivalents*: a projection costs 1, a morph or
loop a quarter, an edit, blend or /random a tenth, and drawing a face that is already kept
(/me) nothing (``limits.costs`` in the config). Only jobs that start are charged: a command
refused for any reason (its own limit, "a job waiting", a full queue) costs nothing, so a
member doing a normal session (a projection, ten /me, five edits, two morphs in five
minutes) is never refused at the default budget of 6 a minute.

Written by hand (a weighted window is a deque and a sum): asyncio-throttle, used before,
counts unweighted calls and only offers a blocking acquire, so the old code read its
private ``_task_logs``; a Discord command cannot wait in line for a slot anyway.
"""

from __future__ import annotations

import math
import time
from collections import deque

from engine.protocol import REQUESTS

DEFAULT_COSTS = {kind: request.cost for kind, request in REQUESTS.items()}  # each request class says its cost


class RateLimited(Exception):
    def __init__(self, retry_after: float, scope: str) -> None:
        super().__init__(f"rate limited for {retry_after:.1f} s ({scope})")
        self.retry_after, self.scope = retry_after, scope

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class Budget:
    """At most ``capacity`` cost units per ``period`` seconds for each key (sliding window)."""

    def __init__(self, capacity: float, period: float, max_keys: int = 100_000) -> None:
        self.capacity, self.period, self.max_keys = capacity, period, max_keys
        self.spent: dict[object, deque[tuple[float, float]]] = {}

    def _window(self, key, now: float) -> deque[tuple[float, float]]:
        log = self.spent.get(key)
        if log is None:
            return deque()
        while log and log[0][0] <= now - self.period:
            log.popleft()
        return log

    def retry_after(self, key, cost: float, now: float | None = None) -> float:
        """0 when ``cost`` fits now; else seconds until enough of the window has expired."""
        now = time.monotonic() if now is None else now
        log = self._window(key, now)
        excess = sum(c for _, c in log) + cost - self.capacity
        if excess <= 1e-9:
            return 0.0
        for t, c in log:  # the oldest charges expire first
            excess -= c
            if excess <= 1e-9:
                return max(0.0, t + self.period - now)
        return self.period  # a single job dearer than the whole budget: never fits

    def charge(self, key, cost: float, now: float | None = None) -> None:
        if cost <= 0:
            return
        now = time.monotonic() if now is None else now
        if key not in self.spent and len(self.spent) >= self.max_keys:
            self._prune(now)
        self.spent.setdefault(key, deque()).append((now, cost))

    def refund(self, key, cost: float) -> None:
        """Take back the latest charge of ``cost`` (a job that was charged but never started)."""
        log = self.spent.get(key)
        if not log or cost <= 0:
            return
        for i in range(len(log) - 1, -1, -1):
            if log[i][1] == cost:
                del log[i]
                return

    def _prune(self, now: float) -> None:
        for key in list(self.spent):
            if not self._window(key, now):
                del self.spent[key]


class Limits:
    """The member and server budgets checked together; a refused job is charged nothing."""

    def __init__(self, member_rate: float, member_period: float, server_rate: float, server_period: float,
                 costs: dict[str, float] | None = None) -> None:
        self.member = Budget(member_rate, member_period)
        self.server = Budget(server_rate, server_period)
        self.costs = {**DEFAULT_COSTS, **(costs or {})}

    def cost(self, kind: str) -> float:
        return self.costs.get(kind, 1.0)

    def check(self, guild_id: int, user_id: int, kind: str = "project") -> None:
        """Raise :class:`RateLimited` if the job would go over a budget; charges nothing."""
        cost = self.cost(kind)
        if cost <= 0:
            return
        wait = self.member.retry_after((guild_id, user_id), cost)
        if wait > 0:
            raise RateLimited(wait, "member")
        wait = self.server.retry_after(guild_id, cost)
        if wait > 0:
            raise RateLimited(wait, "server")

    def charge(self, guild_id: int, user_id: int, kind: str = "project") -> None:
        """The job is taken: both budgets pay its cost."""
        cost = self.cost(kind)
        self.member.charge((guild_id, user_id), cost)
        self.server.charge(guild_id, cost)

    def refund(self, guild_id: int, user_id: int, kind: str = "project") -> None:
        cost = self.cost(kind)
        self.member.refund((guild_id, user_id), cost)
        self.server.refund(guild_id, cost)
