"""``python -m engine.cli``: the engine's commands alone."""

from engine.cli.commands import main

if __name__ == "__main__":
    main()
