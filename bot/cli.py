"""The bot's command line: ``wspace serve`` (run the Discord bot), ``health``, ``init-config``
and ``invite``.

``main`` composes these with the engine's commands (``engine.cli.entry.commands``, the engine's
declared entry point) into one ``wspace`` command; this module imports no engine code at
import time, so the bot process never loads torch (the engine runs in its own process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(rich_markup_mode=None, help="The wspace Discord bot.", no_args_is_help=True, add_completion=False)


def fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def serve(config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file")] = None,
          verbose: Annotated[bool, typer.Option(help="log at debug level")] = False) -> None:
    """Run the Discord bot (the engine runs in its own process)."""
    from bot.config import ConfigError, load_settings
    from bot.preflight import preflight, release_locks

    try:
        settings = load_settings(config)
        settings.token()
        preflight(settings)
    except ConfigError as exc:
        release_locks()
        fail(str(exc))
    try:
        _serve(settings, config, verbose)
    finally:
        release_locks()


def _serve(settings, config: Path | None, verbose: bool) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, settings.logging.level),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = settings.engine
    if engine.transport == "local" and engine.device != "cpu" and (problem := _device_problem_elsewhere(engine.device)):
        fail(problem.replace("--device", "engine.device ="))
    from bot.app import ServeError, run

    try:
        run(settings, config)
    except ServeError as exc:
        fail(str(exc))


def _device_problem_elsewhere(device: str) -> str | None:
    """:func:`engine.model.runtime.device_problem`, asked of a child process: the bot process
    never imports torch."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "engine.cli.entry", "device-problem", device], capture_output=True,
                          text=True, timeout=300)
    return done.stdout.strip() or (f"--device {device}: the engine cannot start ({done.stderr.strip()[-200:]})."
                                   if done.returncode else None)


@app.command()
def health(config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file")] = None) -> None:
    """Exit 0 when the bot of this config is connected to Discord (its heartbeat is fresh); for HEALTHCHECK."""
    import json
    import time

    from bot.app import HEALTHY_WITHIN
    from bot.config import ConfigError, heartbeat_path, load_settings

    try:
        path = heartbeat_path(load_settings(config))
        beat = json.loads(path.read_text())
    except ConfigError as exc:
        fail(str(exc))
    except (OSError, ValueError):
        fail("unhealthy: the bot has not reported in yet (no heartbeat file).")
    age = time.time() - float(beat.get("time", 0))
    if age > HEALTHY_WITHIN:
        fail(f"unhealthy: the bot's last heartbeat is {age:.0f} s old.")
    typer.echo(f"healthy: heartbeat {age:.0f} s ago, engine {'ready' if beat.get('engine_ready') else 'starting'}.")


@app.command("init-config")
def init_config(
    path: Annotated[Path, typer.Argument(help="where the config goes, e.g. /data/config.toml")],
    example: Annotated[
        Optional[Path], typer.Option(help="the example config to start from (default: the one shipped with wspace)")
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="engine.device, e.g. cuda")] = None,
) -> None:
    """Write a first config at PATH (the example's keys and comments) unless one is there, and check
    that its folder is writable. WSPACE_REDIS_URL in the environment selects the Redis transport,
    WSPACE_METRICS_ADDRESS serves Prometheus metrics there."""
    import os
    from importlib.resources import as_file, files

    from bot.config import ConfigError, check_writable, write_first_config

    created = [p for p in reversed(path.parents) if not p.exists()]  # folders this makes: said, not silent
    try:
        if example is None:
            with as_file(files("bot") / "config.example.toml") as shipped:
                example = Path(shipped)
        if not path.exists() and not example.is_file():
            fail(f"No example config at {example}; pass --example FILE.")
        wrote = write_first_config(
            path,
            example,
            device,
            os.environ.get("WSPACE_REDIS_URL") or None,
            os.environ.get("WSPACE_METRICS_ADDRESS") or None,
        )
        check_writable(path.parent)
    except ConfigError as exc:
        fail(str(exc)[0].upper() + str(exc)[1:] + ".")
    if wrote:
        made = f" (made the folder {created[0]})" if created else ""
        typer.echo(
            f"wrote {path} from the example{f' (engine.device = {device!r})' if device else ''}{made}; "
            "edit it and restart",
            err=True,
        )


@app.command()
def invite(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file")] = None,
    application_id: Annotated[
        Optional[int],
        typer.Option("--application-id", min=1, help="The application's id (default: read from the bot token)"),
    ] = None,
) -> None:
    """Print the link that adds the bot to a server, asking for exactly the permissions it uses."""
    from bot.config import ConfigError, load_settings
    from bot.invite import ROUTES, application_id_from_token, invite_url

    if application_id is None:
        try:
            token = load_settings(config).token()
        except ConfigError:
            token = None
        application_id = application_id_from_token(token) if token else None
        if application_id is None:
            portal = "pass --application-id (Developer Portal, your application, General Information)"
            fail(f"No application id: {portal} or set the bot token." if not token else
                 f"The bot token that is set holds no application id (is it the whole token?); {portal}.")
    granted = sorted({name for needs in ROUTES.values() for name in needs})
    typer.echo(invite_url(application_id))
    typer.echo(f"scopes: bot, applications.commands; permissions: {', '.join(granted)}", err=True)


def full_app() -> typer.Typer:
    """``wspace``: the engine's commands and the bot's, one command line (neither app is changed)."""
    from engine.cli.entry import compose

    return compose(app)


def main() -> None:
    full_app()()


if __name__ == "__main__":
    main()
