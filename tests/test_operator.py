"""The operator's path: the invite link, the Docker entry point's first config (hostile
environment values), a /data that cannot be written, an empty config, shipped directions
left untouched, and the command line's edges (-o a file, no empty folders, --threads)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import full_app
from bot.invite import permissions

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
APP_ID = 123456789012345678
TOKEN = base64.b64encode(str(APP_ID).encode()).decode().rstrip("=") + ".GabcdE.not-a-real-secret-xyz"


def one_sentence(text: str) -> bool:
    return "Traceback" not in text and len(text.strip().splitlines()) <= 6 and text.strip() != ""


def test_invite_prints_the_link_for_the_tokens_application_with_the_bots_permissions(monkeypatch):
    monkeypatch.setenv("WSPACE_TOKEN", TOKEN)
    r = runner.invoke(full_app(), ["invite"])
    assert r.exit_code == 0, r.output
    url = r.stdout.strip().splitlines()[0]
    assert f"client_id={APP_ID}" in url and "scope=bot+applications.commands" in url
    assert f"permissions={permissions().value}" in url
    assert "not-a-real-secret" not in r.output, "the token is never printed"
    r = runner.invoke(full_app(), ["invite", "--application-id", "42"])
    assert r.exit_code == 0 and "client_id=42" in r.stdout
    monkeypatch.setenv("WSPACE_TOKEN", "not-a-token")  # set, but no application id in it: not "set the bot token"
    r = runner.invoke(full_app(), ["invite"])
    assert r.exit_code == 1 and "token that is set" in r.output and one_sentence(r.output)
    monkeypatch.delenv("WSPACE_TOKEN")
    r = runner.invoke(full_app(), ["invite"])
    assert r.exit_code == 1 and "--application-id" in r.output and one_sentence(r.output)


def entrypoint(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """The image's entry point, with `wspace` the project's CLI (its `serve` only says it ran)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "wspace"
    shim.write_text(f'#!/bin/sh\nif [ "$1" = serve ]; then echo SERVED; exit 0; fi\n'
                    f'exec "{sys.executable}" -c "from bot.cli import main; main()" "$@"\n')
    shim.chmod(0o755)
    full = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
            "WSPACE_EXAMPLE_CONFIG": str(REPO / "config.example.toml"), **env}
    return subprocess.run(
        ["sh", str(REPO / "scripts/docker-entrypoint.sh"), *(args or ("serve",))],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://:pa|ss@redis:6379/0",
        "redis://:a&b\\1@redis:6379/0",
        'redis://:"quoted"#x@redis:6379/0',
        "redis://:$(touch PWNED)`touch PWNED`@redis:6379/0",
        "redis://:new\nline = 1@redis:6379/0",
    ],
)
def test_the_entry_points_first_config_keeps_any_redis_url_exactly(tmp_path, url):
    config = tmp_path / "data" / "config.toml"
    done = entrypoint(
        tmp_path,
        {
            "WSPACE_CONFIG": str(config),
            "WSPACE_REDIS_URL": url,
            "WSPACE_DEVICE": "cuda",
            "WSPACE_METRICS_ADDRESS": "0.0.0.0:9108",
        },
    )
    assert done.returncode == 0 and "SERVED" in done.stdout, done.stderr
    assert tomllib.loads(config.read_text())["metrics"]["address"] == "0.0.0.0:9108"
    engine = tomllib.loads(config.read_text())["engine"]
    assert engine["redis_url"] == url and engine["transport"] == "redis" and engine["device"] == "cuda"
    assert not (tmp_path / "PWNED").exists() and not list(tmp_path.rglob("PWNED"))
    assert "# " in config.read_text(), "the example's comments are kept"
    again = entrypoint(tmp_path, {"WSPACE_CONFIG": str(config), "WSPACE_REDIS_URL": "redis://other"})
    assert again.returncode == 0 and tomllib.loads(config.read_text())["engine"]["redis_url"] == url, (
        "never overwritten"
    )


def test_a_data_folder_that_cannot_be_written_is_one_sentence(tmp_path, monkeypatch):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    done = entrypoint(tmp_path, {"WSPACE_CONFIG": str(blocker / "config.toml")})
    assert done.returncode == 1 and "SERVED" not in done.stdout
    assert "cannot write" in done.stderr.lower() and one_sentence(done.stderr), done.stderr
    # A folder the container's user may not write (tests run as root, so the check is asked directly).
    from bot.config import ConfigError, check_writable

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ConfigError, match="not writable by user .* chown"):
        check_writable(tmp_path)


def test_an_empty_config_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WSPACE_TOKEN", TOKEN)
    empty = tmp_path / "config.toml"
    empty.write_text("\n# nothing here\n")
    r = runner.invoke(full_app(), ["serve", "--config", str(empty)])
    assert r.exit_code == 1 and "is empty" in r.output and one_sentence(r.output)


def test_directions_layers_never_changes_the_shipped_file(tmp_path):
    from engine.latent.directions import load_directions
    from engine.model.checkpoints import DEFAULT_MODEL

    shipped = DEFAULT_MODEL.with_name(DEFAULT_MODEL.stem + ".directions.npz")
    before = hashlib.sha256(shipped.read_bytes()).hexdigest()
    r = runner.invoke(full_app(), ["directions", "layers", "smile", "2-5"])
    assert r.exit_code == 1 and "-o FILE" in r.output and one_sentence(r.output)
    mine = tmp_path / "mine.directions.npz"
    r = runner.invoke(full_app(), ["directions", "layers", "smile", "2-5", "-o", str(mine)])
    assert r.exit_code == 0, r.output
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == before, "the package is untouched"
    from engine.model.checkpoints import load_generator

    assert load_directions(mine, load_generator(None).model_id)["smile"].layers == "2-5"


def test_out_naming_a_file_is_one_sentence_and_a_failed_command_leaves_no_folder(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    r = runner.invoke(full_app(), ["generate", "--count", "1", "-o", str(a_file)])
    squash = lambda text: "".join(c for c in text if not c.isspace() and c != "│")  # noqa: E731 (rich wraps it in a box)
    assert r.exit_code == 2 and squash(f"{a_file} is a file; name a folder") in squash(r.output)
    assert "Traceback" not in r.output
    out = tmp_path / "never"
    r = runner.invoke(full_app(), ["render", str(tmp_path / "missing.npz"), "-o", str(out)])
    assert r.exit_code == 1 and not out.exists(), "a failed command leaves no empty folder"
    r = runner.invoke(full_app(), ["--threads", "1", "generate", "--count", "1", "-o", str(tmp_path / "ok")])
    assert r.exit_code == 0 and (tmp_path / "ok" / "seed0001.png").is_file(), r.output
