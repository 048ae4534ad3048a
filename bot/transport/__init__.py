"""How jobs reach an engine: one interface (:class:`Transport`), two carriers.

``local``: one engine process spawned here (multiprocessing queues). ``redis``: engine
workers on any host (Redis Streams, ``wspace worker``). Both carry
``engine.protocol`` objects in its data-only wire encoding.
"""

from __future__ import annotations

from bot.transport.base import RERUN, EngineUnavailable, ProgressCallback, QueueFull, ShuttingDown, Transport

__all__ = ["RERUN", "EngineUnavailable", "ProgressCallback", "QueueFull", "ShuttingDown", "Transport", "make_transport"]


def make_transport(settings, registry=None) -> Transport:
    """The transport the config asks for (``settings``: :class:`bot.config.Settings`); a local
    engine's processes are recorded in ``registry`` (:class:`bot.transport.pidfile.EngineRegistry`)."""
    engine, limits = settings.engine, settings.limits
    if engine.transport == "redis":
        from bot.transport.redis_streams import RedisTransport

        return RedisTransport(engine.redis_url, settings.redis_secret(), limits.queue_size,
                              engine.job_timeout_seconds, engine.redis_prefix)
    from bot.transport.local import LocalTransport

    return LocalTransport(str(engine.model) if engine.model else None, engine.device,
                          str(engine.directions) if engine.directions else None, engine.threads,
                          limits.queue_size, engine.job_timeout_seconds, registry, engine.batch,
                          str(engine.encoder) if engine.encoder else None)
