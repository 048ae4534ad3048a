"""How many CPU threads this engine should compute with: its share of the host's cores.

An engine that keeps torch's default (one thread per core) beside another busy engine makes
both slow: each OpenMP team spin-waits for threads the other process is running, and two
60-step projections at once took 32.6 s where one after the other took 18.4 s
(docs/benchmarks.md, "Engines per host"). Sizing teams so they fit the cores together fixes
that, and passive waiting is no substitute: it made a lone projection 1.5× slower here.

So each engine process that did not get a fixed thread count (``engine.threads``,
``wspace --threads``, ``wspace worker --threads``) takes ``cores // busy`` threads, where

* ``cores`` is what the process may use: its CPU affinity (taskset, cpusets) capped by its
  cgroup's CPU quota (``docker run --cpus``, Kubernetes limits), rounded up;
* ``busy`` is how many engines on this host are computing right now, itself included. Each
  engine holds an exclusive ``flock`` on its own file in a per-user folder while it works
  (the kernel drops it when the process dies, however it dies), and counts the locks held.

An idle engine costs its peers nothing; a lone member's projection gets every core; a second
engine that starts working gets its share within :data:`REFIT_SECONDS`, as do the others.
The folder is ``$WSPACE_ENGINES_DIR``, else ``/dev/shm/wspace-engines-<uid>`` (or the temp
folder's): engines in separate containers see each other only if they share it (mount one
folder into each), and otherwise split the cores by their cgroup quotas.

The folder is refused (sharing off, the engine keeps its cores) when it is not a directory
this user owns with no access for others; at most :data:`MAX_PEERS` files are read a check.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import stat
import tempfile
import time
from pathlib import Path

log = logging.getLogger("wspace.engine")

REFIT_SECONDS = 0.5  # how stale a thread count may get: a step of one 64-px projection is ~0.05-0.15 s
MAX_PEERS = 64  # slot files looked at per check (a host with more engines than this is not a 2-core box)
DIR_ENV = "WSPACE_ENGINES_DIR"


def affinity_cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _cgroup_v2_dirs(root: Path) -> list[Path]:
    """This process's cgroup (v2) folder and its ancestors, innermost first."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return [root]
    for line in lines:
        if line.startswith("0::"):
            rel = line[3:].strip().lstrip("/")
            parts = [p for p in rel.split("/") if p and p != ".."]
            return [root.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]
    return [root]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()[:256]
    except (OSError, UnicodeDecodeError):
        return None


def quota_cores(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (the tightest along its path), or None."""
    best = None
    for folder in _cgroup_v2_dirs(root):
        text = _read(folder / "cpu.max")
        if text is None:
            continue
        fields = text.split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = int(fields[0]), int(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                best = min(best or math.inf, quota / period)
    if best is None:  # cgroup v1
        quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
        try:
            if quota and period and int(quota) > 0 and int(period) > 0:
                best = int(quota) / int(period)
        except ValueError:
            pass
    return best


def available_cores() -> int:
    """Cores this process may use: its affinity, capped by its cgroup quota (rounded up)."""
    cores = affinity_cores()
    quota = quota_cores()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def engines_dir() -> Path:
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else Path(
        tempfile.gettempdir())
    return base / f"wspace-engines-{os.getuid()}"


def private_dir(folder: Path) -> bool:
    """Make ``folder`` if needed; whether it is a real directory of ours that nobody else can touch."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


class HostShare:
    """This process's place among the host's engines (see the module text).

    ``fixed``: a thread count the operator chose; it is kept, and the process still counts
    as busy for the others while it works."""

    def __init__(self, fixed: int | None = None, folder: Path | None = None, cores: int | None = None) -> None:
        self.fixed, self.cores = fixed, cores or available_cores()
        self.folder = folder or engines_dir()
        self.threads = fixed or self.cores
        self.busy = False
        self._fd: int | None = None
        self._checked = -math.inf
        if private_dir(self.folder):
            try:
                self._fd = os.open(self.folder / str(os.getpid()), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                log.info("engine thread sharing off (%s): this engine keeps %d threads", exc, self.threads)
        else:
            log.info("engine thread sharing off (%s is not a private folder of this user)", self.folder)

    def busy_peers(self) -> int:
        """Other engines computing right now (their slot is locked)."""
        count = 0
        try:
            names = [e.name for e in os.scandir(self.folder) if e.name.isdigit()][:MAX_PEERS]
        except OSError:
            return 0
        for name in names:
            if name == str(os.getpid()):
                continue
            try:
                fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                count += exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                if not _alive(int(name)):  # a slot left by a process that is gone
                    _unlink(self.folder / name)
            finally:
                os.close(fd)
        return count

    def share(self) -> int:
        """The threads this engine should use now."""
        return self.fixed or max(1, self.cores // (1 + self.busy_peers()))

    def working(self, now: float | None = None) -> int:
        """Call before each piece of work (a step, a drawing): marks this engine busy and, at
        most every :data:`REFIT_SECONDS`, resizes torch's thread team to its share."""
        if self._fd is None:
            return self.threads
        if not self.busy:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # our own file: never contended
            self.busy = True
        now = time.monotonic() if now is None else now
        if now - self._checked >= REFIT_SECONDS:
            self._checked = now
            threads = self.share()
            if threads != self.threads:
                import torch

                torch.set_num_threads(threads)
                self.threads = threads
        return self.threads

    def idle(self) -> None:
        """Call when the engine is about to wait for work: its peers may take its cores."""
        if self._fd is not None and self.busy:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.busy = False
            self._checked = -math.inf  # the next piece of work sizes itself afresh

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            _unlink(self.folder / str(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# The process's share, made by runtime.prepare_process (None where no engine process was
# prepared, e.g. a test that builds an Engine directly: then nothing is resized).
SHARE: HostShare | None = None


def working() -> None:
    if SHARE is not None:
        SHARE.working()


def idle() -> None:
    if SHARE is not None:
        SHARE.idle()
