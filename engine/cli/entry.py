"""The engine's one door for the bot. Besides ``engine.protocol`` (the contract), this is
the only engine module the bot imports, and only inside functions, so the bot's process
never loads torch:

- :func:`compose`: the one ``wspace`` command line: the engine's commands and global
  options with the apps it is given (the bot's, from bot/cli.py), neither app changed;
- :func:`serve_local`: the body of the local engine process the bot's local transport
  spawns, started from an :class:`~engine.protocol.spec.EngineSpec`;
- ``python -m engine.cli.entry device-problem DEVICE``: one sentence when ``DEVICE`` cannot run
  here (asked in a child process, for the same reason), nothing when it can.
"""

from __future__ import annotations

import sys

from engine.protocol.spec import EngineSpec


def compose(*others):
    """A new Typer app: the engine's (model tools, local operations, ``worker``, ``--threads``)
    and the commands of ``others`` at the same level."""
    import typer

    from engine.cli.commands import HELP, commands, options

    root = typer.Typer(rich_markup_mode=None, help=HELP, no_args_is_help=True, add_completion=False)
    root.callback()(options)
    for sub in (commands, *others):
        root.add_typer(sub)
    return root


def serve_local(spec: EngineSpec, job_queue, event_queue, stop_queue) -> None:
    from engine.serving.worker import serve

    serve(spec, job_queue, event_queue, stop_queue)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "device-problem":
        from engine.model.runtime import device_problem

        print(device_problem(argv[1]) or "")
        return 0
    print("usage: python -m engine.cli.entry device-problem DEVICE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
