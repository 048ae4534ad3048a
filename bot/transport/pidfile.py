"""Engines left by a dead bot are found and ended at the next start.

The parent-death signal (``engine/model/runtime.py``) ends an engine when its bot dies, on
Linux. This file is the second line, for whatever that misses (another OS, a signal lost
in a race): the bot records its own pid and start time and those of every engine process
it spawns; a new bot on the same database ends each recorded engine whose pid still has
the recorded start time (so a reused pid is never hit), unless the recorded bot itself
is still alive.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("wspace.transport")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _alive(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("pid"), int) and entry.get("start") is not None \
        and start_time(entry["pid"]) == entry["start"]


class EngineRegistry:
    """``<database>.engines.json``: this bot and the engine processes it runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.me = {"pid": os.getpid(), "start": start_time(os.getpid())}
        self.engines: dict[int, int | None] = {}

    def end_orphans(self) -> list[int]:
        """End the engines a dead predecessor left running; returns their pids."""
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict):
            record = {}
        bot = record.get("bot")
        if _alive(bot) and bot["pid"] != os.getpid():
            log.warning("another bot (pid %s) is running on this database; its engines are left alone", bot["pid"])
            return []
        ended = []
        for entry in record.get("engines", []) if isinstance(record.get("engines"), list) else []:
            if _alive(entry) and entry["pid"] != os.getpid():
                try:
                    os.kill(entry["pid"], signal.SIGKILL)
                    ended.append(entry["pid"])
                except OSError:
                    pass
        if ended:
            log.warning("ended %d engine processes left by a previous bot: %s", len(ended), ended)
        self._write()
        return ended

    def add(self, pid: int) -> None:
        self.engines[pid] = start_time(pid)
        self._write()

    def remove(self, pid: int | None) -> None:
        self.engines.pop(pid, None)
        self._write()

    def _write(self) -> None:
        record = {"bot": self.me, "engines": [{"pid": p, "start": s} for p, s in self.engines.items()]}
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)
