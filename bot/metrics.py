"""Prometheus metrics of the bot, opt-in (``metrics.address`` in the config): what an
operator watches — jobs by kind and outcome, queue depth and wait, projection steps,
acknowledgement latency, engine restarts and reruns, dead letters, members and faces
stored. Served on its own thread, bounded (``engine/protocol/scrape.py``); a registry per bot (tests run
several). Engine workers serve their own (``wspace worker --metrics``, engine/serving/redis_worker.py).
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from engine.protocol.scrape import serve_scrapes

log = logging.getLogger("wspace.metrics")
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0)  # Discord wants an answer within 3 s
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class EngineCollector:
    """The transport's own figures, read when scraped (nothing to keep in step)."""

    def __init__(self, stats) -> None:
        self.stats = stats  # () -> the transport's stats() dict, or None before it exists

    def collect(self):
        e = self.stats()
        if e is None:
            return
        yield GaugeMetricFamily("wspace_queue_depth", "Jobs waiting or running in the engine", value=e["queued"])
        yield GaugeMetricFamily("wspace_engine_up", "1 while an engine (or a worker) can take jobs",
                                value=1.0 if e.get("alive") or e.get("workers") else 0.0)
        yield CounterMetricFamily("wspace_engine_restarts", "Engine processes that died and were restarted",
                                  value=e.get("restarts", 0))
        yield CounterMetricFamily("wspace_jobs_rerun_after_restart", "Jobs a dead engine held, run again alone",
                                  value=e.get("rerun_after_restart", 0))
        yield CounterMetricFamily(
            "wspace_jobs_failed_after_restart",
            "Jobs that ended because an engine died holding them",
            value=e.get("failed_after_restart", 0),
        )
        workers = e.get("workers", [])
        yield GaugeMetricFamily("wspace_workers", "Redis engine workers alive", value=len(workers))
        yield GaugeMetricFamily(
            "wspace_dead_letters",
            "Job entries the live workers set aside",
            value=sum(w.get("set_aside", 0) for w in workers),
        )


class BotMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs = Counter(
            "wspace_jobs", "Jobs ended, by kind and outcome (ok, or why not)", ["kind", "outcome"], registry=r
        )
        self.wait = Histogram(
            "wspace_job_wait_seconds",
            "From a job's submission to the engine starting it",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "wspace_job_seconds", "From a job's submission to its answer", ["kind"], buckets=WAIT_BUCKETS, registry=r
        )
        self.steps = Counter(
            "wspace_projection_steps",
            "Projection steps of answered /project jobs (rate() of it: steps per second)",
            registry=r,
        )
        self.ack = Histogram(
            "wspace_ack_seconds", "From receiving an interaction to acknowledging it", buckets=ACK_BUCKETS, registry=r
        )
        self.members = Gauge("wspace_members", "Members with a row in the database", registry=r)
        self.faces = Gauge("wspace_faces", "Kept faces stored", registry=r)
        self.engine = EngineCollector(lambda: None)
        r.register(self.engine)
        self.port: int | None = None

    def serve(self, address: str) -> int:
        """Start the scrape endpoint at ``host:port`` (port 0: any free one); returns the port."""
        host, _, port = address.rpartition(":")
        server = serve_scrapes(self.registry, host or "127.0.0.1", int(port))
        self.port = server.server_port
        log.info("metrics at http://%s:%d/metrics", host or "127.0.0.1", self.port)
        return self.port

    def acknowledged(self, received: float | None) -> None:
        if received is not None:
            self.ack.observe(time.monotonic() - received)

    def ended(self, kind: str, outcome: str, submitted: float | None, result=None) -> None:
        self.jobs.labels(kind, outcome).inc()
        if submitted is not None:
            self.duration.labels(kind).observe(time.monotonic() - submitted)
        steps = getattr(result, "figures", {}).get("steps") if result is not None and kind == "project" else None
        if isinstance(steps, int) and steps > 0:
            self.steps.inc(steps)

    def stored(self, members: int, faces: int) -> None:
        self.members.set(members)
        self.faces.set(faces)
