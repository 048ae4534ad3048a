"""Configuration: the example parses, bad keys are named, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings, parse_settings

REPO = Path(__file__).resolve().parents[1]


def test_example_config_is_valid_and_matches_the_defaults():
    settings = load_settings(REPO / "config.example.toml")
    defaults = parse_settings({})
    assert settings.limits == defaults.limits
    assert settings.storage.database == REPO / "wspace.sqlite3", "relative paths are relative to the file"


@pytest.mark.parametrize("data, key", [
    ({"limits": {"queue_size": 0}}, "limits.queue_size"),
    ({"limits": {"queue_sise": 3}}, "limits.queue_sise"),
    ({"engine": {"device": 5}}, "engine.device"),
    ({"discord": {"shard_count": -1}}, "discord.shard_count"),
    ({"engine": {"device": "tpu"}}, "engine.device: .*device must be cpu, cuda, cuda:N or mps"),
    ({"engine": {"restart_seconds": 5}}, "engine.restart_seconds"),
    ({"limits": {"queue_size": "32"}}, "limits.queue_size: Input should be a valid integer"),
    ({"discord": {"sync_commands": 1}}, "discord.sync_commands: Input should be a valid boolean"),
    ({"engine": {"job_timeout_seconds": float("inf")}}, "engine.job_timeout_seconds: Input should be a finite number"),
    ({"limits": {"member_period": 1e-300}}, "limits.member_period"),
    ({"discord": {"shard_count": 4}}, "discord: .*shard_count is set but sharded is false"),
    ({"engine": {"job_timeout_seconds": 25}}, "job_timeout_seconds .* at least twice limits.stranger_seconds"),
    ({"limits": {"project_steps": 1500}}, "project_steps .* more than limits.max_project_steps"),
    ({"limits": {"queue_size": 1}}, "per_member_queued .* more than limits.queue_size"),
])
def test_a_bad_key_is_named(data, key):
    with pytest.raises(ConfigError, match=key):
        parse_settings(data)


def test_every_key_is_documented_in_the_example():
    from bot.config import Settings

    text = (REPO / "config.example.toml").read_text()
    for section, field in Settings.model_fields.items():
        assert f"[{section}]" in text
        for key in field.annotation.model_fields:
            if key in ("api_base", "gateway_url"):  # test-only overrides for the local simulator
                continue
            assert f"{key} =" in text or f"{key} = " in text, f"{section}.{key} is not in config.example.toml"


def test_secrets_never_appear_in_errors_or_reprs(tmp_path, monkeypatch):
    secret = "MTIzNDU2Nzg5.secret-token-value"
    with pytest.raises(ConfigError) as exc:
        parse_settings({"discord": {"token": secret, "bogus": secret}})
    assert secret not in str(exc.value)
    settings = parse_settings({"discord": {"token": secret}})
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    assert settings.token() == secret
    (tmp_path / "c.toml").write_text(f'[discord]\ntoken = "{secret}"\nsync_commands = "maybe"\n')
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "c.toml")
    assert secret not in str(exc.value) and "discord.sync_commands" in str(exc.value)


def test_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("WSPACE_TOKEN", "from-env")
    assert parse_settings({}).token() == "from-env"
    monkeypatch.delenv("WSPACE_TOKEN")
    with pytest.raises(ConfigError, match="WSPACE_TOKEN"):
        parse_settings({}).token()


def test_broken_toml_is_a_clear_error(tmp_path):
    (tmp_path / "c.toml").write_text("[limits\nqueue_size = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path / "c.toml")


@pytest.mark.parametrize("secret, said", [
    ("", "needs a shared secret"),
    ("short-secret-16c", "at least 24 characters"),
    ("correcthorsebatterystaple", "looks guessable"),
    ("0123456789abcdef0123456789abcdef", "looks guessable"),  # a pattern repeated
    ("wspace-wspace-wspace-wspace-wspace", "looks guessable"),
])
def test_a_guessable_redis_secret_is_refused(secret, said, monkeypatch):
    monkeypatch.delenv("WSPACE_REDIS_SECRET", raising=False)
    settings = parse_settings({"engine": {"transport": "redis", "redis_secret": secret}})
    with pytest.raises(ConfigError, match=said):
        settings.redis_secret()
    import secrets

    strong = parse_settings({"engine": {"transport": "redis", "redis_secret": secrets.token_hex(32)}})
    assert len(strong.redis_secret()) == 64
