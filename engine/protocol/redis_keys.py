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
- ``{prefix}:done:{job_id}`` — set when a job finished (sealed for that job: the worker's id), so a
  redelivered job is not run twice; a marker that does not open is no marker.
- ``{prefix}:stop:{job_id}`` — set (sealed: the job id) by the bot when a member stopped the
  job; the worker holding it gives up before its next step, one that takes it later skips it.
- ``{prefix}:dead`` — entries delivered more than ``MAX_DELIVERIES`` times (they were in a
  batch whose worker died, then killed the worker that ran them alone): moved here, their
  job failed once.

Every job, event, heartbeat and stop payload is sealed (``wire.seal``: encrypted and
authenticated) with the shared secret, for a context that names where it travels (see
the ``*_context`` functions): a job for its stream, entry id, job id and reply stream (the
bot chooses the entry id, so a copy added again under another id does not open); an
event for its reply stream, job id and worker; a heartbeat for its key; a stop for its
job. Nothing unsealed changes what a bot or a worker does.

Sizes are checked in Redis before anything is loaded: entries are read by the Lua
scripts below, which return an entry's fields only when they total at most the cap and
move a larger entry to the dead letters unread; keys are read only after ``STRLEN``.
"""

from __future__ import annotations

import json
import re

from engine.protocol import wire

GROUP = "engines"
STALE_RETRIES = 3  # per command, after a connection error (a stale connection after a Redis restart)
EVENTS_MAXLEN = 10_000
JOBS_MAXLEN = 10_000
DEAD_MAXLEN = 1_000
DONE_TTL = 3600
RESULT_TTL = 900
MAX_DELIVERIES = 2  # once in a batch, once more alone after that worker died
MAX_AGE = DONE_TTL  # a sealed message older than this is refused (a replay outlives its done key)
MAX_EVENT_ENTRY = 1024 * 1024  # an event entry's fields (results above inline_max are parked as a key)
MAX_JOB_ENTRY = 96 * 2**20 + 4096  # a job entry: the sealed request (wire.MAX_MESSAGE_BYTES) and its routing fields
MAX_HEARTBEAT = 64 * 1024
BEAT_MAX_AGE = 30.0  # a heartbeat sealed longer ago is a replay: a live worker seals a fresh one every second or so
MAX_DONE = 1024  # a done marker: the sealed id of the worker that ran the job
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


def job_context(stream: str, entry_id: str, job_id: str, reply: str) -> bytes:
    return f"job|{stream}|{entry_id}|{job_id}|{reply}".encode()


def event_context(reply: str, job_id: str, worker: str) -> bytes:
    return f"event|{reply}|{job_id}|{worker}".encode()


def beat_context(key: str) -> bytes:
    return f"beat|{key}".encode()


def stop_context(job_id: str) -> bytes:
    return f"stop|{job_id}".encode()


def done_context(job_id: str) -> bytes:
    return f"done|{job_id}".encode()


def done_marker(secret: bytes, job_id: str, worker: str) -> bytes:
    """What ``{prefix}:done:{job_id}`` holds once a worker answered the job."""
    return wire.seal(worker.encode(), secret, done_context(job_id))


def is_done(value, secret: bytes, job_id: str) -> bool:
    """Whether ``value`` (a done key's, or None) is a marker a worker sealed for ``job_id``:
    one written by someone without the secret stops nothing."""
    try:
        wire.unseal(value if isinstance(value, bytes) else b"", secret, DONE_TTL + 60, done_context(job_id))
    except wire.WireError:
        return False
    return True


def open_heartbeat(value, secret: bytes, key: str) -> dict | None:
    """A worker's heartbeat at ``key`` when its seal opens, was sealed in the last
    ``BEAT_MAX_AGE`` seconds (an old beat replayed keeps no dead worker alive), and it is a
    JSON object; else None."""
    try:
        beat = json.loads(wire.unseal(value if isinstance(value, bytes) else b"", secret, BEAT_MAX_AGE,
                                      beat_context(key)))
    except (wire.WireError, ValueError):
        return None
    return beat if isinstance(beat, dict) else None


# KEYS: stream, dead letters. ARGV: max bytes, count. Reads up to `count` entries from the
# start of a (reply) stream and deletes them; an entry over the cap comes back as
# {id, false, size} and is noted in the dead letters, its fields never leaving Redis.
READ_AND_TRIM = """
local got = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
local out = {}
for i, e in ipairs(got) do
  local n = 0
  for _, f in ipairs(e[2]) do n = n + #f end
  redis.call('XDEL', KEYS[1], e[1])
  if n > tonumber(ARGV[1]) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'entry', e[1], 'stream', KEYS[1],
               'reason', 'oversized: ' .. n .. ' bytes')
    out[i] = {e[1], false, n}
  else
    out[i] = {e[1], e[2], n}
  end
end
return out
"""

# KEYS: job stream, dead letters. ARGV: group, consumer, max bytes, 'new' or an entry id to
# claim, min idle ms (for a claim). Returns {id, fields or false, size, deliveries} or nil;
# an entry over the cap is acknowledged, deleted and noted in the dead letters unread.
TAKE = """
local got
if ARGV[4] == 'new' then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not r then return false end
  got = r[1][2]
else
  got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], ARGV[4])
end
local e = got[1]
if not e then return false end
if not e[2] then
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  return false
end
local n = 0
for _, f in ipairs(e[2]) do n = n + #f end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
local times = 1
if p[1] then times = p[1][4] end
if n > tonumber(ARGV[3]) then
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  redis.call('XDEL', KEYS[1], e[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'entry', e[1], 'stream', KEYS[1],
             'reason', 'oversized: ' .. n .. ' bytes', 'worker', ARGV[2])
  return {e[1], false, n, times}
end
return {e[1], e[2], n, times}
"""

# KEYS: string keys. ARGV: max bytes. Each value, or false when absent, not a string or too large.
GET_BOUNDED = """
local out = {}
for i, k in ipairs(KEYS) do
  local n = redis.pcall('STRLEN', k)
  if type(n) == 'number' and n > 0 and n <= tonumber(ARGV[1]) then out[i] = redis.call('GET', k) else out[i] = false end
end
return out
"""

# KEYS: one string key. ARGV: max bytes. GETDEL when it is at most that large; else deleted unread.
GETDEL_BOUNDED = """
local n = redis.pcall('STRLEN', KEYS[1])
if type(n) ~= 'number' or n == 0 then return false end
if n > tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) return false end
return redis.call('GETDEL', KEYS[1])
"""


FUTURE_MS = 10 * 60 * 1000  # an entry id this far past the clock is nobody's: bots and Redis use the time


def blocked(exc: Exception) -> bool:
    """Whether Redis refused an XADD because the stream's last id is at or past the one asked."""
    text = str(exc)
    return "equal or smaller" in text or "exhausted the last possible ID" in text


def future_cut(now: float) -> str:
    """The smallest entry id that no honest writer would use at unix time ``now``."""
    return f"{int(now * 1000) + FUTURE_MS}-0"


# KEYS: a stream. ARGV: the cut (an entry id), a consumer group (or ''). Entries at or past the
# cut are deleted (at most 1000 a call), the stream's last id set back to its top entry, and the
# group's last-delivered id too when it had passed the cut: one entry at the largest possible id
# no longer blocks every later XADD (nor hides later entries from the group). Returns how many
# entries were deleted.
UNBLOCK = """
local future = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', 1000)
for _, e in ipairs(future) do redis.call('XDEL', KEYS[1], e[1]) end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '0-1'
if top[1] then id = top[1][1] end
redis.call('XSETID', KEYS[1], id)
if ARGV[2] ~= '' then
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == ARGV[2] and last then
        local ms = tonumber(string.match(last, '^(%d+)'))
        local cut = tonumber(string.match(ARGV[1], '^(%d+)'))
        if ms == nil or cut == nil or ms >= cut then redis.call('XGROUP', 'SETID', KEYS[1], ARGV[2], id) end
      end
    end
  end
end
return #future
"""
