"""How the Redis transport lays out its keys, and the limits both sides keep.

Keys (``prefix`` defaults to ``wspace``):

- ``{prefix}:jobs:{model_id}`` — the job stream of one model, read by the consumer group
  ``engines``. A worker reads only its own model's stream, so a job is never run by a
  worker whose model differs from the one its faces were made with.
- ``{prefix}:worker:{id}`` — a worker's heartbeat (JSON, expires after a few missed
  beats), listed in the set ``{prefix}:workers``.
- ``{prefix}:events:{bot}`` — one bot process's reply stream, named in each job entry.
- ``{prefix}:result:{job_id}`` — a result too large for a stream entry (expiring); the
  reply carries only this key, and the bot reads no other key from a reply.
- ``{prefix}:done:{job_id}`` — set when a job finished, so a redelivered job is not run twice.
- ``{prefix}:stop:{job_id}`` — set (sealed: the job id) by the bot when a member stopped the
  job; the worker holding it gives up before its next step, one that takes it later skips it.
- ``{prefix}:dead`` — entries delivered more than ``MAX_DELIVERIES`` times (they were in a
  batch whose worker died, then killed the worker that ran them alone): moved here, their
  job failed once.

Every job and event payload is sealed (``wire.seal``) with the shared secret.
"""

from __future__ import annotations

import re

GROUP = "engines"
STALE_RETRIES = 3  # per command, after a connection error (a stale connection after a Redis restart)
EVENTS_MAXLEN = 10_000
JOBS_MAXLEN = 10_000
DEAD_MAXLEN = 1_000
DONE_TTL = 3600
RESULT_TTL = 900
MAX_DELIVERIES = 2  # once in a batch, once more alone after that worker died
MAX_AGE = DONE_TTL  # a sealed message older than this is refused (a replay outlives its done key)
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def keys(prefix: str) -> dict[str, str]:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("The Redis key prefix may hold only letters, digits, '_', '.' and '-'.")
    return {"workers": f"{prefix}:workers", "worker": f"{prefix}:worker:" + "{}", "jobs": f"{prefix}:jobs:" + "{}",
            "done": f"{prefix}:done:" + "{}", "stop": f"{prefix}:stop:" + "{}", "result": f"{prefix}:result:" + "{}",
            "events": f"{prefix}:events:" + "{}", "dead": f"{prefix}:dead"}


def is_reply_stream(k: dict[str, str], name: str) -> bool:
    """Whether ``name`` is a bot's reply stream under this prefix (workers write nowhere else)."""
    head = k["events"].format("")
    return name.startswith(head) and bool(_ID.fullmatch(name[len(head):]))
