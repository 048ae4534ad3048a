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

    return LocalTransport(engine_spec(engine), limits.queue_size, engine.job_timeout_seconds, registry)


def engine_spec(engine):
    """The :class:`~engine.protocol.spec.EngineSpec` the ``[engine]`` settings describe."""
    from engine.protocol.spec import EngineSpec

    def text(path) -> str | None:
        return None if path is None else str(path)

    return EngineSpec(model=text(engine.model), device=engine.device, directions=text(engine.directions),
                      encoder=text(engine.encoder), threads=engine.threads, batch=engine.batch)
