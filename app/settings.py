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
        "Secret that signs the tracking page's form tokens and the unsubscribe links in messages. "
        "Empty: a random key made once and kept in the database, shared by every web and worker "
        "process and kept across restarts; set it to keep the key out of the database.",
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
        "EMAIL_PROVIDER",
        "email_provider",
        "auto",
        "Who sends email: `sendgrid`, `dev` (kept for the dev inbox, sent to no one), or `auto` "
        "(SendGrid when `SENDGRID_API_KEY` is set, else `dev`).",
        lambda raw: _choice(raw, {"auto", "sendgrid", "dev"}),
    ),
    Setting(
        "SMS_PROVIDER",
        "sms_provider",
        "auto",
        "Who sends SMS: `twilio`, `dev`, or `auto` (Twilio when `TWILIO_ACCOUNT_SID` is set, "
        "else `dev`).",
        lambda raw: _choice(raw, {"auto", "twilio", "dev"}),
    ),
    Setting(
        "DEV_INBOX",
        "dev_inbox",
        "false",
        "Serve the dev inbox (`/dev/inbox`, `/dev/inbox.json`) and the dev webhook receiver "
        "(`/dev/webhooks`) while a dev provider is in use. They show every brand's recipients and "
        "messages to anyone who asks: for development only (the demo turns it on). Off, they are "
        "a 404.",
        _bool,
    ),
    Setting("SENDGRID_API_KEY", "sendgrid_api_key", "", "SendGrid API key for mail send."),
    Setting(
        "SENDGRID_BASE_URL",
        "sendgrid_base_url",
        "https://api.sendgrid.com",
        "SendGrid API address (tests aim it at a local server).",
        _url,
    ),
    Setting(
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        "sendgrid_webhook_public_key",
        "",
        "The event webhook's verification key (base64 ECDSA public key from SendGrid); "
        "without it the event webhook answers 403 to everything.",
    ),
    Setting(
        "EMAIL_FROM",
        "email_from",
        "updates@whereabouts.localhost",
        "Sender address for email when the brand has not set its own `email_from`.",
    ),
    Setting("TWILIO_ACCOUNT_SID", "twilio_account_sid", "", "Twilio account SID."),
    Setting(
        "TWILIO_AUTH_TOKEN",
        "twilio_auth_token",
        "",
        "Twilio auth token: authenticates sends and verifies `X-Twilio-Signature` on callbacks "
        "and replies.",
    ),
    Setting(
        "TWILIO_BASE_URL",
        "twilio_base_url",
        "https://api.twilio.com",
        "Twilio API address (tests aim it at a local server).",
        _url,
    ),
    Setting(
        "TWILIO_FROM",
        "twilio_from",
        "",
        "Sender number (E.164) when the brand has not set its own `sms_from`.",
    ),
    Setting(
        "TWILIO_MESSAGING_SERVICE_SID",
        "twilio_messaging_service_sid",
        "",
        "A Messaging Service SID (`MG…`) to send through instead of a From number.",
    ),
    Setting(
        "RUN_WORKER",
        "run_worker",
        "false",
        "Run the message dispatcher inside `whereabouts serve` (the demo does); otherwise run "
        "`whereabouts worker` processes.",
        _bool,
    ),
    Setting(
        "WORKER_BATCH",
        "worker_batch",
        "200",
        "Messages a worker claims at a time.",
        _positive_int,
    ),
    Setting(
        "WORKER_CONCURRENCY",
        "worker_concurrency",
        "32",
        "Sends a worker keeps in flight at once.",
        _positive_int,
    ),
    Setting(
        "WORKER_LEASE_SECONDS",
        "worker_lease_seconds",
        "120",
        "How long a claim lasts; a worker that dies returns its unsent messages after this.",
        _positive_int,
    ),
    Setting(
        "WORKER_POLL_SECONDS",
        "worker_poll_seconds",
        "0.5",
        "How often an idle worker looks for due messages.",
        lambda raw: _positive_float(raw),
    ),
    Setting(
        "SEND_TIMEOUT_SECONDS",
        "send_timeout_seconds",
        "15",
        "How long one provider request may take.",
        lambda raw: _positive_float(raw),
    ),
    Setting(
        "MAX_SEND_ATTEMPTS",
        "max_send_attempts",
        "8",
        "Attempts at an email or SMS before it is marked failed (webhooks retry for 24 hours).",
        _positive_int,
    ),
    Setting(
        "WEBHOOK_ALLOW_PRIVATE",
        "webhook_allow_private",
        "false",
        "Let brand webhook endpoints point at loopback, private, link-local and other non-public "
        "addresses (`localhost`, `10.0.0.0/8`, `169.254.169.254`, `fc00::/7`...). Off, such URLs "
        "are refused when registered, and a delivery whose host resolves to one fails without a "
        "request. Turn it on only for development (the demo does, for its local receiver).",
        _bool,
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
    email_provider: str
    sms_provider: str
    dev_inbox: bool
    sendgrid_api_key: str
    sendgrid_base_url: str
    sendgrid_webhook_public_key: str
    email_from: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_base_url: str
    twilio_from: str
    twilio_messaging_service_sid: str
    run_worker: bool
    worker_batch: int
    worker_concurrency: int
    worker_lease_seconds: int
    worker_poll_seconds: float
    send_timeout_seconds: float
    max_send_attempts: int
    webhook_allow_private: bool
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

    def as_env(self) -> dict[str, str]:
        """Write the settings back as environment values (for processes started from here)."""
        out: dict[str, str] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.attribute)
            out[setting.name] = (
                ("true" if value else "false") if isinstance(value, bool) else str(value)
            )
        return out


def dev_channels(settings: Settings) -> list[str]:
    """Return the channels whose messages go to the dev provider, never to a shopper."""
    email = settings.email_provider == "dev" or (
        settings.email_provider == "auto" and not settings.sendgrid_api_key
    )
    sms = settings.sms_provider == "dev" or (
        settings.sms_provider == "auto" and not settings.twilio_account_sid
    )
    return [channel for channel, dev in (("email", email), ("sms", sms)) if dev]


def provider_warnings(settings: Settings) -> list[str]:
    """Say, for start-up logs, which channels `auto` sends nowhere for want of credentials.

    An explicit `dev` is a choice and gets no warning; `auto` without credentials is how a
    production server started without its keys would look.
    """
    missing = (
        ("email", "EMAIL_PROVIDER", settings.email_provider, "SENDGRID_API_KEY"),
        ("sms", "SMS_PROVIDER", settings.sms_provider, "TWILIO_ACCOUNT_SID"),
    )
    return [
        f"{setting}=auto and {credential} is not set: {channel} goes to the dev provider and "
        f"reaches no shopper. Set {credential} to send for real, or {setting}=dev if this is "
        "a development server."
        for channel, setting, value, credential in missing
        if value == "auto" and channel in dev_channels(settings)
    ]


def check_declared() -> None:
    """Fail loudly if the Settings fields and the SETTINGS table drift apart."""
    declared = {setting.attribute for setting in SETTINGS}
    attributes = {f.name for f in fields(Settings)}
    if declared != attributes:
        raise RuntimeError(f"settings table and Settings differ: {declared ^ attributes}")
