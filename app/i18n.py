"""Languages: which locale a shopper gets, the gettext catalogs, and Babel formatting.

Catalogs live in `locale/<lang>/LC_MESSAGES/messages.po` (compiled to `.mo` by `make i18n`);
English is the source language. Dates are shown in the brand's timezone.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import (
    format_date,
    format_interval,
    format_skeleton,
    format_time,
    format_timedelta,
)
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, get_currency_precision
from babel.support import NullTranslations, Translations
from markupsafe import Markup, escape

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
SOURCE_LOCALE = "en"
LOCALES = ("en", "es", "fr", "de", "ar")
RTL_LOCALES = frozenset({"ar"})


def N_(message: str) -> str:
    """Mark a message for extraction; it is translated later, where it is shown."""
    return message


def _supported(tag: str | None) -> str | None:
    """Map a language tag (`es-MX`, `fr_CA`, `de`) to a shipped locale, if any."""
    if not tag:
        return None
    try:
        language = Locale.parse(tag.strip().replace("-", "_")).language
    except (ValueError, UnknownLocaleError):
        return None
    if language == "und":
        return None
    return language if language in LOCALES else None


def parse_accept_language(header: str | None) -> list[str]:
    """Return the header's language tags, most preferred first (q=0 dropped)."""
    if not header:
        return []
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.partition(";")
        tag = tag.strip()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(1.0, float(value))
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            ranked.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


@lru_cache(maxsize=2048)
def negotiate(
    query: str | None, customer: str | None, accept_language: str | None, brand_default: str
) -> str:
    """Pick the locale: `?lang=`, then the customer's, then Accept-Language, then the brand's."""
    for candidate in (query, customer, *parse_accept_language(accept_language), brand_default):
        found = _supported(candidate)
        if found:
            return found
    return SOURCE_LOCALE


@cache
def translations(locale: str) -> NullTranslations:
    """Load the compiled catalog for a shipped locale (English needs none)."""
    if locale == SOURCE_LOCALE:
        return NullTranslations()
    loaded = Translations.load(str(LOCALE_DIR), [locale], domain="messages")
    if not isinstance(loaded, Translations):
        raise FileNotFoundError(f"no compiled catalog for {locale!r}; run `make i18n`")
    return loaded


def template_gettext(locale: str) -> dict[str, Callable[..., Markup]]:
    """Return newstyle gettext callables for templates: variables are escaped, then formatted."""
    catalog = translations(locale)

    # The catalogs are ours, so their text is trusted markup; `%` escapes the variables.
    def gettext(message: str, **variables: Any) -> Markup:
        return Markup(catalog.gettext(message)) % variables  # noqa: S704

    def ngettext(singular: str, plural: str, n: int, **variables: Any) -> Markup:
        variables.setdefault("num", n)
        return Markup(catalog.ngettext(singular, plural, n)) % variables  # noqa: S704

    return {"gettext": gettext, "ngettext": ngettext, "_": gettext}


@dataclass(frozen=True)
class Formatter:
    """Formats dates, ranges, money and counts for one locale and timezone."""

    locale: str
    timezone: zoneinfo.ZoneInfo

    @property
    def rtl(self) -> bool:
        return self.locale in RTL_LOCALES

    def date(self, value: dt.date) -> str:
        """Format a calendar date ("Dec 9, 2026")."""
        return format_date(value, "medium", locale=self.locale)

    def short_date(self, value: dt.date) -> str:
        """Format a date without the year ("Dec 9")."""
        return format_skeleton("MMMd", value, locale=self.locale)

    def date_range(self, start: dt.date, end: dt.date) -> str:
        """Format a date range the locale's way, collapsing to one date when they match."""
        skeleton = "yMMMd" if start.year != end.year else "MMMd"
        return format_interval(start, end, skeleton, locale=self.locale)

    def moment(self, value: dt.datetime) -> str:
        """Format an instant in the brand's timezone, to the minute ("Dec 9, 2026, 3:05 PM")."""
        local = value.astimezone(self.timezone)
        pattern = Locale.parse(self.locale).datetime_formats["medium"]
        return str(pattern).format(
            format_time(local, "short", locale=self.locale),
            format_date(local, "medium", locale=self.locale),
        )

    def join(self, parts: list[str]) -> Markup:
        """Join phrases the locale's way ("a, b, and c"); the phrases are escaped first."""
        # The list pattern comes from CLDR and the parts are escaped: the result is safe.
        return Markup(format_list([str(escape(part)) for part in parts], locale=self.locale))  # noqa: S704

    def today(self, now: dt.datetime) -> dt.date:
        """Return the brand's calendar date at `now`."""
        return now.astimezone(self.timezone).date()

    def relative(self, value: dt.date, today: dt.date) -> str | None:
        """Say how far a date is from today ("in 3 days", "2 days ago"); None for today."""
        if value == today:
            return None
        return format_timedelta(
            value - today, add_direction=True, granularity="day", threshold=1.0, locale=self.locale
        )

    def money(self, minor_units: int, currency: str) -> str:
        """Format an amount given in minor units ("$129.00")."""
        amount = Decimal(minor_units).scaleb(-get_currency_precision(currency))
        return format_currency(amount, currency, locale=self.locale)

    def number(self, value: int) -> str:
        """Format a count with the locale's digits and grouping."""
        return format_decimal(value, locale=self.locale)
