"""Languages: every page string is translated in every shipped catalog, and app.i18n behaves.

The catalog checks extract the messages straight from the sources with Babel's own extraction
API and the method map in babel.cfg, so a template string added without running `make i18n`
(or a catalog edited without recompiling it) fails here. The formatting checks pin the exact
output of Babel 2.18 for each locale.
"""

from __future__ import annotations

import datetime as dt
import gettext
import re
import zoneinfo
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po
from babel.support import Translations
from markupsafe import Markup

from app.i18n import (
    LOCALE_DIR,
    LOCALES,
    RTL_LOCALES,
    SOURCE_LOCALE,
    Formatter,
    negotiate,
    parse_accept_language,
    template_gettext,
)

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = [locale for locale in LOCALES if locale != SOURCE_LOCALE]
# A printf-style conversion: `%(name)s` (with flags, width, precision) or a literal `%%`.
CONVERSION = re.compile(
    r"%(?:\((?P<name>\w+)\))?[-#0 +]*\d*(?:\.\d+)?(?P<type>[diouxXeEfFgGcrsa%])"
)


@dataclass(frozen=True)
class Extracted:
    msgid: str
    plural: str | None
    where: str


@cache
def extracted() -> dict[str, Extracted]:
    """Extract every message from the templates and marked Python, as `pybabel extract` does."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg, "babel.cfg")
    found: dict[str, Extracted] = {}
    for filename, lineno, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=DEFAULT_KEYWORDS
    ):
        assert context is None, f"{filename}:{lineno}: message contexts are not used here"
        if isinstance(message, tuple):
            msgid, plural = message[0], message[1]
        else:
            msgid, plural = message, None
        if not msgid:
            continue
        previous = found.get(msgid)
        if previous is not None:
            assert previous.plural == plural, (
                f"{msgid!r} is used with two plurals: {previous.where} and {filename}:{lineno}"
            )
            continue
        found[msgid] = Extracted(msgid, plural, f"{filename}:{lineno}")
    return found


@cache
def catalog(locale: str) -> Catalog:
    path = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        return read_po(po, locale=locale)


def compiled(locale: str) -> Translations:
    """Load the .mo on disk the way the app does (no cache: the file is what is shipped)."""
    loaded = Translations.load(str(LOCALE_DIR), [locale], domain="messages")
    assert isinstance(loaded, Translations), f"no compiled catalog for {locale}; run `make i18n`"
    return loaded


def placeholders(text: str) -> set[str]:
    """Return the `%(name)s` names in a message; fail on a bare `%` that would break formatting."""
    names = set()
    for match in CONVERSION.finditer(text):
        if match["type"] != "%":
            assert match["name"], f"positional placeholder in {text!r}"
            names.add(match["name"])
    rest = CONVERSION.sub("", text)
    assert "%" not in rest, f"stray % in {text!r} (write %% for a literal percent sign)"
    return names


def sample_numbers(plural_expr: str, forms: int) -> dict[int, int]:
    """One number per plural form index, as the catalog's own Plural-Forms rule picks them."""
    rule = gettext.c2py(plural_expr)
    samples: dict[int, int] = {}
    for n in range(0, 1000):
        samples.setdefault(rule(n), n)
    assert sorted(samples) == list(range(forms)), f"rule {plural_expr} never picks some form"
    return samples


# --- extraction sanity ----------------------------------------------------------------------


def test_extraction_finds_templates_python_and_plurals():
    messages = extracted()
    assert len(messages) >= 80
    assert "Track your order" in messages  # a template `_()` call
    assert "Tracking link not found" in messages  # an `N_()` mark in app/web/tracking.py
    parcels = messages["%(count)s parcel on its way"]  # a trimmed `{% trans %}` block
    assert parcels.plural == "%(count)s parcels on their way"
    assert messages["Your parcel"].plural == "Your %(count)s parcels"
    wheres = {m.where.split(":")[0].split("/")[0] for m in messages.values()}
    assert {"app", "templates"} <= wheres


def test_source_messages_have_well_formed_placeholders():
    for message in extracted().values():
        placeholders(message.msgid)
        if message.plural is not None:
            placeholders(message.plural)


# --- every shipped catalog ------------------------------------------------------------------


@pytest.mark.parametrize("locale", TRANSLATED)
def test_catalog_header_uses_babels_plural_rule(locale: str):
    cat = catalog(locale)
    expected = get_plural(locale)
    assert not cat.fuzzy, "a fuzzy header makes `pybabel compile` skip the whole catalog"
    assert str(cat.locale) == locale
    assert cat.num_plurals == expected.num_plurals
    assert cat.plural_expr == expected.plural_expr


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_page_string_is_translated(locale: str):
    cat = catalog(locale)
    problems = []
    for message in extracted().values():
        entry = cat.get(message.msgid)
        if entry is None:
            problems.append(f"missing: {message.msgid!r} ({message.where})")
            continue
        if "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {message.msgid!r}")
        if message.plural is None:
            if entry.pluralizable:
                problems.append(f"plural in catalog but not in source: {message.msgid!r}")
            elif not entry.string:
                problems.append(f"untranslated: {message.msgid!r}")
            continue
        if not entry.pluralizable or entry.id[1] != message.plural:
            problems.append(f"plural changed: {message.msgid!r} -> {message.plural!r}")
            continue
        forms = entry.string
        if len(forms) != cat.num_plurals or not all(forms):
            problems.append(f"needs {cat.num_plurals} non-empty forms: {message.msgid!r}")
    assert problems == []


@pytest.mark.parametrize("locale", TRANSLATED)
def test_no_fuzzy_entries(locale: str):
    assert [m.id for m in catalog(locale) if m.id and "fuzzy" in m.flags] == []


@pytest.mark.parametrize("locale", TRANSLATED)
def test_translations_keep_the_placeholders(locale: str):
    cat = catalog(locale)
    problems = []
    for message in extracted().values():
        entry = cat.get(message.msgid)
        if entry is None or not entry.string:
            continue  # reported by test_every_page_string_is_translated
        if message.plural is None:
            wanted = placeholders(message.msgid)
            got = placeholders(entry.string)
            if got != wanted:
                problems.append(f"{message.msgid!r}: {sorted(got)} != {sorted(wanted)}")
            else:  # formatting the way template_gettext does must work
                entry.string % dict.fromkeys(wanted, "x")
            continue
        singular, plural = placeholders(message.msgid), placeholders(message.plural)
        used: set[str] = set()
        for index, form in enumerate(entry.string):
            got = placeholders(form)
            used |= got
            # A form reads like the singular ("Your parcel") or like the plural ("Your 3 parcels").
            if got not in (singular, plural):
                problems.append(f"{message.msgid!r}[{index}]: {sorted(got)}")
            else:
                form % dict.fromkeys(singular | plural | {"num"}, 1)
        if used != singular | plural:
            problems.append(
                f"{message.msgid!r}: forms never use {sorted(singular | plural - used)}"
            )
    assert problems == []


@pytest.mark.parametrize("locale", TRANSLATED)
def test_compiled_catalog_matches_the_po(locale: str):
    """The .mo on disk carries exactly the .po's translations (catches a forgotten `make i18n`)."""
    cat = catalog(locale)
    mo = compiled(locale)
    samples = sample_numbers(cat.plural_expr, cat.num_plurals)
    stale = []
    for message in extracted().values():
        entry = cat.get(message.msgid)
        if entry is None:
            stale.append(f"{message.msgid} (not even in the .po)")
            continue
        if message.plural is None:
            if mo.gettext(message.msgid) != entry.string:
                stale.append(message.msgid)
            continue
        for index, n in samples.items():
            if mo.ngettext(message.msgid, message.plural, n) != entry.string[index]:
                stale.append(f"{message.msgid} [n={n}]")
    assert stale == [], f"{locale}: .mo is out of date with the .po; run `make i18n`"


def test_arabic_plural_forms_follow_the_cldr_categories():
    """Babel's Arabic rule puts 100-102 (CLDR "other") in form 4 and 11-99 ("many") in form 5."""
    cat = catalog("ar")
    assert cat.num_plurals == 6
    mo = compiled("ar")

    def parcels(n: int) -> str:
        text = mo.ngettext("%(count)s parcel on its way", "%(count)s parcels on their way", n)
        return text % {"count": n}

    assert parcels(1) == "1 طرد في الطريق"
    assert parcels(2) == "2 طردان في الطريق"  # two: dual
    assert parcels(3) == "3 طرود في الطريق"  # few (3-10): plural
    assert parcels(10) == "10 طرود في الطريق"
    assert parcels(11) == "11 طردًا في الطريق"  # many (11-99): accusative singular
    assert parcels(99) == "99 طردًا في الطريق"
    assert parcels(100) == "100 طرد في الطريق"  # other (100-102): genitive singular
    assert parcels(103) == "103 طرود في الطريق"
    assert parcels(111) == "111 طردًا في الطريق"


@pytest.mark.parametrize(
    ("locale", "one", "three"),
    [
        ("en", "Your parcel", "Your 3 parcels"),
        ("es", "Tu paquete", "Tus 3 paquetes"),
        ("fr", "Votre colis", "Vos 3 colis"),
        ("de", "Ihr Paket", "Ihre 3 Pakete"),
        ("ar", "طردك", "طرودك (3)"),
    ],
)
def test_template_ngettext_uses_the_catalog(locale: str, one: str, three: str):
    ngettext = template_gettext(locale)["ngettext"]
    assert ngettext("Your parcel", "Your %(count)s parcels", 1, count=1) == one
    assert ngettext("Your parcel", "Your %(count)s parcels", 3, count=3) == three


def test_french_plural_covers_zero_with_the_singular():
    ngettext = template_gettext("fr")["ngettext"]
    singular, plural = (
        "%(count)s item of %(total)s delivered",
        "%(count)s items of %(total)s delivered",
    )
    assert ngettext(singular, plural, 0, count=0, total=3) == "0 article livré sur 3"
    assert ngettext(singular, plural, 2, count=2, total=3) == "2 articles livrés sur 3"


def test_template_gettext_escapes_variables_but_not_the_catalog():
    gettext_ = template_gettext("fr")["gettext"]
    text = gettext_("Switch to %(title)s", title="<b>Mug</b>")
    assert isinstance(text, Markup)
    assert text == "Le remplacer par &lt;b&gt;Mug&lt;/b&gt;"
    assert (
        template_gettext("en")["gettext"]("Placed on %(date)s", date="Dec 9") == "Placed on Dec 9"
    )


# --- negotiate and Accept-Language ----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "customer", "accept", "brand", "expected"),
    [
        ("de", "es", "fr", "ar", "de"),  # ?lang= wins
        (None, "es", "fr", "ar", "es"),  # then the customer's locale
        ("xx", "es-MX", "fr", "ar", "es"),  # an unsupported ?lang= is skipped; regions map
        ("", None, "fr", "ar", "fr"),  # then Accept-Language
        (None, "pt-BR", "ja, es-MX;q=0.8, fr;q=0.9", "ar", "fr"),  # by q-value, unsupported skipped
        (None, None, "ja, es-MX;q=0.8", "ar", "es"),
        (None, None, "fr;q=0, de;q=0.1", "ar", "de"),  # q=0 means "not this one"
        (None, None, "ja, zh-Hant-TW", "de", "de"),  # then the brand's default
        (None, None, None, "fr_CA", "fr"),
        (None, "en", "fr", "de", "en"),  # English is a real choice, not a fallback
        (None, None, None, "xx", "en"),  # unknown everything: the source language
        ("", "", "", "", "en"),
        ("i-klingon", "zz", "*, tlh", "??", "en"),
    ],
)
def test_negotiate_order(query, customer, accept, brand, expected):
    assert negotiate(query, customer, accept, brand) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("", []),
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", ["fr-CH", "fr", "en", "de"]),
        ("de;q=0.3, es-MX, ar;q=0.6", ["es-MX", "ar", "de"]),
        ("en;q=0.5,fr;q=0.5", ["en", "fr"]),  # ties keep the header's order
        ("de;q=0, es", ["es"]),
        ("es;q=abc, fr", ["fr"]),  # a malformed q-value drops the tag
        ("es;q=-1, de", ["de"]),
        ("fr;level=1;q=0.4, de;q=0.3", ["fr", "de"]),  # other parameters are ignored
        ("*", []),
        (", ,fr", ["fr"]),
    ],
)
def test_parse_accept_language(header, expected):
    assert parse_accept_language(header) == expected


def test_parse_accept_language_reads_at_most_twenty_entries():
    header = ", ".join(["xx"] * 20 + ["fr"])
    assert parse_accept_language(header) == ["xx"] * 20
    assert negotiate(None, None, header, "de") == "de"


# --- Formatter ------------------------------------------------------------------------------

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
DAY = dt.date(2026, 12, 9)
THIN = "\u2009"  # thin space around the interval dash
NBSP = "\u00a0"
NNBSP = "\u202f"
RLM = "\u200f"
DASH = "\u2013"  # en dash between the ends of a range


def fmt(locale: str) -> Formatter:
    return Formatter(locale, PARIS)


@pytest.mark.parametrize(
    ("locale", "date", "short", "same_month", "across_months", "across_years"),
    [
        (
            "en",
            "Dec 9, 2026",
            "Dec 9",
            f"Dec 9{THIN}{DASH}{THIN}15",
            f"Nov 28{THIN}{DASH}{THIN}Dec 4",
            f"Dec 28, 2026{THIN}{DASH}{THIN}Jan 4, 2027",
        ),
        (
            "es",
            "9 dic 2026",
            "9 dic",
            f"9{DASH}15 dic",
            f"28 nov{THIN}{DASH}{THIN}4 dic",
            f"28 dic 2026{THIN}{DASH}{THIN}4 ene 2027",
        ),
        (
            "fr",
            "9 déc. 2026",
            "9 déc.",
            f"9{DASH}15 déc.",
            f"28 nov.{THIN}{DASH}{THIN}4 déc.",
            f"28 déc. 2026{THIN}{DASH}{THIN}4 janv. 2027",
        ),
        (
            "de",
            "09.12.2026",
            "9. Dez.",
            f"9.{DASH}15. Dez.",
            f"28. Nov.{THIN}{DASH}{THIN}4. Dez.",
            f"28. Dez. 2026{THIN}{DASH}{THIN}4. Jan. 2027",
        ),
        (
            "ar",
            f"09{RLM}/12{RLM}/2026",
            "9 ديسمبر",
            f"9{DASH}15 ديسمبر",
            f"28 نوفمبر {DASH} 4 ديسمبر",
            f"28 ديسمبر 2026 {DASH} 4 يناير 2027",
        ),
    ],
)
def test_dates_and_ranges(locale, date, short, same_month, across_months, across_years):
    f = fmt(locale)
    assert f.date(DAY) == date
    assert f.short_date(DAY) == short
    assert f.date_range(DAY, dt.date(2026, 12, 15)) == same_month
    assert f.date_range(dt.date(2026, 11, 28), dt.date(2026, 12, 4)) == across_months
    assert f.date_range(dt.date(2026, 12, 28), dt.date(2027, 1, 4)) == across_years
    assert f.date_range(DAY, DAY) == short  # one day collapses to a single date


@pytest.mark.parametrize(
    ("locale", "in_3_days", "tomorrow", "yesterday", "two_days_ago", "in_2_weeks"),
    [
        ("en", "in 3 days", "in 1 day", "1 day ago", "2 days ago", "in 2 weeks"),
        (
            "es",
            "dentro de 3 días",
            "dentro de 1 día",
            "hace 1 día",
            "hace 2 días",
            "dentro de 2 semanas",
        ),
        ("fr", "dans 3 jours", "dans 1 jour", "il y a 1 jour", "il y a 2 jours", "dans 2 semaines"),
        ("de", "in 3 Tagen", "in 1 Tag", "vor 1 Tag", "vor 2 Tagen", "in 2 Wochen"),
        ("ar", "خلال 3 أيام", "خلال يوم واحد", "قبل يوم واحد", "قبل يومين", "خلال أسبوعين"),
    ],
)
def test_relative_days(locale, in_3_days, tomorrow, yesterday, two_days_ago, in_2_weeks):
    f = fmt(locale)
    assert f.relative(DAY + dt.timedelta(days=3), DAY) == in_3_days
    assert f.relative(DAY + dt.timedelta(days=1), DAY) == tomorrow
    assert f.relative(DAY - dt.timedelta(days=1), DAY) == yesterday
    assert f.relative(DAY - dt.timedelta(days=2), DAY) == two_days_ago
    assert f.relative(DAY + dt.timedelta(days=14), DAY) == in_2_weeks
    assert f.relative(DAY, DAY) is None


@pytest.mark.parametrize(
    ("locale", "usd", "eur", "jpy", "cents", "kwd"),
    [
        ("en", "$129.00", "€129.00", "¥12,900", "€0.05", "KWD12.900"),
        (
            "es",
            f"129,00{NBSP}US$",
            f"129,00{NBSP}€",
            f"12.900{NBSP}JPY",
            f"0,05{NBSP}€",
            f"12,900{NBSP}KWD",
        ),
        (
            "fr",
            f"129,00{NBSP}$US",
            f"129,00{NBSP}€",
            f"12{NNBSP}900{NBSP}JPY",
            f"0,05{NBSP}€",
            f"12,900{NBSP}KWD",
        ),
        (
            "de",
            f"129,00{NBSP}$",
            f"129,00{NBSP}€",
            f"12.900{NBSP}¥",
            f"0,05{NBSP}€",
            f"12,900{NBSP}KWD",
        ),
        (
            "ar",
            f"{RLM}129.00{NBSP}US$",
            f"{RLM}129.00{NBSP}€",
            f"{RLM}12,900{NBSP}JP¥",
            f"{RLM}0.05{NBSP}€",
            f"{RLM}12.900{NBSP}د.ك.{RLM}",
        ),
    ],
)
def test_money_in_minor_units(locale, usd, eur, jpy, cents, kwd):
    f = fmt(locale)
    assert f.money(12900, "USD") == usd
    assert f.money(12900, "EUR") == eur
    assert f.money(12900, "JPY") == jpy  # the yen has no minor units
    assert f.money(5, "EUR") == cents
    assert f.money(12900, "KWD") == kwd  # the dinar has three


@pytest.mark.parametrize(
    ("locale", "number", "moment"),
    [
        ("en", "1,234,567", f"Dec 9, 2026, 11:30{NNBSP}PM"),
        ("es", "1.234.567", "9 dic 2026, 23:30"),
        ("fr", f"1{NNBSP}234{NNBSP}567", "9 déc. 2026, 23:30"),
        ("de", "1.234.567", "09.12.2026, 23:30"),
        ("ar", "1,234,567", f"09{RLM}/12{RLM}/2026، 11:30 م"),
    ],
)
def test_numbers_and_moments_in_the_brand_timezone(locale, number, moment):
    f = fmt(locale)
    late = dt.datetime(2026, 12, 9, 22, 30, tzinfo=dt.UTC)  # 23:30 in Paris
    assert f.number(1234567) == number
    assert f.moment(late) == moment
    assert f.today(dt.datetime(2026, 12, 9, 23, 30, tzinfo=dt.UTC)) == dt.date(2026, 12, 10)


@pytest.mark.parametrize("locale", LOCALES)
def test_only_arabic_is_right_to_left(locale: str):
    assert fmt(locale).rtl is (locale == "ar")
    assert (locale in RTL_LOCALES) is (locale == "ar")
