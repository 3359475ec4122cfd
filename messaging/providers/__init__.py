"""Who sends email and SMS, chosen by name from the settings.

    build_email_provider(settings)   EMAIL_PROVIDER: sendgrid | dev | auto
    build_sms_provider(settings)     SMS_PROVIDER:   twilio | dev | auto

`auto` picks SendGrid when SENDGRID_API_KEY is set (Twilio when TWILIO_ACCOUNT_SID is set), else
the dev inbox. The registries name each provider's `from_settings` by import string, so a
provider's library is imported only when it is chosen; adding a provider is one module and one
line here.

ValueError
 └─ ProviderConfigError    the settings choose a provider that cannot be built
ProviderError              a send or a lookup did not go through (see messaging.providers.base)

The HTTP providers share one client (messaging.providers.http: aiohttp, idle connections
dropped after 2 s, a request that never left told from one whose answer was lost) and the
helpers at the bottom: reading Retry-After and keeping personal data out of error details.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from messaging.providers.base import (
    Accepted,
    Attempt,
    Email,
    EmailProvider,
    ProviderError,
    Sighting,
    Sms,
    SmsProvider,
)

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = [
    "EMAIL_PROVIDERS",
    "SMS_PROVIDERS",
    "Accepted",
    "Attempt",
    "Email",
    "EmailProvider",
    "ProviderConfigError",
    "ProviderError",
    "Sighting",
    "Sms",
    "SmsProvider",
    "build_email_provider",
    "build_sms_provider",
]

EMAIL_PROVIDERS: Mapping[str, str] = {
    "sendgrid": "messaging.providers.sendgrid:from_settings",
    "dev": "messaging.providers.dev:from_settings",
}
SMS_PROVIDERS: Mapping[str, str] = {
    "twilio": "messaging.providers.twilio:from_settings",
    "dev": "messaging.providers.dev:from_settings",
}


class ProviderConfigError(ValueError):
    """The settings choose a provider that cannot be built (a credential is missing)."""


def build_email_provider(settings: Settings) -> EmailProvider:
    """Build the email provider that EMAIL_PROVIDER names."""
    name = settings.email_provider
    if name == "auto":
        name = "sendgrid" if settings.sendgrid_api_key else "dev"
    provider: EmailProvider = _factory(EMAIL_PROVIDERS, name, "EMAIL_PROVIDER")(settings)
    return provider


def build_sms_provider(settings: Settings) -> SmsProvider:
    """Build the SMS provider that SMS_PROVIDER names."""
    name = settings.sms_provider
    if name == "auto":
        name = "twilio" if settings.twilio_account_sid else "dev"
    provider: SmsProvider = _factory(SMS_PROVIDERS, name, "SMS_PROVIDER")(settings)
    return provider


def require(setting: str, value: str, provider: str) -> str:
    """Return a credential's value, or raise naming the setting that is missing."""
    if not value:
        raise ProviderConfigError(f"{setting} must be set to send with {provider}")
    return value


def _factory(registry: Mapping[str, str], name: str, setting: str) -> Callable[[Settings], Any]:
    try:
        target = registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ProviderConfigError(f"{setting}: no provider named {name!r} ({known})") from None
    module, _, attribute = target.partition(":")
    factory: Callable[[Settings], Any] = getattr(importlib.import_module(module), attribute)
    return factory


def parse_retry_after(value: str | None) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


_EMAIL_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE_NUMBER = re.compile(r"\+?[0-9][0-9 ().-]{5,}[0-9]")


def redact(text: str) -> str:
    """Remove email addresses and phone numbers from a provider's error text."""
    return _PHONE_NUMBER.sub("[number]", _EMAIL_ADDRESS.sub("[address]", text))
