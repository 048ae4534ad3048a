"""An operator's mistakes: each is one sentence and exit 1 from `wspace serve`, before it
connects to Discord, never a traceback or a loop of engine restarts. Config files that are
folders, Latin-1, UTF-16 or nested 100 000 deep; database paths that are /dev/null, a
folder, hold a NUL byte, name a FIFO, a damaged file or a database of a newer release; a
second bot on the same database; model paths that are /etc/passwd, /dev/zero, a folder or
a file the engine cannot load; numbers outside their documented ranges."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import full_app
from tests.test_operator import TOKEN, one_sentence

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def serve(tmp: Path, text: str | bytes, monkeypatch, name: str = "config.toml"):
    monkeypatch.setenv("WSPACE_TOKEN", TOKEN)
    monkeypatch.delenv("WSPACE_CONFIG", raising=False)
    monkeypatch.delenv("WSPACE_DEVICE", raising=False)
    cfg = tmp / name
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    r = runner.invoke(full_app(), ["serve", "--config", str(cfg)])
    assert r.exit_code == 1 and one_sentence(r.output) and "Traceback" not in r.output, r.output
    assert "Could not reach Discord" not in r.output, "refused before connecting"
    return r.output


def db_config(database) -> str:
    import json

    return f"[storage]\ndatabase = {json.dumps(str(database))}\n"  # JSON's escapes are TOML's: a NUL stays a NUL


def test_config_files_that_are_not_utf8_toml_are_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("WSPACE_TOKEN", TOKEN)
    r = runner.invoke(full_app(), ["serve", "--config", str(tmp_path)])
    assert r.exit_code == 1 and "is a folder" in r.output and one_sentence(r.output), r.output
    assert "not UTF-8" in serve(tmp_path, '[logging]\nlevel = "INFO"  # café\n'.encode("latin-1"), monkeypatch)
    assert "UTF-16" in serve(tmp_path, '[logging]\nlevel = "INFO"\n'.encode("utf-16"), monkeypatch)
    assert "too deeply" in serve(tmp_path, "a = " + "[" * 100_000 + "]" * 100_000 + "\n", monkeypatch)
    assert "larger than" in serve(tmp_path, "# " + "x" * 2_000_000 + "\n", monkeypatch)


def test_database_paths_that_cannot_hold_a_database_are_one_sentence(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo.sqlite3"
    os.mkfifo(fifo)
    (tmp_path / "folder.sqlite3").mkdir()
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"SQLite format 3\x00" + os.urandom(8000))
    for database, said in (("/dev/null", "not a regular file"), (tmp_path / "folder.sqlite3", "is a folder"),
                           (fifo, "not a regular file"), (damaged, "cannot open the database"),
                           (str(tmp_path / "a") + "\x00b.sqlite3", "NUL")):
        out = serve(tmp_path, db_config(str(database)), monkeypatch)
        assert said in out, (database, out)


def test_a_database_from_a_newer_release_is_refused_naming_both_versions(tmp_path, monkeypatch):
    from bot.storage import Storage, migrations

    db = tmp_path / "new.sqlite3"

    async def make() -> None:
        store = await Storage.open(db)
        await store.close()

    asyncio.run(make())
    newest = migrations()[-1][0]
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO schema_version VALUES (?, 'from_the_future', 0)", (newest + 1,))
        con.execute("ALTER TABLE latents RENAME COLUMN ws TO ws_renamed")
    out = serve(tmp_path, db_config(str(db)), monkeypatch)
    assert f"schema version {newest + 1}" in out and f"up to version {newest}" in out, out


def test_a_second_bot_on_the_same_database_refuses_to_start(tmp_path, monkeypatch):
    db = tmp_path / "shared.sqlite3"
    first = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                              "from bot.preflight import lock_database; lock_database(Path(sys.argv[1])); "
                              "print('locked', flush=True); time.sleep(60)", str(db)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        out = serve(tmp_path, db_config(str(db)), monkeypatch)
        assert f"another wspace bot (pid {first.pid})" in out, out
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "same.sqlite3").symlink_to(db)  # the same database by another name
        out = serve(tmp_path, db_config(str(tmp_path / "elsewhere" / "same.sqlite3")), monkeypatch)
        assert f"another wspace bot (pid {first.pid})" in out, out
    finally:
        first.kill()
        first.wait()
    from bot.preflight import lock_database, release_locks  # its lock went with it

    lock_database(db)
    release_locks()


def test_model_paths_that_are_no_model_are_refused_at_start(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    for model, said in (("/etc/passwd", "not a file the engine reads"), ("/dev/zero", "not a regular file"),
                        (str(tmp_path / "models"), "is a folder"), (str(tmp_path / "missing.pt"), "cannot read")):
        out = serve(tmp_path, f'[engine]\nmodel = "{model}"\n' + db_config(str(tmp_path / "db.sqlite3")), monkeypatch)
        assert out.startswith("engine.model") and said in out, (model, out)


def test_an_engine_that_cannot_load_its_model_is_not_restarted_in_a_loop(tmp_path):
    """A file with a model's name and garbage inside passes the start checks; the engine dies
    loading it, says why once, and the transport stops there: no restart loop, jobs refused."""
    from bot.transport import EngineUnavailable
    from bot.transport.local import LocalTransport
    from engine.protocol import RandomRequest
    from engine.protocol.spec import EngineSpec

    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(os.urandom(4096))

    async def attempt():
        t = LocalTransport(EngineSpec(model=garbage))
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailable, match="cannot start"):
            await t.start(wait=True, timeout=120)
        took = time.monotonic() - t0
        await asyncio.sleep(3)  # a restart loop would have spawned again by now
        with pytest.raises(EngineUnavailable):
            t.submit(RandomRequest(seed=1))
        stats = t.stats()
        await t.close()
        return took, stats

    took, stats = asyncio.run(attempt())
    assert stats["restarts"] == 0 and "cannot start" in stats["problem"] and took < 60, stats


def test_every_config_number_has_a_documented_range(monkeypatch, tmp_path):
    from bot.config import ConfigError, number_ranges, parse_settings

    ranges = number_ranges()
    assert len(ranges) >= 20
    doc = (REPO / "docs" / "configuration.md").read_text()
    for key, (default, low, high) in ranges.items():
        assert low is not None and high is not None, f"{key} has no {'lower' if low is None else 'upper'} bound"
        assert f"| `{key}` | {default} | {low} – {high} |" in doc, f"docs/configuration.md does not show {key}'s range"
    for section, key, value in (("limits", "max_image_bytes", 2**63 - 1), ("engine", "job_timeout_seconds", 1e-300),
                                ("limits", "member_rate", 1e24)):
        with pytest.raises(ConfigError, match=f"{section}.{key}: Input should be"):
            parse_settings({section: {key: value}})
