"""What a handler asks of the scheduler besides projections (engine/latent/batch.py's
``Member``): faces drawn (a :class:`Draw`, or a pause: a Draw of nothing), and the clock a
long handler keeps its budget by.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Draw:
    """Faces a handler asks to have drawn (it yields this and is sent the ``[N, H, W, 3]``
    images): ``ws`` ``[N, num_ws, w_dim]``, item ``i`` with the ``faces``' noise maps mixed by
    ``weights[i]`` (see :meth:`engine.jobs.engine.Engine.draw`). The scheduler draws several jobs' asks in one
    forward pass."""

    ws: np.ndarray
    faces: list
    weights: np.ndarray
    seconds: float = 0.0  # set once drawn: this ask's share of the drawing time (an OwnClock counts it)
    alone: bool = False  # drawn by itself, never beside other jobs' faces (its pixels as when run alone)


class OwnClock:
    """The seconds a handler has worked, not counting the time it spent suspended while other
    members' jobs ran; what was drawn for it counts (its :attr:`Draw.seconds`). A long handler
    with a time budget (the stranger search) spends the same budget alone or beside others."""

    def __init__(self) -> None:
        self.spent, self.since = 0.0, time.perf_counter()

    def __call__(self) -> float:
        return self.spent + time.perf_counter() - self.since

    def away(self) -> None:
        """Call just before yielding."""
        self.spent += time.perf_counter() - self.since

    def back(self, ask: "Draw | None" = None) -> None:
        """Call on being resumed, with what was drawn for it."""
        self.spent += ask.seconds if ask is not None else 0.0
        self.since = time.perf_counter()
