"""Jobs a member stopped: how an engine hears of them, and gives up on them.

The bot names a job it stopped (``Transport.cancel``): to its local engine on a stop
queue beside the job queue; to Redis workers as a sealed key per job
(``engine/protocol/redis_keys.py``). The scheduler (engine/serving/scheduler.py) asks a
:class:`StopList` which of the jobs in hand were stopped before every batched step, and
answers them with :class:`Stopped`; their members leave the batch and the others carry on.
A stopped job that has not started never starts, and a long job with no projection (a
morph's frames, a look-alike search) stops at its next progress report.
"""

from __future__ import annotations

import queue
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from engine.protocol import Stopped
from engine.protocol.requests import JOB_ID

STOPPED = "Stopped, as asked."
KEEP = 4096  # stopped job ids remembered (those announced before their job arrives)


class StopList:
    """The stopped jobs this engine has heard of. ``fetch(job_ids)`` returns job ids that
    were stopped (of those asked, or any it has heard of); it is asked at most every
    ``every`` seconds unless ``fresh``."""

    def __init__(self, fetch: Callable[[list[str]], Iterable[str]], every: float = 0.0, keep: int = KEEP) -> None:
        self.fetch, self.every, self.keep = fetch, every, keep
        self.ids: OrderedDict[str, None] = OrderedDict()
        self.last = float("-inf")

    def which(self, job_ids: Iterable[str], fresh: bool = False) -> set[str]:
        """Which of ``job_ids`` were stopped."""
        ids = list(job_ids)
        now = time.monotonic()
        if ids and (fresh or now - self.last >= self.every):
            self.last = now
            for job_id in self.fetch(ids):
                if isinstance(job_id, str) and JOB_ID.fullmatch(job_id):
                    self.ids[job_id] = None
                    self.ids.move_to_end(job_id)
            while len(self.ids) > self.keep:
                self.ids.popitem(last=False)
        return {job_id for job_id in ids if job_id in self.ids}

    def check(self, job_id: str, fresh: bool = False) -> None:
        """Raise :class:`Stopped` when ``job_id`` was stopped."""
        if self.which([job_id], fresh):
            raise Stopped(STOPPED)


def drain(stop_queue) -> Callable[[list[str]], list[str]]:
    """A local engine's ``fetch``: every job id waiting on its stop queue (non-blocking)."""
    def fetch(_asked: list[str]) -> list[str]:
        out = []
        while True:
            try:
                out.append(stop_queue.get_nowait())
            except queue.Empty:
                return out
            except (EOFError, OSError, ValueError):  # the bot went away: nothing more will be stopped
                return out
    return fetch
