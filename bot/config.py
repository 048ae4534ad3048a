"""The one home of configuration: a TOML file validated into typed settings.

Errors name the bad key (``limits.queue_size: Input should be greater than 0``) and
never print a secret's value. The bot token comes from the file or, when the file
leaves it out, from the ``WSPACE_TOKEN`` environment variable; it is a ``SecretStr``
so it never lands in a log or a repr.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from engine.protocol.wire import weak_secret

TOKEN_ENV = "WSPACE_TOKEN"
CONFIG_ENV = "WSPACE_CONFIG"  # the config file when --config is not given (the Docker image mounts one)
DEVICE_ENV = "WSPACE_DEVICE"  # overrides engine.device (and is wspace worker's default --device)


class ConfigError(ValueError):
    pass


Snowflake = Annotated[int, Field(ge=0, lt=2**63)]  # a Discord id


class _Strict(BaseModel):
    # No coercion ("32" is not 32, true is not 1), no unknown keys, no infinite or NaN numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DiscordSettings(_Strict):
    token: SecretStr | None = None
    token_env: str = Field(TOKEN_ENV, description="Environment variable holding the token when the file has none")
    allowed_guilds: list[Snowflake] = Field(default_factory=list, max_length=10_000,
                                            description="Empty: every server the bot is in")
    allowed_channels: list[Snowflake] = Field(
        default_factory=list, max_length=10_000, description="Empty: every channel"
    )
    api_base: str | None = Field(None, description="Override Discord's API root (a local simulator in tests)")
    gateway_url: str | None = Field(None, description="Override Discord's gateway websocket URL (same)")
    sync_commands: bool = True
    sharded: bool = Field(False, description="Run discord.py's auto-sharded client (large bots)")
    shard_count: int | None = Field(
        None, ge=1, le=1024, description="With sharded: this many shards; empty = Discord's advice"
    )
    http_connections: int = Field(
        32, ge=0, le=1000, description="Open HTTPS connections to Discord at most (0: unbounded, discord.py's default)"
    )

    @model_validator(mode="after")
    def _shards_need_sharding(self):
        if self.shard_count is not None and not self.sharded:
            raise ValueError("shard_count is set but sharded is false; set sharded = true or remove shard_count")
        return self


class EngineSettings(_Strict):
    model: Path | None = Field(None, strict=False, description="Generator file; empty = the embedded model")
    directions: Path | None = Field(None, strict=False)
    encoder: Path | None = Field(
        None,
        strict=False,
        description="An e4e or pSp encoder imported with `wspace encoder "
        "import`, the projector's first guess; it must belong to the model",
    )
    device: str = Field("cpu", description="torch device of the engine: cpu, cuda, cuda:N or mps")
    threads: int | None = Field(None, ge=1, le=256)
    batch: int = Field(
        8,
        ge=1,
        le=64,
        description="jobs the local engine works on at once, their projections "
        "advancing as one batch; 1 = one job at a time",
    )
    transport: Literal["local", "redis"] = Field(
        "local", description="local: one engine process here; redis: workers anywhere (`wspace worker --redis URL`)"
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("wspace", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    redis_secret: SecretStr | None = Field(
        None, strict=False, description="shared with the workers: every job and result is sealed with it"
    )
    redis_secret_env: str = Field(
        "WSPACE_REDIS_SECRET", description="read the secret from this variable when redis_secret is empty"
    )
    job_timeout_seconds: float = Field(900.0, ge=10, le=86_400, description="a running job is stopped after this")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:[0-9]{1,2})?|mps", value):
            raise ValueError("device must be cpu, cuda, cuda:N or mps")
        return value


class LimitSettings(_Strict):
    @field_validator("costs")
    @classmethod
    def _known_costs(cls, value: dict[str, float]) -> dict[str, float]:
        from bot.limits import DEFAULT_COSTS

        for kind, cost in value.items():
            if kind not in DEFAULT_COSTS:
                raise ValueError(f"unknown job kind {kind!r}; costs can be set for {', '.join(DEFAULT_COSTS)}")
            if not 0 <= cost <= 1000:
                raise ValueError(f"the cost of {kind} must lie between 0 and 1000")
        return value

    queue_size: int = Field(32, ge=1, le=10_000)
    per_member_queued: int = Field(2, ge=1, le=100)
    member_rate: float = Field(
        6, ge=0.01, le=10_000, description="projection-equivalents a member may start per member_period"
    )
    member_period: float = Field(60.0, ge=1, le=86_400)
    server_rate: float = Field(60, ge=0.01, le=100_000, description="… and a whole server per server_period")
    costs: dict[str, float] = Field(
        default_factory=dict, description="cost of a job kind in projection-equivalents (defaults: bot/limits.py)"
    )
    server_period: float = Field(60.0, ge=1, le=86_400)
    max_image_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=32 * 1024 * 1024,
        description="largest photo a member may send (the engine reads at most 32 MiB)",
    )
    project_steps: int = Field(300, ge=1, le=2000)
    max_project_steps: int = Field(1000, ge=1, le=2000)
    morph_max_members: int = Field(24, ge=2, le=64)
    max_frames: int = Field(120, ge=8, le=240)
    max_gif_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        le=100 * 1024 * 1024,
        description="largest GIF sent back (Discord's largest upload is 100 MiB)",
    )
    progress_interval: float = Field(1.5, ge=0.5, le=60)
    team_steps: int = Field(100, ge=1, le=2000, description="projection steps per face of a /team photo")
    team_face_hours: float = Field(
        24.0, ge=0.01, le=24 * 30, description="unclaimed /team faces are deleted after this"
    )
    stranger_seconds: float = Field(45.0, ge=5, le=300, description="time budget of /lookalike's stranger search")


class StorageSettings(_Strict):
    database: Path = Field(Path("wspace.sqlite3"), strict=False)

    @field_validator("database")
    @classmethod
    def _plain_path(cls, value: Path) -> Path:
        if "\x00" in str(value) or str(value) in ("", "."):
            raise ValueError("database must be a file path without NUL characters")
        return value


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class MetricsSettings(_Strict):
    address: str = Field("", description='Serve Prometheus metrics at host:port ("127.0.0.1:9108"); empty: off')

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if (
                not sep
                or not port.isdigit()
                or not 0 <= int(port) <= 65535
                or len(value) > 255
                or any(c.isspace() for c in value)
            ):
                raise ValueError('address must be host:port, e.g. "127.0.0.1:9108" (port 0: any free port)')
        return value


class Settings(_Strict):
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    discord: DiscordSettings = DiscordSettings()
    engine: EngineSettings = EngineSettings()
    limits: LimitSettings = LimitSettings()
    storage: StorageSettings = StorageSettings()

    @model_validator(mode="after")
    def _settings_agree(self):
        """Settings that each pass alone but contradict each other: one sentence each."""
        limits, engine = self.limits, self.engine
        if engine.job_timeout_seconds < 2 * limits.stranger_seconds:
            raise ValueError(
                f"engine.job_timeout_seconds ({engine.job_timeout_seconds:g}) must be at least twice "
                f"limits.stranger_seconds ({limits.stranger_seconds:g}), or every /lookalike would run out of time"
            )
        if limits.project_steps > limits.max_project_steps:
            raise ValueError(
                f"limits.project_steps ({limits.project_steps}) is more than limits.max_project_steps "
                f"({limits.max_project_steps}): the default would be refused"
            )
        if limits.per_member_queued > limits.queue_size:
            raise ValueError(
                f"limits.per_member_queued ({limits.per_member_queued}) is more than limits.queue_size "
                f"({limits.queue_size}): lower it or raise the queue"
            )
        return self

    def redis_secret(self) -> bytes:
        """The Redis transport's signing secret (config, else its environment variable)."""
        engine = self.engine
        secret = (
            engine.redis_secret.get_secret_value()
            if engine.redis_secret
            else os.environ.get(engine.redis_secret_env, "")
        )
        if not secret:
            raise ConfigError(
                f"the redis transport needs a shared secret: set engine.redis_secret or {engine.redis_secret_env} "
                "(e.g. `openssl rand -hex 32`)"
            )
        if why := weak_secret(secret):
            raise ConfigError(f"the redis transport's shared secret {why}")
        return secret.encode()

    def token(self) -> str:
        if self.discord.token is not None:
            return self.discord.token.get_secret_value()
        env = self.discord.token_env
        token = os.environ.get(env)
        if not token:
            raise ConfigError(f"no bot token: set discord.token in the config file or {env} in the environment")
        return token


def number_ranges(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, tuple]:
    """Every number the config takes, with its default and range: ``{key: (default, low, high)}``
    (docs/configuration.md is this table)."""
    import annotated_types as at

    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(number_ranges(field.annotation, f"{prefix}{name}."))
            continue
        low = next(
            (m.ge if isinstance(m, at.Ge) else m.gt for m in field.metadata if isinstance(m, (at.Ge, at.Gt))), None
        )
        high = next(
            (m.le if isinstance(m, at.Le) else m.lt for m in field.metadata if isinstance(m, (at.Le, at.Lt))), None
        )
        if low is not None or high is not None or field.annotation in (int, float):
            out[prefix + name] = (field.default, low, high)
    return out


def parse_settings(data: dict, source: str = "config") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            lines.append(f"{key}: {err['msg']}")  # the message, never the offending input
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(lines)) from None




def environment_device() -> str | None:
    return os.environ.get(DEVICE_ENV) or None


def load_settings(path: str | Path | None) -> Settings:
    """The file at ``path`` (default: ``$WSPACE_CONFIG``, else all defaults), with
    ``$WSPACE_DEVICE`` overriding ``engine.device``."""
    path = path or os.environ.get(CONFIG_ENV) or None
    settings = _load_file(Path(path)) if path else Settings()
    if device := environment_device():
        data = settings.model_dump()
        data["engine"]["device"] = device
        settings = parse_settings(data, f"{DEVICE_ENV}={device!r}")
    return settings


def heartbeat_path(settings: Settings) -> Path:
    """The file the running bot touches every few seconds (``wspace health`` reads it)."""
    return settings.storage.database.with_name(settings.storage.database.name + ".alive")


def engines_path(settings: Settings) -> Path:
    """Where the bot records itself and its engine processes (``bot/transport/pidfile.py``)."""
    return settings.storage.database.with_name(settings.storage.database.name + ".engines.json")


MAX_CONFIG_BYTES = 1024 * 1024  # config.example.toml is ~6 KB


def _read_text(path: Path) -> str:
    """The config file's text; one sentence for a path that is no readable UTF-8 text file."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a config file; name the .toml file inside it")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; that is not a wspace config")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(f"{path} is UTF-16 text; TOML files are UTF-8, so save it as UTF-8")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start} is not UTF-8, e.g. Latin-1); "
            "TOML files are UTF-8, so save it as UTF-8"
        ) from None


def _load_file(path: Path) -> Settings:
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} nests arrays or tables too deeply to be a wspace config") from None
    if not data:  # a file that was meant to be written and was not (a failed copy, a full disk)
        raise ConfigError(f"{path} is empty; copy config.example.toml there, or remove it to run on the defaults")
    settings = parse_settings(data, str(path))
    base = path.parent
    engine = settings.engine
    # Relative paths in the file are relative to the file, not to wherever the bot starts.
    updates = {}
    if engine.model and not engine.model.is_absolute():
        updates["model"] = base / engine.model
    if engine.directions and not engine.directions.is_absolute():
        updates["directions"] = base / engine.directions
    if engine.encoder and not engine.encoder.is_absolute():
        updates["encoder"] = base / engine.encoder
    if updates:
        settings = settings.model_copy(update={"engine": engine.model_copy(update=updates)})
    if not settings.storage.database.is_absolute():
        settings = settings.model_copy(update={"storage": StorageSettings(database=base / settings.storage.database)})
    return settings


# --- the first config of a new install (the Docker image's entry point) -------------------------


def _toml_string(value: str) -> str:
    """A TOML basic string: any character a URL or password may hold survives."""
    return json.dumps(value, ensure_ascii=False)  # JSON's escapes are a subset of TOML's basic strings


def first_config(
    example: str, device: str | None = None, redis_url: str | None = None, metrics: str | None = None
) -> str:
    """``example`` (config.example.toml, comments kept) with ``engine.device`` set; given a
    Redis URL, ``engine.transport = "redis"`` and ``engine.redis_url``; given an address,
    ``metrics.address``. The result is checked by parsing it as the bot will."""
    out, table = [], ""
    for line in example.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            table = stripped[1:-1].strip()
        elif table == "metrics" and metrics and stripped.startswith("address"):
            line = f"address = {_toml_string(metrics)}"
        elif table == "engine":
            comment = line[line.index("#") :] if "#" in line and not stripped.startswith("#") else ""
            key = stripped.lstrip("# ").split("=", 1)[0].strip() if "=" in stripped else ""
            if key == "device" and device and not stripped.startswith("#"):
                line = f"device = {_toml_string(device)}  {comment}".rstrip()
            elif key == "transport" and redis_url and not stripped.startswith("#"):
                line = f'transport = "redis"  {comment}'.rstrip()
            elif key == "redis_url" and redis_url:
                line = f"redis_url = {_toml_string(redis_url)}"
        out.append(line)
    text = "\n".join(out) + "\n"
    settings = parse_settings(tomllib.loads(text), "the first config")
    if (
        device
        and settings.engine.device != device
        or redis_url
        and settings.engine.redis_url != redis_url
        or metrics
        and settings.metrics.address != metrics
    ):
        raise ConfigError(
            "the example config has no line for engine.device, engine.redis_url or metrics.address to set"
        )
    return text


def write_first_config(
    path: Path, example: Path, device: str | None = None, redis_url: str | None = None, metrics: str | None = None
) -> bool:
    """Write :func:`first_config` to ``path`` unless a file is there; atomically (a crash leaves
    no partial file). False when one was there. A folder that cannot be written is one sentence."""
    if path.exists():
        return False
    text = first_config(example.read_text(), device, redis_url, metrics)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write {path} ({exc.strerror or exc}): the folder must be writable by user "
            f"{os.getuid()}; on the host, run `sudo chown {os.getuid()} <the folder mounted there>` "
            "or start the container with --user matching the folder's owner"
        ) from None
    return True


def check_writable(folder: Path) -> None:
    """The folder of the config and database must take new files (the database's journal)."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; mount a folder there")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{folder} is not writable by user {os.getuid()}; on the host, run `sudo chown "
            f"{os.getuid()} <the folder mounted there>` or start the container with --user matching its owner"
        )
