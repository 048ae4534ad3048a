"""What ``wspace serve`` checks before it connects to Discord, so an operator's mistake is one
sentence and exit 1, never a traceback or a restart loop.

- the database path: none yet, or a regular file (not a folder, a device such as
  ``/dev/null``, or a FIFO) in a folder that exists or can be made; it opens as SQLite, and
  its schema is not newer than this code's (both versions named);
- one bot per database: an exclusive lock on ``<database>.lock`` held for the life of the
  process (released by the kernel however the process ends), naming the holder's pid;
- the model, directions (when there) and encoder paths of the local engine: regular files of a format
  the engine reads and no larger than it accepts (their content is the engine's to judge;
  an engine that cannot start is not restarted in a loop: ``bot/transport/local.py``).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import stat
from pathlib import Path

from bot.config import ConfigError, Settings

MODEL_SUFFIXES = (".safetensors", ".pt", ".pkl")
MAX_MODEL_BYTES = 2 * 2**30  # engine/model/checkpoints.py reads no more
_held: list = []  # the database locks of this process (kept open: closing one releases it)


def check_database_path(path: Path) -> None:
    """One sentence when ``path`` cannot be a SQLite database file."""
    try:
        regular_file("storage.database", path, f"e.g. {path / 'wspace.sqlite3'}")
    except FileNotFoundError:
        parent = path.parent
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"storage.database: {parent} is not a folder") from None


def regular_file(key: str, path: Path, inside: str = "") -> os.stat_result:
    """``path``'s status when it is a regular file; one sentence when it is a folder, a device,
    a pipe or unreadable (FileNotFoundError passes through)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{key}: {path} is a folder; name a file inside it{', ' + inside if inside else ''}")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file (a device or a pipe); name a file")
    return st


def lock_database(path: Path) -> None:
    """Hold ``<database>.lock`` for the life of this process; one sentence when another bot holds it.
    The lock sits next to the file the path resolves to, so two configs naming one database
    through a symlink (or ``..``) meet at the same lock."""
    path = Path(os.path.realpath(path))
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"storage.database: cannot create {lock_path} ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"another wspace bot (pid {holder}) is running on {path}; stop it first, or give this one "
            "its own storage.database"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held.append(fd)


def release_locks() -> None:
    while _held:
        os.close(_held.pop())


def check_database(path: Path) -> None:
    """Open (creating or migrating) the database once: a damaged file or a newer schema is one sentence."""
    from bot.storage import Storage, StorageError

    async def open_and_close() -> None:
        store = await Storage.open(path)
        await store.close()

    try:
        asyncio.run(open_and_close())
    except StorageError as exc:
        raise ConfigError(f"storage.database: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"storage.database: cannot open {path} ({exc.strerror or exc})") from None


def check_engine_file(key: str, path: Path | None, suffixes: tuple[str, ...], optional: bool = False) -> None:
    if path is None or optional and not path.exists():
        return
    try:
        st = regular_file(key, path)
    except FileNotFoundError:
        raise ConfigError(f"{key}: cannot read {path} (No such file or directory)") from None
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{key}: {path.name} is not a file the engine reads ({', '.join(suffixes)})")
    if st.st_size > MAX_MODEL_BYTES:
        raise ConfigError(
            f"{key}: {path.name} is {st.st_size / 2**30:.1f} GiB; the engine reads at most "
            f"{MAX_MODEL_BYTES // 2**30} GiB"
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key}: {path} is not readable by user {os.getuid()}")


def preflight(settings: Settings) -> None:
    """Every check above, in order; raises :class:`ConfigError` with one sentence."""
    database = settings.storage.database
    check_database_path(database)
    lock_database(database)
    check_database(database)
    engine = settings.engine
    if engine.transport == "local":
        check_engine_file("engine.model", engine.model, MODEL_SUFFIXES)
        check_engine_file("engine.directions", engine.directions, (".npz",), optional=True)  # none there: no directions
        check_engine_file("engine.encoder", engine.encoder, (".safetensors",))
