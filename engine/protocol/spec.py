"""What an engine is: one typed record that travels from the config (or ``wspace worker``'s
options) to the transport, the engine process and :class:`~engine.jobs.engine.Engine`,
instead of a row of positional arguments restated at every hop."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpec:
    model: str | None = None  # a generator file; None: the embedded model
    device: str = "cpu"
    directions: str | None = None  # None: the model's own directions file
    encoder: str | None = None  # an imported e4e/pSp encoder; None: the model's own, if any
    threads: int | None = None  # torch CPU threads; None: this engine's share of the host's cores
    batch: int = 1  # jobs worked on at once, their projections as one batch
    worker_id: str | None = None
    parent_pid: int | None = None  # the process dies with this one (the bot), whatever kills it
