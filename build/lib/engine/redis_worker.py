"""An engine worker on any host, fed through Redis Streams (``wspace worker --redis URL``).

Keys (``prefix`` defaults to ``wspace``):

- ``{prefix}:jobs:{model_id}`` — the job stream of one model, read by the consumer group
  ``engines``. A worker reads only its own model's stream, so a job is never run by a
  worker whose model differs from the one its latents were made with.
- ``{prefix}:worker:{id}`` — the worker's heartbeat (JSON, expires after a few missed
  beats), listed in the set ``{prefix}:workers``.
- The reply stream named in each job entry receives its events; a result larger than
  ``inline_max`` bytes is stored under ``{prefix}:result:{job_id}`` (expiring) and the
  stream carries only a reference, so big GIFs never bloat a stream.
- ``{prefix}:done:{job_id}`` — set when a job finished, so a redelivered job is not run
  twice.

Delivery is at least once: while a job runs, the heartbeat thread keeps its pending
entry fresh (``XCLAIM … JUSTID``); a worker that dies stops doing so, and after
``claim_idle`` seconds another worker takes the job over with ``XAUTOCLAIM``. The bot
resolves each job id once and ignores a second answer.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from engine import wire

STALE_RETRIES = 3  # per command, after a connection error (a stale connection after a Redis restart)
from engine.jobs import JobFailed, Result
from engine.worker import run_job

log = logging.getLogger("wspace.engine")

GROUP = "engines"
EVENTS_MAXLEN = 10_000
JOBS_MAXLEN = 10_000
DONE_TTL = 3600
RESULT_TTL = 900


def keys(prefix: str) -> dict:
    return {"workers": f"{prefix}:workers", "worker": f"{prefix}:worker:" + "{}", "jobs": f"{prefix}:jobs:" + "{}",
            "done": f"{prefix}:done:" + "{}", "result": f"{prefix}:result:" + "{}"}


class RedisWorker:
    def __init__(self, url: str, engine, worker_id: str | None = None, claim_idle: float = 30.0,
                 inline_max: int = 256 * 1024, prefix: str = "wspace", heartbeat: float = 1.0) -> None:
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.redis_errors = (redis.ConnectionError, redis.TimeoutError)
        # Through from_url, redis-py's connections retry nothing: after a Redis restart each
        # stale pooled connection would fail one command. A few quick retries reconnect it.
        self.r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5,
                                      retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), STALE_RETRIES),
                                      retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self.engine, self.claim_idle, self.inline_max = engine, claim_idle, inline_max
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.k = keys(prefix)
        self.stream = self.k["jobs"].format(engine.model_id)
        self.heartbeat = heartbeat
        self.current: bytes | None = None  # the stream entry being worked on
        self.done = 0
        self.busy_seconds = 0.0
        self.started = time.time()
        self.stopping = threading.Event()

    # --- liveness -------------------------------------------------------------------------

    def describe(self) -> dict:
        G = self.engine.G
        return {"id": self.id, "model_id": self.engine.model_id, "resolution": G.resolution, "num_ws": G.num_ws,
                "w_dim": G.w_dim, "directions": sorted(self.engine.directions), "device": self.engine.device,
                "pid": os.getpid(), "host": socket.gethostname(), "jobs_done": self.done,
                "busy_seconds": round(self.busy_seconds, 1), "up_seconds": round(time.time() - self.started, 1),
                "busy": self.current is not None, "last_seen": time.time()}

    def beat(self) -> None:
        ttl = max(3, int(self.heartbeat * 4))
        pipe = self.r.pipeline()
        pipe.set(self.k["worker"].format(self.id), json.dumps(self.describe()), ex=ttl)
        pipe.sadd(self.k["workers"], self.id)
        current = self.current
        if current is not None:  # still working on it: keep it from being reclaimed
            pipe.xclaim(self.stream, GROUP, self.id, min_idle_time=0, message_ids=[current], justid=True)
        pipe.execute()

    def _heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.beat()
            except Exception as exc:  # Redis away: keep trying, the work loop reports it
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

    def take(self):
        """A job entry: first one a dead worker left behind, else a new one (blocks ≤ 1 s)."""
        claimed = self.r.xautoclaim(self.stream, GROUP, self.id, min_idle_time=int(self.claim_idle * 1000),
                                    start_id="0-0", count=1)
        for entry_id, fields in claimed[1]:
            if fields:
                log.warning("worker %s reclaimed job entry %s", self.id, entry_id)
                return entry_id, fields
        got = self.r.xreadgroup(GROUP, self.id, {self.stream: ">"}, count=1, block=1000)
        if got and got[0][1]:
            return got[0][1][0]
        return None

    def emit(self, reply: str, event) -> None:
        data = wire.dumps(event)
        fields = {"worker": self.id, "job_id": event.job_id}
        if isinstance(event, Result) and len(data) > self.inline_max:
            key = self.k["result"].format(event.job_id)
            self.r.set(key, data, ex=RESULT_TTL)
            fields["ref"] = key
        else:
            fields["event"] = data
        self.r.xadd(reply, fields, maxlen=EVENTS_MAXLEN, approximate=True)

    def handle(self, entry_id, fields: dict) -> None:
        job_id = fields.get(b"job_id", b"?").decode(errors="replace")
        reply = fields.get(b"reply", b"").decode(errors="replace")
        done_key = self.k["done"].format(job_id)
        if self.r.exists(done_key):  # redelivered after it finished: answer once only
            self.r.xack(self.stream, GROUP, entry_id)
            self.r.xdel(self.stream, entry_id)
            return
        self.current = entry_id
        t0 = time.monotonic()
        try:
            try:
                job = wire.loads(fields.get(b"job", b""))
            except wire.WireError as exc:
                log.error("job entry %s refused: %s", entry_id, exc)
                self.emit(reply, JobFailed(job_id, "internal", "That request could not be read.", str(exc)))
            else:
                run_job(self.engine, job, lambda event: self.emit(reply, event))
            self.r.set(done_key, self.id, ex=DONE_TTL)
            self.r.xack(self.stream, GROUP, entry_id)
            self.r.xdel(self.stream, entry_id)
            self.done += 1
        finally:
            self.current = None
            self.busy_seconds += time.monotonic() - t0

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
                entry = self.take()
                if down:
                    log.warning("worker %s: Redis is back", self.id)
                    down = False
                if entry is not None:
                    self.handle(*entry)
            except redis.ResponseError as exc:
                grouped = False  # NOGROUP: Redis restarted without its data; make the group again
                if "NOGROUP" not in str(exc):
                    log.error("worker %s: Redis refused: %s", self.id, exc)
                    time.sleep(0.5)
            except self.redis_errors as exc:
                if not down:
                    log.error("worker %s: Redis unreachable (%s); retrying", self.id, exc)
                down, grouped = True, False
                time.sleep(0.5)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.r.delete(self.k["worker"].format(self.id))
            self.r.srem(self.k["workers"], self.id)
        except Exception:
            pass


def serve_redis(url: str, model=None, device: str = "cpu", directions=None, threads: int | None = None,
                worker_id: str | None = None, claim_idle: float = 30.0, inline_max: int = 256 * 1024,
                prefix: str = "wspace") -> None:
    """Process entry point of ``wspace worker``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    from engine.runtime import prepare_process

    prepare_process(threads)
    from engine.ops import Engine

    worker = RedisWorker(url, Engine(model, device, directions), worker_id, claim_idle, inline_max, prefix)
    try:
        worker.serve()
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
