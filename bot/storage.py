"""Every SQL statement of the bot. SQLite through aiosqlite, WAL mode, migrations from
``migrations/NNN_name.sql`` (shipped in the package as ``bot.migrations``, read with
``importlib.resources``) applied in order at start and recorded in ``schema_version``.

A member's face is a kept face (``engine/latent/kept.py``): float32 W+ and, when the projector
made it, its float16 noise maps, stored with the id of the model that made them; a face
of one model is never handed out for another.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import numpy as np

from engine.protocol import PROJECTOR, Face, as_face
from engine.protocol.events import NOISE_DTYPE

MAX_NOISE_BYTES = 64 * 2**20  # a 1024-px model's maps are ~5.6 MB; anything far larger is not a face

MIGRATIONS_DIR = importlib.resources.files("bot.migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class StorageError(RuntimeError):
    """The database cannot do what was asked (locked, full, damaged)."""


class NewerSchema(StorageError):
    """The database was migrated by a newer release than this code."""


@dataclass
class StoredLatent:
    ws: np.ndarray
    model_id: str
    source: str
    created_at: float
    noise: np.ndarray | None = None  # packed float16 noise maps; None: the model's constant maps
    projector: int | None = PROJECTOR  # which projector kept it (None: before versions were kept)
    refresh_told: bool = False  # its member was told once that a fresh /project does better

    @property
    def outdated(self) -> bool:
        """Kept by an older projector, whose W+ melts in blends and edits."""
        return (self.projector or 1) < PROJECTOR

    @property
    def face(self) -> Face:
        return as_face(self.ws, self.noise)


@dataclass
class Reach:
    """Where a job's member can be told something later: the interaction (application id
    and token, valid for 15 minutes) and, after that, the channel."""

    application_id: int | None
    token: str | None
    channel_id: int | None


@dataclass
class Interrupted:
    job_id: str
    user_id: int
    kind: str
    created_at: float
    reach: Reach


def _noise_blob(noise: np.ndarray | None) -> bytes | None:
    if noise is None:
        return None
    blob = np.ascontiguousarray(noise, dtype=NOISE_DTYPE).reshape(-1).tobytes()
    if len(blob) > MAX_NOISE_BYTES:
        raise StorageError("those noise maps are too large to be a face")
    return blob


def _noise_of(blob: bytes | None) -> np.ndarray | None:
    if blob is None or len(blob) % NOISE_DTYPE.itemsize or len(blob) > MAX_NOISE_BYTES:
        return None  # a damaged column draws with the constant maps rather than failing
    return np.frombuffer(blob, dtype=NOISE_DTYPE).copy()


def migrations(directory=MIGRATIONS_DIR) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every ``*.sql`` in ``directory`` (a Path or a package's
    Traversable), in order."""
    found = []
    for path in sorted((p for p in directory.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise StorageError(f"migration file {path.name} does not follow NNN_name.sql")
        found.append((int(m.group(1)), path.name[:-4], path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise StorageError("two migrations share a version number")
    return found


class Storage:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db, self.path = db, path

    @classmethod
    async def open(cls, path: str | Path, migrations_dir=MIGRATIONS_DIR) -> "Storage":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, timeout=10.0, isolation_level=None)
        try:
            await _switch_to_wal(db)
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db, path)
            await store._migrate(migrations_dir)
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StorageError(f"cannot open the database {path.name}: {exc}") from None
        except StorageError:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        await self.db.close()

    async def _migrate(self, directory) -> list[int]:
        """Apply what is missing, each migration under a write lock with the version
        rechecked inside it: several processes opening a fresh database at once apply each
        migration exactly once."""
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                              "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
        known = migrations(directory)
        async with self.db.execute("SELECT MAX(version) FROM schema_version") as cur:
            newest = (await cur.fetchone())[0]
        if newest is not None and known and newest > known[-1][0]:
            raise NewerSchema(f"the database {self.path.name} has schema version {newest}, written by a newer wspace; "
                              f"this one knows up to version {known[-1][0]}, so upgrade wspace "
                              "(or use another database)")
        applied = []
        for version, name, sql in known:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                async with self.db.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,)) as cur:
                    done = await cur.fetchone() is not None
                if not done:
                    for statement in _statements(sql):
                        await self.db.execute(statement)
                    await self.db.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (version, name, time.time()))
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            if not done:
                applied.append(version)
        return applied

    async def schema_versions(self) -> list[int]:
        async with self.db.execute("SELECT version FROM schema_version ORDER BY version") as cur:
            return [r[0] for r in await cur.fetchall()]

    async def _write(self, sql: str, params: tuple = ()) -> int:
        try:
            cur = await self.db.execute(sql, params)
            return cur.rowcount
        except _ODD_VALUES as exc:
            raise StorageError(_explain(exc)) from exc

    async def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            async with self.db.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except _ODD_VALUES as exc:
            raise StorageError(_explain(exc)) from exc

    # --- members and consent ------------------------------------------------------------

    async def ensure_member(self, guild_id: int, user_id: int) -> None:
        await self._write(
            "INSERT OR IGNORE INTO members (guild_id, user_id, created_at) VALUES (?, ?, ?)",
            (guild_id, user_id, time.time()),
        )

    async def set_share(self, guild_id: int, user_id: int, share: bool) -> None:
        await self.ensure_member(guild_id, user_id)
        await self._write(
            "UPDATE members SET share = ? WHERE guild_id = ? AND user_id = ?", (int(share), guild_id, user_id)
        )

    async def shares(self, guild_id: int, user_id: int) -> bool:
        rows = await self._rows("SELECT share FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        return bool(rows and rows[0][0])

    # --- latents ------------------------------------------------------------------------

    async def save_latent(
        self, guild_id: int, user_id: int, model_id: str, ws: np.ndarray, source: str, noise: np.ndarray | None = None,
        projector: int | None = PROJECTOR,
    ) -> None:
        ws = np.ascontiguousarray(ws, dtype="<f4")
        await self.ensure_member(guild_id, user_id)
        await self._write(
            "INSERT INTO latents (guild_id, user_id, model_id, num_ws, w_dim, ws, source, created_at, noise, projector)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, user_id, model_id) DO UPDATE SET "
            "num_ws = excluded.num_ws, w_dim = excluded.w_dim, ws = excluded.ws, source = excluded.source, "
            "created_at = excluded.created_at, noise = excluded.noise, projector = excluded.projector, "
            "refresh_told = 0",
            (
                guild_id,
                user_id,
                model_id,
                ws.shape[0],
                ws.shape[1],
                ws.tobytes(),
                source,
                time.time(),
                _noise_blob(noise),
                projector,
            ),
        )

    async def latent(self, guild_id: int, user_id: int, model_id: str) -> StoredLatent | None:
        rows = await self._rows(
            "SELECT num_ws, w_dim, ws, source, created_at, noise, projector, refresh_told FROM latents "
            "WHERE guild_id = ? AND user_id = ? AND model_id = ?",
            (guild_id, user_id, model_id),
        )
        if not rows:
            return None
        num_ws, w_dim, blob, source, created, noise, projector, told = rows[0]
        ws = np.frombuffer(blob, dtype="<f4").reshape(num_ws, w_dim).copy()
        return StoredLatent(ws, model_id, source, created, _noise_of(noise), projector, bool(told))

    async def refresh_was_told(self, guild_id: int, user_id: int, model_id: str) -> None:
        """The member has read, once, that a fresh /project gives their old face better blends and edits."""
        await self._write(
            "UPDATE latents SET refresh_told = 1 WHERE guild_id = ? AND user_id = ? AND model_id = ?",
            (guild_id, user_id, model_id),
        )

    async def faces_of_members(self, guild_id: int, model_id: str, user_ids: list[int]) -> dict[int, Face]:
        """The kept faces of several members (those who have one)."""
        out = {}
        for user_id in user_ids:
            stored = await self.latent(guild_id, user_id, model_id)
            if stored is not None:
                out[user_id] = stored.face
        return out

    # --- team faces (/team, /claim) -----------------------------------------------------

    async def save_team(
        self,
        team_id: str,
        guild_id: int,
        channel_id: int,
        owner_id: int,
        model_id: str,
        faces: list[Face],
        lifetime: float,
    ) -> None:
        now = time.time()
        for number, face in enumerate(faces, 1):
            ws = np.ascontiguousarray(face.ws, dtype="<f4")
            await self._write(
                "INSERT INTO team_faces (team_id, number, guild_id, channel_id, owner_id, model_id, num_ws, w_dim, ws, "
                "noise, created_at, expires_at, projector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    team_id,
                    number,
                    guild_id,
                    channel_id,
                    owner_id,
                    model_id,
                    ws.shape[0],
                    ws.shape[1],
                    ws.tobytes(),
                    _noise_blob(face.noise),
                    now,
                    now + lifetime,
                    PROJECTOR,
                ),
            )

    async def claim_team_face(self, guild_id: int, channel_id: int, user_id: int, number: int, model_id: str) -> str:
        """Make face ``number`` of this channel's latest team the member's own ("claimed"); else
        "no_team", "no_face" (no such number, or already claimed), "taken" (another member
        claimed it in the same moment) or "other_model"."""
        now = time.time()
        teams = await self._rows(
            "SELECT team_id FROM team_faces WHERE guild_id = ? AND channel_id = ? AND expires_at > ? "
            "ORDER BY created_at DESC LIMIT 1",
            (guild_id, channel_id, now),
        )
        if not teams:
            return "no_team"
        rows = await self._rows(
            "SELECT model_id, num_ws, w_dim, ws, noise FROM team_faces WHERE team_id = ? AND number = ?",
            (teams[0][0], number),
        )
        if not rows:
            return "no_face"
        if rows[0][0] != model_id:
            return "other_model"
        # One statement takes the face: of two members claiming it at once, one gets the row, the
        # other nothing ("taken"). Only then is it saved as the winner's.
        taken = await self._rows(
            "DELETE FROM team_faces WHERE team_id = ? AND number = ? AND model_id = ? "
            "RETURNING num_ws, w_dim, ws, noise, projector",
            (teams[0][0], number, model_id),
        )
        if not taken:
            return "taken"
        num_ws, w_dim, blob, noise, projector = taken[0]
        ws = np.frombuffer(blob, dtype="<f4").reshape(num_ws, w_dim)
        await self.save_latent(guild_id, user_id, model_id, ws, "team", _noise_of(noise), projector)
        return "claimed"

    async def purge_team_faces(self, now: float | None = None) -> int:
        """Delete unclaimed team faces past their expiry; returns how many went."""
        return await self._write("DELETE FROM team_faces WHERE expires_at <= ?", (time.time() if now is None else now,))

    async def sharing_members_with_latents(self, guild_id: int, model_id: str) -> list[int]:
        rows = await self._rows(
            "SELECT l.user_id FROM latents l JOIN members m USING (guild_id, user_id) "
            "WHERE l.guild_id = ? AND l.model_id = ? AND m.share = 1 ORDER BY l.created_at",
            (guild_id, model_id),
        )
        return [r[0] for r in rows]

    async def save_pending(
        self, guild_id: int, user_id: int, model_id: str, ws: np.ndarray, noise: np.ndarray | None = None
    ) -> None:
        await self.ensure_member(guild_id, user_id)
        await self._write(
            "INSERT OR REPLACE INTO pending_latents (guild_id, user_id, model_id, ws, created_at, noise) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                guild_id,
                user_id,
                model_id,
                np.ascontiguousarray(ws, dtype="<f4").tobytes(),
                time.time(),
                _noise_blob(noise),
            ),
        )

    async def adopt_pending(self, guild_id: int, user_id: int, model_id: str, num_ws: int, w_dim: int) -> bool:
        rows = await self._rows(
            "SELECT ws, noise FROM pending_latents WHERE guild_id = ? AND user_id = ? AND model_id = ?",
            (guild_id, user_id, model_id),
        )
        if not rows:
            return False
        ws = np.frombuffer(rows[0][0], dtype="<f4").reshape(num_ws, w_dim)
        await self.save_latent(guild_id, user_id, model_id, ws, "adopt", _noise_of(rows[0][1]))
        await self._write("DELETE FROM pending_latents WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        return True

    async def forget(self, guild_id: int, user_id: int) -> int:
        """Delete every row about a member in this server; returns how many went."""
        total = 0
        await self._write("BEGIN IMMEDIATE")
        try:
            for table in ("latents", "pending_latents", "jobs", "members"):
                total += await self._write(
                    f"DELETE FROM {table} WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
                )
            total += await self._write(
                "DELETE FROM team_faces WHERE guild_id = ? AND owner_id = ?", (guild_id, user_id)
            )
            await self._write("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
        return total

    async def rows_about(self, guild_id: int, user_id: int) -> int:
        total = 0
        for table in ("latents", "pending_latents", "jobs", "members"):
            rows = await self._rows(
                f"SELECT COUNT(*) FROM {table} WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            total += rows[0][0]
        rows = await self._rows(
            "SELECT COUNT(*) FROM team_faces WHERE guild_id = ? AND owner_id = ?", (guild_id, user_id)
        )
        return total + rows[0][0]

    # --- jobs -----------------------------------------------------------------------------

    async def job_queued(
        self, job_id: str, guild_id: int, user_id: int, kind: str, reach: "Reach | None" = None
    ) -> None:
        reach = reach or Reach(None, None, None)
        await self._write(
            "INSERT INTO jobs (id, guild_id, user_id, kind, status, created_at, application_id, "
            "interaction_token, channel_id) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            (job_id, guild_id, user_id, kind, time.time(), reach.application_id, reach.token, reach.channel_id),
        )

    async def job_started(self, job_id: str) -> None:
        await self._write("UPDATE jobs SET status = 'running', started_at = ? WHERE id = ?", (time.time(), job_id))

    async def job_finished(self, job_id: str, error: str | None = None) -> None:
        """The job is over; the member's interaction token is no longer kept."""
        await self._write(
            "UPDATE jobs SET status = ?, finished_at = ?, error = ?, interaction_token = NULL WHERE id = ?",
            ("failed" if error else "done", time.time(), error, job_id),
        )

    async def fail_unfinished_jobs(self, reason: str = "the bot restarted") -> list["Interrupted"]:
        """At start-up: no job stays queued or running forever. Returns how to reach each
        member whose job was cut off (the tokens are forgotten here; the caller uses them now)."""
        rows = await self._rows(
            "SELECT id, user_id, kind, created_at, application_id, interaction_token, channel_id "
            "FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at"
        )
        await self._write(
            "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, interaction_token = NULL "
            "WHERE status IN ('queued', 'running')",
            (time.time(), reason),
        )
        return [Interrupted(r[0], r[1], r[2], r[3], Reach(r[4], r[5], r[6])) for r in rows]

    async def job_status(self, job_id: str) -> str | None:
        rows = await self._rows("SELECT status FROM jobs WHERE id = ?", (job_id,))
        return rows[0][0] if rows else None

    # --- figures ----------------------------------------------------------------------------

    async def stats(self, guild_id: int | None = None) -> dict:
        where, params = ("WHERE guild_id = ?", (guild_id,)) if guild_id is not None else ("", ())
        out = {}
        for table in ("members", "latents"):
            out[table] = (await self._rows(f"SELECT COUNT(*) FROM {table} {where}", params))[0][0]
        # A job its member stopped is a failed row with the error "cancelled"; admins see it apart.
        rows = await self._rows(
            "SELECT CASE WHEN error = 'cancelled' THEN 'stopped' ELSE status END AS shown, COUNT(*), "
            f"AVG(finished_at - started_at) FROM jobs {where} GROUP BY shown",
            params,
        )
        out["jobs"] = {status: count for status, count, _ in rows}
        done = [avg for status, _, avg in rows if status == "done" and avg is not None]
        out["mean_job_seconds"] = round(done[0], 2) if done else None
        # The write-ahead log holds recent writes until a checkpoint: count it (and its index) too.
        out["database_bytes"] = sum(
            p.stat().st_size
            for p in (
                self.path,
                self.path.with_name(self.path.name + "-wal"),
                self.path.with_name(self.path.name + "-shm"),
            )
            if p.exists()
        )
        return out

    async def integrity_ok(self) -> bool:
        rows = await self._rows("PRAGMA integrity_check")
        return rows == [("ok",)]


async def _switch_to_wal(db: aiosqlite.Connection, patience: float = 10.0) -> None:
    """``journal_mode=WAL``, retried: on a brand-new file several processes switching at
    once get SQLITE_BUSY at once, without SQLite's busy handler being asked."""
    deadline = time.monotonic() + patience
    while True:
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement knows about quotes)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") for ln in buf.strip().splitlines()):
        raise StorageError("a migration ends with an incomplete statement")
    return out


# What SQLite and its driver raise for a locked or full database and for values it cannot
# bind (an id past 2**63, a list): each becomes the storage error type, one sentence.
_ODD_VALUES = (sqlite3.Error, OverflowError, ValueError, TypeError)


def _explain(exc: Exception) -> str:
    if not isinstance(exc, sqlite3.Error):
        return f"a value could not be stored ({type(exc).__name__})"
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return "the database is busy (locked by another process); try again in a moment"
    if "disk" in msg and ("full" in msg or "i/o" in msg):
        return "the database disk is full"
    return f"database error: {exc}"
