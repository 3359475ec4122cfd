"""Settings, declared once as a table and read from the environment once.

Every setting has a name, a default and a help text; the README documents each one and a test
fails when one is missing there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any


class SettingsError(ValueError):
    """A setting in the environment has a value that cannot be used."""


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {raw!r}")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {raw!r}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(f"expected a positive number, got {raw!r}")
    return value


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http(s) URL, got {raw!r}")
    return value


def _database_url(raw: str) -> str:
    value = raw.strip()
    if not value.startswith(("sqlite", "postgresql", "postgres://")):
        raise ValueError("expected a sqlite:/// or postgresql:// URL")
    return value


@dataclass(frozen=True)
class Setting:
    """One declared setting: its environment name, default, cast and help text."""

    name: str
    attribute: str
    default: str
    help: str
    cast: Callable[[str], Any] = str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "database_url",
        "sqlite:///var/whereabouts.db",
        "Where data lives. A `sqlite:///path` file (the default, relative to the working "
        "directory) or `postgresql://user@host:port/db` to share one database between several "
        "web and worker processes.",
        _database_url,
    ),
    Setting(
        "PUBLIC_URL",
        "public_url",
        "http://127.0.0.1:8000",
        "The address shoppers and providers reach this service at; tracking links and webhook "
        "signatures are built from it, never from forwarded headers.",
        _url,
    ),
    Setting(
        "HOST",
        "host",
        "127.0.0.1",
        "Interface `whereabouts serve` listens on.",
    ),
    Setting("PORT", "port", "8000", "Port `whereabouts serve` listens on.", _positive_int),
    Setting(
        "WEB_CONCURRENCY",
        "web_concurrency",
        "1",
        "Number of uvicorn worker processes for `whereabouts serve` (use PostgreSQL above 1).",
        _positive_int,
    ),
    Setting(
        "SECRET_KEY",
        "secret_key",
        "",
        "Secret that signs the tracking page's form tokens. Empty: a random key per start, fine "
        "for one process; set the same long random value on every process that serves pages.",
    ),
    Setting(
        "PAGE_CACHE_ENTRIES",
        "page_cache_entries",
        "5000",
        "Rendered tracking pages each process keeps in memory (keyed by order version, language, "
        "theme and day).",
        _positive_int,
    ),
    Setting(
        "CHANGE_POLL_SECONDS",
        "change_poll_seconds",
        "0.5",
        "On SQLite, how often each process looks for orders changed by other processes (open "
        "pages update within this time; PostgreSQL is told at once by LISTEN/NOTIFY).",
        lambda raw: _positive_float(raw),
    ),
    Setting(
        "API_MAX_BODY_BYTES",
        "api_max_body_bytes",
        "8388608",
        "Largest request body the API accepts, in bytes (a full 1,000-order batch fits); larger "
        "bodies get 413.",
        _positive_int,
    ),
    Setting(
        "IDEMPOTENCY_TTL_HOURS",
        "idempotency_ttl_hours",
        "24",
        "How long a stored `Idempotency-Key` response is replayed before the key may be reused.",
        _positive_int,
    ),
    Setting(
        "SQLITE_BUSY_TIMEOUT_MS",
        "sqlite_busy_timeout_ms",
        "10000",
        "How long a SQLite connection waits for another process's write lock before failing.",
        _positive_int,
    ),
    Setting(
        "DB_POOL_SIZE",
        "db_pool_size",
        "10",
        "Database connections each process keeps open.",
        _positive_int,
    ),
    Setting(
        "LOG_LEVEL",
        "log_level",
        "info",
        "Logging level: debug, info, warning or error. Logs never contain personal data.",
        lambda raw: _choice(raw, {"debug", "info", "warning", "error"}),
    ),
)


def _choice(raw: str, allowed: set[str]) -> str:
    value = raw.strip().lower()
    if value not in allowed:
        raise ValueError(f"expected one of {sorted(allowed)}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The service's configuration; build it with `Settings.from_env()`."""

    database_url: str
    public_url: str
    host: str
    port: int
    web_concurrency: int
    secret_key: str
    page_cache_entries: int
    change_poll_seconds: float
    api_max_body_bytes: int
    idempotency_ttl_hours: int
    sqlite_busy_timeout_ms: int
    db_pool_size: int
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every declared setting from the environment, with strict casts."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = env.get(setting.name, setting.default)
            try:
                values[setting.attribute] = setting.cast(raw)
            except ValueError as exc:
                raise SettingsError(f"{setting.name}: {exc}") from None
        return cls(**values)


def check_declared() -> None:
    """Fail loudly if the Settings fields and the SETTINGS table drift apart."""
    declared = {setting.attribute for setting in SETTINGS}
    attributes = {f.name for f in fields(Settings)}
    if declared != attributes:
        raise RuntimeError(f"settings table and Settings differ: {declared ^ attributes}")
