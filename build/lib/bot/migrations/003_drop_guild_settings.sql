-- guild_settings was created by 001 and never read or written: configuration has one
-- home, the TOML file (bot/config.py).
DROP TABLE IF EXISTS guild_settings;
