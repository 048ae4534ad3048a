"""SQLite storage: migrations once, latents round trip, consent, forget, and survival of a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bot.storage import Storage, StorageError, migrations

G, U, V = 1, 10, 11


async def test_migrations_apply_once_and_record_their_version(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    versions = await s.schema_versions()
    assert versions == [v for v, _, _ in migrations()]
    await s.close()
    s = await Storage.open(tmp_path / "db.sqlite3")
    assert await s._migrate(Path(__file__).resolve().parents[1] / "migrations") == []
    assert await s.schema_versions() == versions
    mode = (await s._rows("PRAGMA journal_mode"))[0][0]
    assert mode == "wal"
    await s.close()


async def test_latents_round_trip_per_model(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    ws = np.random.default_rng(0).standard_normal((10, 256)).astype(np.float32)
    await s.save_latent(G, U, "model-a", ws, "project")
    got = await s.latent(G, U, "model-a")
    assert np.array_equal(got.ws, ws) and got.source == "project"
    assert await s.latent(G, U, "model-b") is None, "a latent of one model is never handed out for another"
    await s.save_latent(G, U, "model-a", ws * 2, "adopt")
    assert np.array_equal((await s.latent(G, U, "model-a")).ws, ws * 2)
    await s.close()


async def test_consent_and_sharing_list(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    ws = np.zeros((10, 8), np.float32)
    await s.save_latent(G, U, "m", ws, "project")
    await s.save_latent(G, V, "m", ws, "project")
    assert not await s.shares(G, U), "sharing is off until the member turns it on"
    assert await s.sharing_members_with_latents(G, "m") == []
    await s.set_share(G, V, True)
    assert await s.sharing_members_with_latents(G, "m") == [V]
    await s.close()


async def test_forget_removes_every_row_and_touches_no_one_else(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    ws = np.zeros((10, 8), np.float32)
    for user in (U, V):
        await s.save_latent(G, user, "m", ws, "project")
        await s.save_pending(G, user, "m", ws)
        await s.job_queued(f"job{user}", G, user, "project")
    await s.forget(G, U)
    assert await s.rows_about(G, U) == 0
    assert await s.rows_about(G, V) == 4
    assert await s.integrity_ok()
    await s.close()


async def test_unfinished_jobs_are_failed_at_start(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    from bot.storage import Reach

    await s.job_queued("a", G, U, "project", Reach(5, "tok-a", 77))
    await s.job_queued("b", G, U, "project")
    await s.job_started("b")
    await s.job_queued("c", G, U, "render", Reach(5, "tok-c", 77))
    await s.job_finished("c")
    cut = await s.fail_unfinished_jobs()
    assert [(j.job_id, j.reach.token, j.reach.channel_id) for j in cut] == [("a", "tok-a", 77), ("b", None, None)]
    assert [await s.job_status(j) for j in "abc"] == ["failed", "failed", "done"]
    tokens = await s._rows("SELECT interaction_token FROM jobs")
    assert tokens == [(None,)] * 3, "no interaction token is kept once its job is over"
    await s.close()


async def test_a_locked_database_is_a_clear_error(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    await s.db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(tmp_path / "db.sqlite3")
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StorageError, match="busy"):
        await s.set_share(G, U, True)
    other.rollback()
    other.close()
    await s.set_share(G, U, True)
    await s.close()



async def fill_to_the_brim(db) -> None:
    """Cap the file at its current size (SQLITE_FULL, exactly what a full disk gives) and
    fill what room is left, so the next write that needs a page fails."""
    await db.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
    await db.commit()
    cur = await db.execute("PRAGMA page_count")
    (pages,) = await cur.fetchone()
    await db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for _ in range(100):
            await db.execute("INSERT INTO filler VALUES (zeroblob(2000))")
            await db.commit()


async def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path):
    s = await Storage.open(tmp_path / "db.sqlite3")
    kept = np.arange(640, dtype=np.float32).reshape(10, 64)
    await s.save_latent(G, U, "m", kept, "project")
    await fill_to_the_brim(s.db)
    with pytest.raises(StorageError, match="disk is full"):
        await s.save_latent(G, V, "m", np.ones((10, 640), np.float32), "project")
    assert np.array_equal((await s.latent(G, U, "m")).ws, kept), "what was stored survives"
    cur = await s.db.execute("PRAGMA integrity_check")
    assert (await cur.fetchone())[0] == "ok"
    await s.db.execute("DELETE FROM filler")  # room again: writes simply work
    await s.db.commit()
    await s.save_latent(G, V, "m", np.ones((10, 64), np.float32), "project")
    await s.close()

WRITER = """
import asyncio, sys, numpy as np
from bot.storage import Storage
async def main():
    s = await Storage.open(sys.argv[1])
    i = 0
    while True:
        await s.save_latent(1, i % 50, "m", np.full((10, 64), i, np.float32), "project")
        await s.job_queued(f"j{i}", 1, i % 50, "project")
        await s.job_started(f"j{i}")
        i += 1
        if i == 20:
            print("writing", flush=True)
asyncio.run(main())
"""


async def test_database_survives_sigkill_in_a_loop_of_writes(tmp_path):
    db = tmp_path / "db.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."})
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = await Storage.open(db)
    assert await s.integrity_ok()
    assert await s._migrate(Path(__file__).resolve().parents[1] / "migrations") == []
    running = await s._rows("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
    assert running[0][0] > 0
    assert len(await s.fail_unfinished_jobs()) == running[0][0]
    assert (await s._rows("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"))[0][0] == 0
    latent = await s.latent(1, 0, "m")
    assert latent is not None and np.all(latent.ws == latent.ws[0, 0]), "no torn latent"
    await s.close()


async def test_a_kept_face_keeps_its_noise_maps_and_old_rows_still_read(tmp_path):
    from engine.latent.kept import pack_noise

    s = await Storage.open(tmp_path / "db.sqlite3")
    ws = np.random.default_rng(1).standard_normal((10, 256)).astype(np.float32)
    noise = pack_noise([np.random.default_rng(2).standard_normal((r, r)) for r in (4, 8, 8)])
    await s.save_latent(G, U, "m", ws, "project", noise)
    got = await s.latent(G, U, "m")
    assert np.array_equal(got.noise, noise) and got.noise.dtype == np.float16
    assert np.array_equal(got.face.ws, ws) and np.array_equal(got.face.noise, got.noise)
    await s.save_latent(G, V, "m", ws, "adopt")  # a /random face: the model's constant maps
    assert (await s.latent(G, V, "m")).noise is None
    await s.save_pending(G, U, "m", ws * 3, noise)
    assert await s.adopt_pending(G, U, "m", 10, 256)
    assert np.array_equal((await s.latent(G, U, "m")).noise, noise), "/adopt keeps what /random drew"
    await s.close()


async def test_rows_written_before_noise_was_kept_survive_the_migration(tmp_path):
    """A database at schema 1 (W+ only) upgrades in place; its faces read with no noise."""
    first = [m for m in migrations() if m[0] == 1]
    old_dir = tmp_path / "old_migrations"
    old_dir.mkdir()
    (old_dir / f"{first[0][1]}.sql").write_text(first[0][2])
    s = await Storage.open(tmp_path / "db.sqlite3", migrations_dir=old_dir)
    ws = np.arange(20, dtype=np.float32).reshape(2, 10)
    await s.db.execute("INSERT INTO members (guild_id, user_id, created_at) VALUES (?, ?, 0)", (G, U))
    await s.db.execute("INSERT INTO latents VALUES (?, ?, 'm', 2, 10, ?, 'project', 0)", (G, U, ws.tobytes()))
    await s.close()
    s = await Storage.open(tmp_path / "db.sqlite3")
    assert await s.schema_versions() == [v for v, _, _ in migrations()]
    got = await s.latent(G, U, "m")
    assert np.array_equal(got.ws, ws) and got.noise is None
    await s.close()


async def test_faces_kept_by_the_old_projector_are_marked_and_unchanged(tmp_path):
    """A database at schema 5 upgrades in place: its faces (and unclaimed team faces) read exactly
    as they were, marked as the older projector's until the member keeps a new one; being told
    once is recorded, and a new face starts untold."""
    from engine.protocol import PROJECTOR, as_face

    old_dir = tmp_path / "old_migrations"
    old_dir.mkdir()
    for version, name, sql in migrations():
        if version <= 5:
            (old_dir / f"{name}.sql").write_text(sql)
    s = await Storage.open(tmp_path / "db.sqlite3", migrations_dir=old_dir)
    ws = np.random.default_rng(3).standard_normal((10, 256)).astype(np.float32)
    noise = np.random.default_rng(4).standard_normal(96).astype(np.float16)
    await s.db.execute("INSERT INTO members (guild_id, user_id, created_at) VALUES (?, ?, 0)", (G, U))
    await s.db.execute("INSERT INTO latents (guild_id, user_id, model_id, num_ws, w_dim, ws, source, created_at, noise)"
                       " VALUES (?, ?, 'm', 10, 256, ?, 'project', 0, ?)", (G, U, ws.tobytes(), noise.tobytes()))
    await s.db.execute("INSERT INTO team_faces VALUES ('t', 1, ?, 5, ?, 'm', 10, 256, ?, NULL, ?, ?)",
                       (G, U, ws.tobytes(), time.time(), time.time() + 3600))
    await s.close()
    s = await Storage.open(tmp_path / "db.sqlite3")
    got = await s.latent(G, U, "m")
    assert np.array_equal(got.ws, ws) and np.array_equal(got.noise, noise), "nothing kept changes silently"
    assert got.outdated and not got.refresh_told
    await s.refresh_was_told(G, U, "m")
    got = await s.latent(G, U, "m")
    assert got.outdated and got.refresh_told and np.array_equal(got.ws, ws)
    assert await s.claim_team_face(G, 5, V, 1, "m") == "claimed"
    assert (await s.latent(G, V, "m")).outdated, "a team face projected before the upgrade stays marked"
    await s.save_team("t2", G, 5, U, "m", [as_face(ws)], 3600)
    assert await s.claim_team_face(G, 5, V, 1, "m") == "claimed"
    assert not (await s.latent(G, V, "m")).outdated
    await s.save_latent(G, U, "m", ws, "project", noise)
    got = await s.latent(G, U, "m")
    assert got.projector == PROJECTOR and not got.outdated and not got.refresh_told
    await s.close()


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(tmp_path):
    """Three processes race to open the same new file, ten times over: none fails, and
    every migration is recorded once."""
    code = ("import asyncio, sys, time\nfrom bot.storage import Storage\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all three start together\n"
            "async def main():\n    s = await Storage.open(sys.argv[1]); await s.close()\nasyncio.run(main())\n")
    for round_ in range(10):
        db = tmp_path / f"race{round_}.sqlite3"
        start = str(time.time() + 1.0)
        command = [sys.executable, "-c", code, str(db), start]
        procs = [subprocess.Popen(command, stderr=subprocess.PIPE) for _ in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()[-800:]
        rows = sqlite3.connect(db).execute("SELECT version, COUNT(*) FROM schema_version GROUP BY version").fetchall()
        assert [v for v, _ in rows] == [v for v, _, _ in migrations()] and all(c == 1 for _, c in rows)


async def test_odd_values_are_the_storage_error_not_a_raw_exception(tmp_path):
    storage = await Storage.open(tmp_path / "db.sqlite3")
    try:
        for guild, user in ((2**70, 1), ("x", [1]), (1, object())):
            with pytest.raises(StorageError):
                await storage.set_share(guild, user, True)
        await storage.set_share(1, 2, True)
        assert await storage.shares(1, 2), "the database still works"
    finally:
        await storage.close()
