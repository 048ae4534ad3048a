"""An engine worker on any host, fed through Redis Streams (``wspace worker --redis URL``).

The key layout and limits live with the protocol (``engine/protocol/redis_keys.py``).
Every payload is sealed (encrypted and authenticated) with the shared secret; what this
worker takes from Redis is checked before use: the entry's size (inside Redis, by a Lua
script, before it is loaded), the job id and reply stream fields, the seal for exactly
this stream, entry id, job id and reply stream, then the data-only decoding, and the
decoded job's id against the entry's. An entry that fails a check is moved to the
dead-letter stream; its job fails once with one sentence only when its seal opened (so
nothing unsealed makes a worker answer anyone).

One run per job: the bot chooses each entry's id and seals it in, so a copy of a sealed
entry added again (any number of times, to any stream) does not open; a worker also
remembers the jobs it ran for as long as their seals are valid, whoever deletes the
``done`` markers. Jobs are taken from any consumer that is not a live worker (its
heartbeat is sealed too): one that takes entries and never acknowledges them holds
nothing.

Delivery is at least once: while a job runs, the heartbeat thread keeps its pending
entry fresh (``XCLAIM … JUSTID``); a worker that dies stops doing so, and after
``claim_idle`` seconds another worker takes the job over with ``XAUTOCLAIM``. A worker that
batches cannot say which of its jobs killed it, so a reclaimed entry runs *alone*: the
worker that takes it finishes the jobs in hand, runs it by itself, and takes nothing else
meanwhile. One that kills that worker too (a delivery past ``MAX_DELIVERIES``) goes to the
dead-letter stream instead of running again. The bot resolves each job id once.

A job a member stopped has a sealed stop key; the worker looks for its jobs' keys at most
twice a second (engine/serving/stops.py) and answers a stopped job as stopped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from engine.jobs.answers import UNREADABLE
from engine.model import host
from engine.protocol import JobFailed, Request, wire
from engine.protocol.redis_keys import (
    DEAD_MAXLEN,
    DONE_TTL,
    EVENTS_MAXLEN,
    GET_BOUNDED,
    GROUP,
    MAX_AGE,
    MAX_DELIVERIES,
    MAX_DONE,
    MAX_EVENT_ENTRY,
    MAX_HEARTBEAT,
    MAX_JOB_ENTRY,
    RESULT_TTL,
    STALE_RETRIES,
    TAKE,
    UNBLOCK,
    beat_context,
    blocked,
    done_marker,
    event_context,
    future_cut,
    is_done,
    is_reply_stream,
    job_context,
    keys,
    open_heartbeat,
    stop_context,
)
from engine.protocol.requests import JOB_ID
from engine.protocol.spec import EngineSpec
from engine.serving.stops import StopList

log = logging.getLogger("wspace.engine")
STOP_POLL = 0.5  # seconds between two looks for stop keys
IDLE_POLL = 0.05  # seconds between two looks for new entries while idle (reads are Lua scripts, which cannot block)
RECLAIM_EVERY = 0.5  # seconds between two looks at the pending entries of other consumers
PENDING_LOOK = 64  # pending entries looked at each time
POISON = "That request stopped the face engine several times, so it was set aside; please try something else."


@dataclass(frozen=True)
class RedisLink:
    """How a worker reaches the bot through Redis (``wspace worker``'s options besides the engine)."""

    url: str
    secret: bytes  # shared with the bot (engine.redis_secret)
    prefix: str = "wspace"  # the keys' prefix, the bot's engine.redis_prefix
    claim_idle: float = 30.0  # take over a job a dead worker left after this many seconds
    inline_max: int = 256 * 1024  # results larger than this go beside the stream
    metrics: str = ""  # host:port for Prometheus metrics; empty: off


class RedisWorker:
    def __init__(self, link: RedisLink, engine, worker_id: str | None = None, batch: int = 1,
                 heartbeat: float = 1.0) -> None:
        url, secret, prefix = link.url, link.secret, link.prefix
        claim_idle, inline_max = link.claim_idle, link.inline_max
        if not secret:
            raise ValueError("a Redis worker needs the shared secret")
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.redis_errors = (redis.ConnectionError, redis.TimeoutError)
        self.response_error = redis.ResponseError
        # Through from_url, redis-py's connections retry nothing: after a Redis restart each
        # stale pooled connection would fail one command. A few quick retries reconnect it.
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), STALE_RETRIES),
                                      retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self.engine, self.claim_idle, self.inline_max, self.secret = engine, claim_idle, inline_max, secret
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.k = keys(prefix)
        self.stream = self.k["jobs"].format(engine.model_id)
        self.heartbeat = heartbeat
        self.current: set[bytes] = set()  # the stream entries being worked on
        self.batch = batch
        self.scheduler = None
        self.stops = StopList(self._stopped, every=STOP_POLL)
        self.solo: bytes | None = None  # a reclaimed entry running alone: nothing else is taken meanwhile
        self.waiting_solo: tuple | None = None  # a reclaimed entry taken while busy: runs alone next
        self.done = 0
        self.dead = 0
        self.reruns = 0  # reclaimed entries run alone
        self.metrics = ""  # the address of this worker's Prometheus metrics, when served
        self.busy_seconds = 0.0
        self.started = time.time()
        self.stopping = threading.Event()
        self.ran: dict[str, float] = {}  # job id -> when it was taken: never run twice while its seal is valid
        self.last_reclaim = 0.0
        self._take = self.r.register_script(TAKE)
        self._get = self.r.register_script(GET_BOUNDED)
        self._unblock = self.r.register_script(UNBLOCK)

    # --- liveness -------------------------------------------------------------------------

    def describe(self) -> dict:
        G = self.engine.G
        return {
            "id": self.id,
            "model_id": self.engine.model_id,
            "resolution": G.resolution,
            "num_ws": G.num_ws,
            "w_dim": G.w_dim,
            "directions": sorted(self.engine.directions),
            "device": self.engine.device,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "jobs_done": self.done,
            "rerun_alone": self.reruns,
            "set_aside": self.dead,
            "metrics": self.metrics,
            "busy_seconds": round(self.busy_seconds, 1),
            "up_seconds": round(time.time() - self.started, 1),
            "busy": bool(self.current),
            "last_seen": time.time(),
            "current": sorted(_text(e) for e in self.current),
        }

    def beat(self) -> None:
        ttl = max(3, int(self.heartbeat * 4))
        key = self.k["worker"].format(self.id)
        pipe = self.r.pipeline()
        pipe.set(key, wire.seal(json.dumps(self.describe()).encode(), self.secret, beat_context(key)), ex=ttl)
        pipe.sadd(self.k["workers"], self.id)
        current = list(self.current)
        if current:  # still working on them: keep them from being reclaimed
            pipe.xclaim(self.stream, GROUP, self.id, min_idle_time=0, message_ids=current, justid=True)
        pipe.execute()

    def _heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 (Redis away: keep trying, the work loop reports it)
                log.debug("heartbeat failed: %s", exc)
            self.stopping.wait(self.heartbeat)

    # --- jobs -----------------------------------------------------------------------------

    def ensure_group(self) -> None:
        import redis

        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def take(self, block: int | None = 1000):
        """A job entry ``(id, fields, deliveries)``: first one a dead worker or a rogue consumer
        holds, else a new one (looks for up to ``block`` ms; ``None``: once)."""
        deadline = time.monotonic() + (block or 0) / 1000
        while True:
            if time.monotonic() - self.last_reclaim >= RECLAIM_EVERY or block is None:
                self.last_reclaim = time.monotonic()
                if (entry := self.reclaim()) is not None:
                    return entry
            if (
                entry := self._taken(
                    self._take(keys=[self.stream, self.k["dead"]], args=[GROUP, self.id, MAX_JOB_ENTRY, "new", 0])
                )
            ) is not None:
                return entry
            if time.monotonic() >= deadline or self.stopping.is_set():
                return None
            time.sleep(IDLE_POLL)

    def _taken(self, got):
        """An entry the TAKE script returned; None for none, or one it set aside as oversized."""
        if not got:
            return None
        entry_id, fields, size, deliveries = got
        if not fields:
            log.error("job entry %s set aside unread: %d bytes", entry_id, size)
            self.dead += 1
            return None
        return entry_id, dict(zip(fields[::2], fields[1::2])), int(deliveries)

    def live_workers(self, ids) -> dict[str, set[bytes]]:
        """Of ``ids``, the workers with a valid sealed heartbeat, and the entries each says it holds."""
        ids = sorted(ids)
        names = [self.k["worker"].format(i) for i in ids]
        values = self._get(keys=names, args=[MAX_HEARTBEAT]) if names else []
        live = {}
        for worker_id, key, value in zip(ids, names, values):
            if (beat := open_heartbeat(value, self.secret, key)) is not None:
                live[worker_id] = {e.encode() for e in beat.get("current", []) if isinstance(e, str)}
        return live

    def reclaim(self):
        """An entry pending with another consumer that is not working on it: one that is not a
        live worker (a dead worker, a rogue that never acknowledges) at once; a live worker's
        entry it no longer lists after ``claim_idle``; one pending with this worker's own name
        that it does not hold (a rogue using the name, a batch dropped when Redis failed)."""
        pending = self.r.xpending_range(self.stream, GROUP, min="-", max="+", count=PENDING_LOOK)
        if not pending:
            return None
        owners = {_text(p["consumer"]) for p in pending}
        live = self.live_workers(owners - {self.id})
        held = set().union(*live.values()) if live else set()
        mine = self.current | ({self.waiting_solo[0]} if self.waiting_solo else set())
        for p in pending:
            entry_id, owner, idle = p["message_id"], _text(p["consumer"]), int(p["time_since_delivered"])
            if entry_id in held or entry_id in mine:
                continue
            if owner in live and idle < self.claim_idle * 1000:
                continue
            got = self._take(
                keys=[self.stream, self.k["dead"]], args=[GROUP, self.id, MAX_JOB_ENTRY, entry_id, max(1, idle)]
            )
            if (entry := self._taken(got)) is not None:
                log.warning(
                    "worker %s reclaimed job entry %s from %s (delivery %d)", self.id, _text(entry_id), owner, entry[2]
                )
                return entry
        return None

    def emit(self, reply: str, event) -> None:
        try:
            data = wire.dumps(event)
        except wire.WireError as exc:  # e.g. a result over the size cap: the member still gets an answer
            data = wire.dumps(JobFailed(event.job_id, "internal", "The answer was too large to send.", str(exc)))
        data = wire.seal(data, self.secret, event_context(reply, event.job_id, self.id))
        fields = {"worker": self.id, "job_id": event.job_id}
        if len(data) > min(self.inline_max, MAX_EVENT_ENTRY - 1024):
            key = self.k["result"].format(event.job_id)
            self.r.set(key, data, ex=RESULT_TTL)
            fields["ref"] = key
        else:
            fields["event"] = data
        try:
            self.r.xadd(reply, fields, maxlen=EVENTS_MAXLEN, approximate=True)
        except self.response_error as exc:  # an entry at the largest id blocks the stream: unblock it, once
            if not blocked(exc):
                raise
            log.error("reply stream %s was blocked by an entry past the clock; unblocked", reply)
            self._unblock(keys=[reply], args=[future_cut(time.time()), ""])
            self.r.xadd(reply, fields, maxlen=EVENTS_MAXLEN, approximate=True)

    def open(self, entry_id, fields: dict) -> tuple[str, str, bytes]:
        """The job id, reply stream and request bytes of an entry whose seal opens for exactly
        this stream, entry id, job id and reply stream; :class:`wire.WireError` (one sentence) else."""
        job_id = _text(fields.get(b"job_id"))
        reply = _text(fields.get(b"reply"))
        if not JOB_ID.fullmatch(job_id):
            raise wire.WireError("The entry has no valid job id.")
        if not is_reply_stream(self.k, reply):
            raise wire.WireError("The entry's reply stream is not a bot's.")
        data = fields.get(b"job")
        context = job_context(self.stream, _text(entry_id), job_id, reply)
        return job_id, reply, wire.unseal(data if isinstance(data, bytes) else b"", self.secret, MAX_AGE, context)

    @staticmethod
    def decode(job_id: str, data: bytes) -> Request:
        request = wire.loads(data, expect=Request)
        if request.id != job_id:
            raise wire.WireError("The entry's job id is not its request's.")
        return request

    def bury(self, entry_id, fields: dict, reason: str, sentence: str, answer: bool = False) -> None:
        """Move an entry to the dead-letter stream; with ``answer`` (its seal opened, so its job id
        and reply stream are a bot's), fail its job once."""
        log.error("job entry %s set aside: %s", entry_id, reason)
        job_id, reply = _text(fields.get(b"job_id")), _text(fields.get(b"reply"))
        pipe = self.r.pipeline()
        pipe.xadd(
            self.k["dead"],
            {
                "entry": str(entry_id),
                "job_id": job_id[:64],
                "reason": reason[:500],
                "worker": self.id,
                "time": str(time.time()),
            },
            maxlen=DEAD_MAXLEN,
            approximate=True,
        )
        pipe.xack(self.stream, GROUP, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()
        self.dead += 1
        if answer:
            self.emit(reply, JobFailed(job_id, "bad_argument", sentence, reason))

    def admit(self, entry_id, fields: dict, deliveries: int = 1):
        """``(reply stream, request, done key)`` of an entry that is to run now; None when it
        was set aside (poison, unreadable) or already run."""
        try:
            job_id, reply, data = self.open(entry_id, fields)
        except wire.WireError as exc:
            self.bury(entry_id, fields, str(exc), UNREADABLE)
            return None
        if deliveries > MAX_DELIVERIES:
            self.bury(entry_id, fields, f"delivered {deliveries} times", POISON, answer=True)
            return None
        try:
            request = self.decode(job_id, data)
        except wire.WireError as exc:
            self.bury(entry_id, fields, str(exc), UNREADABLE, answer=True)
            return None
        done_key = self.k["done"].format(job_id)
        if job_id in self.ran or self.was_done(done_key, job_id):  # run already: once only
            log.warning("job %s (entry %s) was run already; dropped", job_id, _text(entry_id))
            self.r.xack(self.stream, GROUP, entry_id)
            self.r.xdel(self.stream, entry_id)
            return None
        self.remember(job_id)
        return reply, request, done_key

    def remember(self, job_id: str) -> None:
        now = time.time()
        self.ran[job_id] = now
        while self.ran and now - next(iter(self.ran.values())) > MAX_AGE + 60:
            self.ran.pop(next(iter(self.ran)))

    def was_done(self, done_key: str, job_id: str) -> bool:
        """Whether a worker sealed ``done_key`` for this job (a forged marker silences nothing)."""
        (value,) = self._get(keys=[done_key], args=[MAX_DONE])
        return is_done(value or None, self.secret, job_id)

    def settle(self, entry_id, done_key: str, job_id: str) -> None:
        """The entry's job has answered: never run it again."""
        self.r.set(done_key, done_marker(self.secret, job_id, self.id), ex=DONE_TTL)
        self.r.xack(self.stream, GROUP, entry_id)
        self.r.xdel(self.stream, entry_id)
        self.done += 1

    def _stopped(self, job_ids: list[str]) -> list[str]:
        """Which of ``job_ids`` have a stop key sealed by a bot (a forged key stops nothing)."""
        try:
            values = self._get(keys=[self.k["stop"].format(job_id) for job_id in job_ids], args=[1024])
        except self.redis_errors as exc:  # Redis away: the work loop reports it; nothing is stopped meanwhile
            log.debug("could not read stop keys: %s", exc)
            return []
        out = []
        for job_id, value in zip(job_ids, values):
            try:
                if value and wire.unseal(value, self.secret, MAX_AGE, stop_context(job_id)) == job_id.encode():
                    out.append(job_id)
            except wire.WireError as exc:
                log.warning("ignored a stop key for job %s: %s", job_id, exc)
        return out

    def handle(self, entry_id, fields: dict, deliveries: int = 1) -> None:
        """Start an entry's job in the scheduler (the faces it draws are drawn, and a projection
        joins the batch, at the next ``step``); its entry is settled when it answers. A
        reclaimed entry (a second delivery) runs alone."""
        admitted = self.admit(entry_id, fields, deliveries)
        if admitted is None:
            self.current.discard(entry_id)
            return
        reply, request, done_key = admitted
        self.current.add(entry_id)
        if deliveries > 1:
            self.solo = entry_id
            self.reruns += 1
        log.info(
            "job %s (%s) taken from entry %s, delivery %d%s",
            request.id,
            request.kind,
            entry_id,
            deliveries,
            ", alone" if deliveries > 1 else "",
        )

        def answered() -> None:
            log.info("job %s answered", request.id)
            self.current.discard(entry_id)
            if self.solo == entry_id:
                self.solo = None
            self.settle(entry_id, done_key, request.id)

        t0 = time.monotonic()
        self.jobs().start(request, lambda event: self.emit(reply, event), answered)
        self.busy_seconds += time.monotonic() - t0

    def jobs(self):
        """The scheduler of the jobs in hand (a new one after Redis failed mid-batch)."""
        from engine.serving.scheduler import Scheduler

        if self.scheduler is None:
            self.scheduler = Scheduler(self.engine, None, self.batch, self.stops)
        return self.scheduler

    def pump(self) -> None:
        """Take the entries that are waiting (up to ``batch`` jobs), then one step: their drawings
        and projections. A reclaimed entry waits for the jobs in hand to finish (its heartbeat
        keeps it), then runs by itself."""
        jobs = self.jobs()
        while self.solo is None and jobs.running() < self.batch:
            if self.waiting_solo is not None:
                if jobs.busy():
                    break
                entry, self.waiting_solo = self.waiting_solo, None
            else:
                if not jobs.busy():
                    host.idle()  # waiting for work: other engines on this host may take our cores
                entry = self.take(block=None if jobs.busy() else 1000)
                if entry is None:
                    break
                if entry[2] > 1 and jobs.busy():
                    self.waiting_solo = entry
                    self.current.add(entry[0])
                    continue
            self.handle(*entry)
        if jobs.busy():
            t0 = time.monotonic()
            jobs.step()
            self.busy_seconds += time.monotonic() - t0

    def drop_batch(self) -> None:
        """Redis failed mid-batch: forget the jobs in hand (their entries stay pending and are
        taken again, here or by another worker, once they have been idle for claim_idle)."""
        self.scheduler = None
        self.solo = self.waiting_solo = None
        self.current.clear()

    def serve(self) -> None:
        import redis

        threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat").start()
        log.info("worker %s serving %s", self.id, self.stream)
        down, grouped = False, False
        while not self.stopping.is_set():
            try:
                if not grouped:
                    self.ensure_group()
                    grouped = True
                self.pump()
                if down:
                    log.warning("worker %s: Redis is back", self.id)
                    down = False
            except redis.ResponseError as exc:
                grouped = False  # NOGROUP: Redis restarted without its data; make the group again
                self.drop_batch()
                if "NOGROUP" not in str(exc):
                    log.error("worker %s: Redis refused: %s", self.id, exc)
                    time.sleep(0.5)
            except self.redis_errors as exc:
                if not down:
                    log.error("worker %s: Redis unreachable (%s); retrying", self.id, exc)
                down, grouped = True, False
                self.drop_batch()
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.r.delete(self.k["worker"].format(self.id))
            self.r.srem(self.k["workers"], self.id)
        except Exception:  # noqa: BLE001 (leaving: Redis may be gone already)
            pass


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else ""


def serve_metrics(worker: RedisWorker, address: str) -> str:
    """Prometheus metrics of this worker at ``host:port``, read from it when scraped; returns
    the address served (the bot lists it with the worker)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            labels = {"worker": worker.id}
            for name, doc, value in (
                ("jobs", "Jobs this worker answered", worker.done),
                ("busy_seconds", "Seconds spent working on jobs", worker.busy_seconds),
                ("reruns", "Entries a dead worker left, run here alone", worker.reruns),
                ("dead_letters", "Entries set aside (poison, unreadable)", worker.dead),
            ):
                family = CounterMetricFamily(f"wspace_worker_{name}", doc, labels=list(labels))
                family.add_metric(list(labels.values()), value)
                yield family
            busy = GaugeMetricFamily("wspace_worker_busy", "1 while jobs are in hand", labels=list(labels))
            busy.add_metric(list(labels.values()), 1.0 if worker.current else 0.0)
            yield busy

    registry = CollectorRegistry()
    registry.register(Collector())
    host, _, port = address.rpartition(":")
    from engine.protocol.scrape import serve_scrapes

    server = serve_scrapes(registry, host or "127.0.0.1", int(port))
    served = f"{host or '127.0.0.1'}:{server.server_port}"
    log.info("worker %s: metrics at http://%s/metrics", worker.id, served)
    return served


def serve_redis(spec: EngineSpec, link: RedisLink) -> None:
    """Process entry point of ``wspace worker``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    from engine.model.runtime import prepare_process

    prepare_process(spec.threads)
    from engine.jobs.engine import Engine

    worker = RedisWorker(link, Engine.of(spec), spec.worker_id, batch=spec.batch)
    if link.metrics:
        worker.metrics = serve_metrics(worker, link.metrics)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
