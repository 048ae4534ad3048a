"""The Redis transport: jobs go to engine workers on any host (``wspace worker --redis URL``).

Same interface and objects as the local transport (``bot/transport/local.py``); the
command layer cannot tell them apart. The key layout lives with the protocol
(``engine/protocol/redis_keys.py``); why delivery is at least once is written in
``engine/serving/redis_worker.py``. Every job is sealed (encrypted and authenticated) with the shared
secret for the entry id this side chooses, and every event is checked before use: its
size inside Redis before it is loaded (a Lua script; an oversized entry is noted in the
dead letters unread), its seal for this reply stream, job id and worker (forged,
unsealed, moved and stale events are dropped and counted, they cannot answer or fail a
job), its data-only decoding, its job id against the entry's, and a parked result may be
read only from that job's own result key, after its size. Events are deleted as they are
read, and a stopped job's entry is deleted if no worker has taken it. This side:

- sends each job to the stream of the model its latents were made with, and refuses at
  once when no worker seen in the last 10 s serves that model;
- reads its own reply stream (one per bot process, so shards never see each other's
  events), resolves each job id once and counts a second answer as a duplicate;
- follows the workers' heartbeats: ready while at least one is alive;
- when Redis stays unreachable (past redis-py's few reconnection retries), fails the jobs
  it was waiting for with one sentence and carries on as soon as Redis is back;
- when Redis comes back without its data (its epoch key is gone), fails exactly the jobs
  whose stream entries were lost, and keeps those sent since.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from bot.transport.base import EngineUnavailable, ProgressCallback, ShuttingDown, Transport
from engine.protocol import (
    BadArgument,
    EngineRestarted,
    JobFailed,
    Progress,
    Request,
    Result,
    Started,
    WorkerReady,
    wire,
)
from engine.protocol.redis_keys import (
    DONE_TTL,
    GET_BOUNDED,
    GETDEL_BOUNDED,
    GROUP,
    JOBS_MAXLEN,
    MAX_AGE,
    MAX_DONE,
    MAX_EVENT_ENTRY,
    MAX_HEARTBEAT,
    READ_AND_TRIM,
    STALE_RETRIES,
    UNBLOCK,
    blocked,
    event_context,
    future_cut,
    is_done,
    job_context,
    keys,
    open_heartbeat,
    stop_context,
)

log = logging.getLogger("wspace.redis")

INTERRUPTED = "The connection to the face engines was interrupted; please try again."
EPOCH_TTL = 3600  # seconds; refreshed every poll while the bot runs
NO_WORKER_FOR_MODEL = "No engine here has the model those faces were made with; project them again."
EVENT_POLL = 0.02  # seconds between two reads of the reply stream while jobs are pending (Lua cannot block)
IDLE_EVENT_POLL = 0.25  # … and while none is
WORKER_GRACE = 10.0  # seconds a worker missing from the heartbeats still counts for new jobs
READ_COUNT = 1  # entries per read: the script copies each entry inside Redis to measure it (~1 s for a 300 MB one)


class RedisTransport(Transport):
    transport = "redis"

    def __init__(
        self,
        url: str,
        secret: bytes,
        queue_size: int = 32,
        job_timeout: float = 900.0,
        prefix: str = "wspace",
        poll_seconds: float = 0.5,
    ) -> None:
        super().__init__(queue_size, job_timeout)
        if not secret:
            raise ValueError("the Redis transport needs the shared secret")
        self.url, self.k, self.poll, self.secret = url, keys(prefix), poll_seconds, secret
        self.reply_stream = self.k["events"].format(uuid.uuid4().hex[:12])
        self.refused = 0  # events whose seal, encoding or job id failed the checks
        self.workers: dict[str, dict] = {}
        self.answered_by: dict[str, str] = {}
        self.parked_results = 0  # results that came beside the stream, being large
        self.device = "remote"
        self.redis_up = False
        self.last_ok = 0.0  # when a Redis call last succeeded (monotonic)
        self.seen_workers: dict[str, dict] = {}  # the last workers seen alive, and when
        self.seen_at = -1e9
        self._adding = asyncio.Lock()  # this bot's job entries, added one at a time
        self._last_entry = (0, 0)  # the id of the last one (ms, seq)
        self.epoch_key = f"{self.reply_stream}:epoch"  # vanishes when Redis loses its data
        self.epoch_set = False
        self.sent: dict[str, tuple[str, bytes]] = {}  # job id -> (job stream, entry id) while pending
        self._tasks: list[asyncio.Task] = []
        self.r: aioredis.Redis | None = None

    async def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        # Through from_url, redis-py's connections retry nothing: after a Redis restart every
        # stale pooled connection failed one command, and each failure looked like a new
        # outage (workers forgotten, a member told the engine was away). A few quick retries
        # reconnect a stale connection; a real outage still surfaces within about a second.
        self.r = aioredis.Redis.from_url(
            self.url,
            socket_timeout=5,
            socket_connect_timeout=3,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), STALE_RETRIES),
            retry_on_error=[RedisConnectionError, RedisTimeout],
        )
        self._read = self.r.register_script(READ_AND_TRIM)
        self._get = self.r.register_script(GET_BOUNDED)
        self._getdel = self.r.register_script(GETDEL_BOUNDED)
        self._unblock = self.r.register_script(UNBLOCK)
        self._tasks = [
            asyncio.create_task(self._read_events(), name="redis-events"),
            asyncio.create_task(self._watch_workers(), name="redis-workers"),
        ]
        if wait:
            await self.wait_ready(timeout)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:  # a read blocked inside redis-py may take a moment to notice; never hang on it
            await asyncio.wait(self._tasks, timeout=3)
        for job_id in list(self.pending):
            p = self.pending.pop(job_id)
            if not p.future.done():
                p.future.set_exception(ShuttingDown("the bot is shutting down"))
        if self.r is not None:
            try:
                await asyncio.wait_for(self.r.delete(self.reply_stream, self.epoch_key), 3)
                await asyncio.wait_for(self.r.aclose(), 3)
            except (RedisError, OSError, asyncio.TimeoutError):
                pass

    # --- Redis up and down ----------------------------------------------------------------

    def _went_down(self, exc: Exception, since: float) -> None:
        """A call that began at ``since`` failed: jobs sent before then may be lost with
        Redis; jobs sent after it (Redis already back) are not. A failure that surfaces after a
        later call has succeeded (a retry that outlived the outage) changes nothing: Redis is
        back, and what it lost is found by the epoch check."""
        if self.last_ok > since:
            log.info("a Redis call that began before a later success failed (%s); Redis is up", exc)
            return
        lost = [job_id for job_id, p in self.pending.items() if p.submitted < since]
        if self.redis_up or lost:
            log.error("Redis unreachable (%s): failing %d waiting jobs", exc, len(lost))
        self.redis_up = False
        self.workers = {}
        self._ready.clear()
        for job_id in lost:
            self._fail(job_id, EngineRestarted.code, INTERRUPTED)

    async def _check_epoch(self) -> None:
        """A restarted Redis that lost its data is not a connection error (redis-py simply
        reconnects): it shows as our epoch key gone. Jobs whose stream entries went with it
        are failed; jobs sent since (Redis already back) are still there and kept."""
        if self.epoch_set and not await self.r.exists(self.epoch_key):
            lost = []
            for job_id, (stream, entry) in list(self.sent.items()):
                if job_id in self.pending:
                    found = await self.r.xrange(stream, entry, entry)
                    if found and found[0][1].get(b"job_id", b"").decode() == job_id:
                        continue
                    # Gone from the stream: lost with Redis, unless a worker already ran it since
                    # (it acks and deletes the entry once done, and marks the job done first).
                    (marker,) = await self._get(keys=[self.k["done"].format(job_id)], args=[MAX_DONE])
                    if not is_done(marker or None, self.secret, job_id):
                        lost.append(job_id)
            log.error("Redis restarted without its data: failing %d waiting jobs it lost", len(lost))
            for job_id in lost:
                self._fail(job_id, EngineRestarted.code, INTERRUPTED)
        await self.r.set(self.epoch_key, str(time.time()), ex=EPOCH_TTL)
        self.epoch_set = True
        for job_id in [j for j in self.sent if j not in self.pending]:
            del self.sent[job_id]

    async def _watch_workers(self) -> None:
        while True:
            since = time.monotonic()
            try:
                await self._check_epoch()
                ids = sorted(m.decode(errors="replace") for m in await self.r.srandmember(self.k["workers"], 256))
                names = [self.k["worker"].format(i) for i in ids]
                beats = await self._get(keys=names, args=[MAX_HEARTBEAT]) if ids else []
                alive = {}
                for worker_id, name, beat in zip(ids, names, beats):
                    if not beat:
                        await self.r.srem(self.k["workers"], worker_id)  # missed its heartbeats (or never had any)
                    elif (w := _heartbeat(open_heartbeat(beat, self.secret, name))) is not None and w[
                        "id"
                    ] == worker_id:
                        alive[worker_id] = w
                if not self.redis_up:
                    log.info("Redis reachable; %d engine workers", len(alive))
                self.redis_up = True
                self.last_ok = max(self.last_ok, since)
                self.workers = alive
                if alive:
                    self.seen_workers, self.seen_at = alive, time.monotonic()
                self._update_info()
                for hung in self.hung_jobs():
                    self._fail(hung.job.id, EngineRestarted.code, "That took far too long and was stopped; try again.")
                    self._tell_stop(hung.job.id)
            except (RedisConnectionError, RedisTimeout, OSError) as exc:
                self._went_down(exc, since)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading worker heartbeats failed")
            await asyncio.sleep(self.poll)

    def _update_info(self) -> None:
        if not self.workers:
            self._ready.clear()
            return
        models = [w["model_id"] for w in self.workers.values()]
        if self.info is None or self.info.model_id not in models:  # the model most workers serve
            w = next(w for w in self.workers.values() if w["model_id"] == max(set(models), key=models.count))
            self.info = WorkerReady(
                w["id"],
                w["model_id"],
                w["resolution"],
                w["num_ws"],
                w["w_dim"],
                tuple(w["directions"]),
                w["device"],
                w["pid"],
            )
            self.device = w["device"]
        self._ready.set()

    # --- events -----------------------------------------------------------------------------

    async def _read_events(self) -> None:
        while True:
            since = time.monotonic()
            try:
                got = await self._read(keys=[self.reply_stream, self.k["dead"]], args=[MAX_EVENT_ENTRY, READ_COUNT])
                self.last_ok = max(self.last_ok, since)
                for entry_id, fields, size in got:
                    if not fields:
                        self.refused += 1
                        log.error("refused an event entry %s of %d bytes unread", entry_id, size)
                        continue
                    await self._on_entry(dict(zip(fields[::2], fields[1::2])))
                if len(got) < READ_COUNT:
                    await asyncio.sleep(EVENT_POLL if self.pending else IDLE_EVENT_POLL)
            except (RedisConnectionError, RedisTimeout, OSError) as exc:
                self._went_down(exc, since)
                await asyncio.sleep(self.poll)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading engine events failed")
                await asyncio.sleep(self.poll)

    async def _on_entry(self, fields: dict) -> None:
        worker = fields.get(b"worker", b"?").decode(errors="replace")[:80]
        job_id = fields.get(b"job_id", b"?").decode(errors="replace")[:40]
        if job_id not in self.pending and job_id not in self.stopped:
            if job_id in self.answered_by:
                self.duplicates += 1
            return  # not ours (or answered already): nothing to read, nothing to GETDEL
        try:
            if b"ref" in fields:  # a large result parked beside the stream: only this job's own key
                if fields[b"ref"] != self.k["result"].format(job_id).encode():
                    raise wire.WireError("the result key is not this job's")
                data = await self._getdel(
                    keys=[self.k["result"].format(job_id)], args=[wire.MAX_MESSAGE_BYTES + wire.SEAL_OVERHEAD]
                )
                if not data:  # nothing there: a forged reference (or a result long expired) answers nothing;
                    self.refused += 1  # the job goes on waiting for its own answer (or its timeout)
                    log.error("no stored result for job %s from %s: ignored", job_id, worker)
                    return
                self.parked_results += 1
            else:
                data = fields.get(b"event", b"")
            context = event_context(self.reply_stream, job_id, fields.get(b"worker", b"").decode(errors="replace"))
            event = wire.loads(wire.unseal(data, self.secret, MAX_AGE, context),
                               expect=(Started, Progress, Result, JobFailed))
            if event.job_id != job_id:
                raise wire.WireError("the event's job id is not the entry's")
            for face in event.faces if isinstance(event, Result) else ():
                face.validate("returned face")
        except (wire.WireError, BadArgument) as exc:
            self.refused += 1
            log.error("refused an event for job %s from %s: %s", job_id, worker, exc)
            return
        if isinstance(event, (Result, JobFailed)):
            self.answered_by[event.job_id] = worker
            if len(self.answered_by) > 10_000:
                self.answered_by.pop(next(iter(self.answered_by)))
        self._deliver(event)

    # --- jobs ---------------------------------------------------------------------------------

    def submit(self, job: Request, on_progress: ProgressCallback | None = None) -> asyncio.Future:
        # A worker missing from one look at the heartbeats (Redis just restarted, a beat late)
        # still takes the job from the stream: only workers unseen for WORKER_GRACE refuse it.
        workers = self.workers or (self.seen_workers if time.monotonic() - self.seen_at < WORKER_GRACE else {})
        if not self.redis_up or not workers:
            raise EngineUnavailable("no engine worker is connected")
        model = job.model_id or self.info.model_id
        fut = self._book(job, on_progress)
        if not any(w["model_id"] == model for w in workers.values()):
            self._fail(job.id, "model_mismatch", NO_WORKER_FOR_MODEL)
            return fut
        asyncio.ensure_future(self._send(job, model))
        return fut

    async def _send(self, job: Request, model: str) -> None:
        try:
            stream = self.k["jobs"].format(model)
            data = wire.dumps(job)
            entry = await self._add_sealed(stream, job.id, data)
            if job.id in self.pending:
                self.sent[job.id] = (stream, entry)
        except (RedisError, OSError) as exc:
            log.error("could not send job %s: %s", job.id, exc)
            self._fail(job.id, EngineRestarted.code, INTERRUPTED)

    async def _add_sealed(self, stream: str, job_id: str, data: bytes) -> bytes:
        """Add a job entry under an id chosen here and sealed into it (so a copy added again
        under any other id does not open). This bot's entries are added one at a time, each
        past the last (so concurrent jobs never race for an id); past the stream's top id when
        another bot is ahead."""
        async with self._adding:
            top = self._last_entry
            for _ in range(8):
                ms = max(int(time.time() * 1000), top[0])
                seq = top[1] + 1 if ms == top[0] else 0
                entry_id = f"{ms}-{seq}"
                context = job_context(stream, entry_id, job_id, self.reply_stream)
                fields = {"job_id": job_id, "reply": self.reply_stream, "job": wire.seal(data, self.secret, context)}
                try:
                    added = await self.r.xadd(stream, fields, id=entry_id, maxlen=JOBS_MAXLEN, approximate=True)
                    self._last_entry = (ms, seq)
                    return added
                except ResponseError as exc:
                    if not blocked(exc):
                        raise
                    info = await self.r.xinfo_stream(stream)
                    last = info["last-generated-id"]
                    last = last.decode() if isinstance(last, bytes) else str(last)
                    top = tuple(int(x) for x in last.split("-"))
                    cut = future_cut(time.time())
                    if top >= tuple(int(x) for x in cut.split("-")):  # nobody's id: unblock
                        gone = await self._unblock(keys=[stream], args=[cut, GROUP])
                        log.error("job stream %s was blocked by %d entries past the clock; unblocked", stream, gone)
                        top = self._last_entry
            raise ResponseError("could not find a free entry id")

    def _tell_stop(self, job_id: str) -> None:
        asyncio.ensure_future(self._send_stop(job_id))

    async def _send_stop(self, job_id: str) -> None:
        """The job's stop key, sealed, for the worker that holds it (or takes it later); its entry
        deleted when no worker has taken it yet (a stopped member's photo does not wait in Redis)."""
        try:
            await self.r.set(
                self.k["stop"].format(job_id),
                wire.seal(job_id.encode(), self.secret, stop_context(job_id)),
                ex=DONE_TTL,
            )
            if job_id in self.sent:
                stream, entry = self.sent.pop(job_id)
                if not await self.r.xpending_range(stream, GROUP, min=entry, max=entry, count=1):
                    await self.r.xdel(stream, entry)
        except (RedisError, OSError) as exc:  # the member was answered already; the worker finishes it in vain
            log.warning("could not tell the workers that job %s was stopped: %s", job_id, exc)

    def stats(self) -> dict:
        workers = [
            {
                "id": w["id"],
                "model_id": w["model_id"],
                "device": w["device"],
                "host": w["host"],
                "jobs_done": w["jobs_done"],
                "busy": w["busy"],
                "jobs_per_minute": round(60 * w["jobs_done"] / max(w["up_seconds"], 1.0), 1),
                "rerun_alone": _count(w.get("rerun_alone")),
                "set_aside": _count(w.get("set_aside")),
                "metrics": str(w.get("metrics") or "")[:100],
            }
            for w in self.workers.values()
        ]
        return {
            **self._stats(),
            "alive": bool(self.workers),
            "pid": None,
            "device": self.device,
            "redis": "up" if self.redis_up else "down",
            "workers": workers,
            "refused": self.refused,
        }


_BEAT = {
    "id": str,
    "model_id": str,
    "resolution": int,
    "num_ws": int,
    "w_dim": int,
    "directions": list,
    "device": str,
    "pid": int,
    "host": str,
    "jobs_done": int,
    "busy": bool,
    "up_seconds": (int, float),
}


def _heartbeat(w: dict | None) -> dict | None:
    """A worker's opened heartbeat, when it holds what a worker writes (else ignored)."""
    if not isinstance(w, dict) or not all(isinstance(w.get(k), t) for k, t in _BEAT.items()):
        return None
    if not all(isinstance(d, str) for d in w["directions"]) or len(w["directions"]) > 256:
        return None
    return w


def _count(value) -> int:
    """A count from a worker's heartbeat (anything else reads as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else 0
