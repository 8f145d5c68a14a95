"""Settings: one class, read from ``IOTFLOW_*`` environment variables (the original names are accepted
as aliases; the prefixed one wins) and an optional ``.env`` file.

Generated secrets (admin token, JWT secret key) live in the data directory, created at first start.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from iotflow.errors import ConfigError


def _env(name: str, *aliases: str) -> Any:
    return Field(validation_alias=AliasChoices(f"IOTFLOW_{name}", *aliases))


class Settings(BaseSettings):
    """Every setting of IoTFlow. See ``docs/configuration.md`` for the full table."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", validation_alias=AliasChoices("IOTFLOW_HOST", "HOST"))
    port: int = Field(5000, ge=0, le=65535, validation_alias=AliasChoices("IOTFLOW_PORT", "PORT"))
    data_dir: Path = Field(Path("./iotflow-data"), validation_alias=AliasChoices("IOTFLOW_DATA_DIR"))
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("IOTFLOW_DATABASE_URL", "DATABASE_URL")
    )
    timeseries_url: str | None = Field(None, validation_alias=AliasChoices("IOTFLOW_TIMESERIES_URL"))
    redis_url: str | None = Field(None, validation_alias=AliasChoices("IOTFLOW_REDIS_URL", "REDIS_URL"))

    mqtt_enabled: bool = Field(True, validation_alias=AliasChoices("IOTFLOW_MQTT_ENABLED"))
    mqtt_broker_url: str | None = Field(None, validation_alias=AliasChoices("IOTFLOW_MQTT_BROKER_URL"))
    mqtt_host: str = Field("127.0.0.1", validation_alias=AliasChoices("IOTFLOW_MQTT_HOST"))
    mqtt_port: int = Field(1883, ge=0, le=65535, validation_alias=AliasChoices("IOTFLOW_MQTT_PORT"))
    mqtt_ws_port: int | None = Field(
        None, ge=0, le=65535, validation_alias=AliasChoices("IOTFLOW_MQTT_WS_PORT")
    )
    mqtt_allow_anonymous: bool = Field(False, validation_alias=AliasChoices("IOTFLOW_MQTT_ALLOW_ANONYMOUS"))
    mqtt_dynsec: bool = Field(False, validation_alias=AliasChoices("IOTFLOW_MQTT_DYNSEC"))
    mqtt_max_payload: int = Field(262144, ge=1024, validation_alias=AliasChoices("IOTFLOW_MQTT_MAX_PAYLOAD"))

    admin_token: str | None = Field(None, validation_alias=AliasChoices("IOTFLOW_ADMIN_TOKEN"))
    secret_key: str | None = Field(None, validation_alias=AliasChoices("IOTFLOW_SECRET_KEY", "SECRET_KEY"))
    token_ttl: int = Field(86400, ge=1, validation_alias=AliasChoices("IOTFLOW_TOKEN_TTL"))
    api_key_length: int = Field(
        32, ge=32, le=128, validation_alias=AliasChoices("IOTFLOW_API_KEY_LENGTH", "API_KEY_LENGTH")
    )
    device_registration: Literal["open", "authenticated"] = Field(
        "open", validation_alias=AliasChoices("IOTFLOW_DEVICE_REGISTRATION")
    )
    user_registration: bool = Field(True, validation_alias=AliasChoices("IOTFLOW_USER_REGISTRATION"))
    device_offline_after: int = Field(
        300, ge=1, validation_alias=AliasChoices("IOTFLOW_DEVICE_OFFLINE_AFTER")
    )

    rate_limits: bool = Field(True, validation_alias=AliasChoices("IOTFLOW_RATE_LIMITS"))
    rate_limit_per_minute: int = Field(
        600, ge=1, validation_alias=AliasChoices("IOTFLOW_RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_PER_MINUTE")
    )
    rate_limit_telemetry: int = Field(
        6000, ge=1, validation_alias=AliasChoices("IOTFLOW_RATE_LIMIT_TELEMETRY")
    )
    rate_limit_heartbeat: int = Field(60, ge=1, validation_alias=AliasChoices("IOTFLOW_RATE_LIMIT_HEARTBEAT"))
    rate_limit_login: int = Field(10, ge=1, validation_alias=AliasChoices("IOTFLOW_RATE_LIMIT_LOGIN"))
    # per 5 minutes
    rate_limit_registration: int = Field(
        10, ge=1, validation_alias=AliasChoices("IOTFLOW_RATE_LIMIT_REGISTRATION")
    )

    retention_days: int = Field(0, ge=0, validation_alias=AliasChoices("IOTFLOW_RETENTION_DAYS"))
    http_fastpath: bool = Field(True, validation_alias=AliasChoices("IOTFLOW_HTTP_FASTPATH"))
    max_body_bytes: int = Field(1048576, ge=1024, validation_alias=AliasChoices("IOTFLOW_MAX_BODY_BYTES"))
    max_future_skew: int = Field(86400, ge=0, validation_alias=AliasChoices("IOTFLOW_MAX_FUTURE_SKEW"))

    ingest_queue_points: int = Field(
        200000, ge=1, validation_alias=AliasChoices("IOTFLOW_INGEST_QUEUE_POINTS")
    )
    ingest_max_batch: int = Field(20000, ge=1, validation_alias=AliasChoices("IOTFLOW_INGEST_MAX_BATCH"))
    ingest_max_delay_ms: int = Field(20, ge=0, validation_alias=AliasChoices("IOTFLOW_INGEST_MAX_DELAY_MS"))
    timeseries_chunk_hours: int = Field(
        24, ge=1, le=24 * 366, validation_alias=AliasChoices("IOTFLOW_TIMESERIES_CHUNK_HOURS")
    )
    # History and aggregate reads of the SQLite store run in this many processes of their own
    # (0: threads of the server process). See docs/performance.md.
    read_processes: int = Field(2, ge=0, le=32, validation_alias=AliasChoices("IOTFLOW_READ_PROCESSES"))
    # Its writer runs in a process of its own (false: a thread of the server process).
    write_process: bool = Field(True, validation_alias=AliasChoices("IOTFLOW_WRITE_PROCESS"))

    workers: int = Field(1, ge=1, validation_alias=AliasChoices("IOTFLOW_WORKERS"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=AliasChoices("IOTFLOW_LOG_LEVEL", "LOG_LEVEL")
    )
    log_format: Literal["text", "json"] = Field("text", validation_alias=AliasChoices("IOTFLOW_LOG_FORMAT"))
    cors_origins: str | None = Field(
        None, validation_alias=AliasChoices("IOTFLOW_CORS_ORIGINS", "ALLOWED_ORIGINS")
    )
    metrics_public: bool = Field(False, validation_alias=AliasChoices("IOTFLOW_METRICS_PUBLIC"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "database_url",
        "timeseries_url",
        "redis_url",
        "mqtt_broker_url",
        "admin_token",
        "secret_key",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    # ----- derived values -------------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        """The metadata database URL (SQLite file in the data directory by default)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'iotflow.db'}"

    @property
    def effective_timeseries_url(self) -> str:
        """The telemetry store URL.

        Unset means "the same place as the metadata database". For SQLite that is a sibling file
        (``<name>-telemetry.db``) so that the telemetry writer never waits for a metadata write.
        """
        if self.timeseries_url:
            return self.timeseries_url
        url = self.effective_database_url
        if url.startswith("sqlite"):
            path = sqlite_path(url)
            return f"sqlite:///{path.with_name(path.stem + '-telemetry.db')}"
        return url

    @property
    def mqtt_mode(self) -> Literal["embedded", "external", "disabled"]:
        if not self.mqtt_enabled:
            return "disabled"
        return "external" if self.mqtt_broker_url else "embedded"


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` / ``sqlite:////abs.db`` / ``sqlite+aiosqlite:///...`` → a Path."""
    _, _, rest = url.partition(":///")
    if not rest:
        raise ConfigError(f"Invalid SQLite URL {url!r}: expected sqlite:///path/to/file.db")
    return Path(rest)


_MQTT_ALIASES = ("MQTT_HOST", "MQTT_PORT", "MQTT_USERNAME", "MQTT_PASSWORD")


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation problems into one :class:`ConfigError` line."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"][0] if err["loc"] else "?"
            problems.append(f"IOTFLOW_{str(loc).upper()}: {err['msg']}")
        raise ConfigError("Invalid setting " + "; ".join(problems)) from None
    if settings.mqtt_broker_url is None and "IOTFLOW_MQTT_BROKER_URL" not in os.environ:
        # The original deployment named its external broker with MQTT_HOST/MQTT_PORT/...
        host = os.environ.get("MQTT_HOST")
        if host:
            user = os.environ.get("MQTT_USERNAME", "")
            password = os.environ.get("MQTT_PASSWORD", "")
            cred = f"{user}:{password}@" if user else ""
            port = os.environ.get("MQTT_PORT", "1883")
            settings = settings.model_copy(update={"mqtt_broker_url": f"mqtt://{cred}{host}:{port}"})
    return settings


def _read_or_create_secret(path: Path, nbytes: int) -> tuple[str, bool]:
    if path.exists():
        return path.read_text().strip(), False
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value, True


def prepare_data_dir(settings: Settings) -> tuple[Settings, str | None]:
    """Create the data directory and fill in generated secrets.

    Returns the completed settings and, only when the admin token was generated just now, that token
    (so that ``serve`` can print it once).
    """
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"IOTFLOW_DATA_DIR: cannot create {settings.data_dir}: {exc.strerror}") from None
    update: dict[str, str] = {}
    new_admin: str | None = None
    if settings.admin_token is None:
        token, created = _read_or_create_secret(settings.data_dir / "admin_token", 32)
        update["admin_token"] = token
        new_admin = token if created else None
    if settings.secret_key is None:
        update["secret_key"], _ = _read_or_create_secret(settings.data_dir / "secret_key", 48)
    return (settings.model_copy(update=update) if update else settings), new_admin


_SECRET_FIELDS = {"admin_token", "secret_key"}


def describe(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain values, secrets and URL passwords masked."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in _SECRET_FIELDS and value:
            value = value[:4] + "..." if len(value) > 8 else "****"
        elif isinstance(value, str) and "://" in value:
            value = describe_url(value)
        elif isinstance(value, Path):
            value = str(value)
        out[f"IOTFLOW_{name.upper()}"] = value
    out["(database)"] = describe_url(settings.effective_database_url)
    out["(timeseries)"] = describe_url(settings.effective_timeseries_url)
    out["(mqtt mode)"] = settings.mqtt_mode
    return out


def describe_url(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    _, _, host = rest.rpartition("@")
    return f"{scheme}://****@{host}"
