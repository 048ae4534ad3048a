"""The SQL migrations, shipped in the wheel as ``bot.migrations`` (see pyproject.toml)."""
