"""Render a message (email subject, text and HTML; SMS) from its context, in the shopper's language.

Templates live in `templates/messages/` as `<trigger>.<channel>.<part>`; the lead news item picks
the template, and the email lists every news item through the `_news.email.*` partials. A brand
may override any template with its own source: overrides come first in the loader and may extend
the shipped template as `{% extends "default:eta_changed.email.html" %}`. Defaults and overrides
render in one Jinja sandbox family, so brand wording never reaches Python internals.

Errors::

    ValueError
     └── TemplateProblem    a template is unknown, does not compile, or breaks the sandbox
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
import zoneinfo
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import css_inline
from babel import Locale
from babel.dates import format_interval, format_skeleton, format_time
from jinja2 import (
    BaseLoader,
    BytecodeCache,
    ChoiceLoader,
    DictLoader,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
)
from jinja2.bccache import Bucket
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from app.i18n import LOCALES, RTL_LOCALES, SOURCE_LOCALE, Formatter, negotiate, translations
from app.themes.contrast import parse_color
from app.themes.registry import COLOR_TOKENS, check_token_values, load_themes
from messaging.context import (
    OPTIONAL_EMAIL_TRIGGERS,
    TRIGGERS,
    BrandInfo,
    ChoiceInfo,
    LineInfo,
    MessageContext,
    NewsItem,
    OrderInfo,
    ParcelInfo,
)
from messaging.segments import count_segments, normalize_sms

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "messages"
PARTS = ("email.subject", "email.text", "email.html", "sms.text")
SMS_MAX_SEGMENTS = 2
MIN_TITLE_ROOM = 12  # characters of a product title an SMS keeps, at the least
ENVIRONMENT_CACHE = 128
NO_OVERRIDES: Mapping[str, str] = MappingProxyType({})

# Theme tokens the email layout uses; the default theme fills in what a brand leaves out.
_LOOK = (*COLOR_TOKENS, "font_stack", "radius")
_LOOK_INPUTS = (*_LOOK, "muted")  # "muted_text" falls back to "muted"
_NOT_TEXT = object()  # stands for a token value that is not a string (always rejected)
LOOK_CACHE = 256
FORMAT_CACHE = 4096
_BLANK_LINES = re.compile(r"\n{3,}")
# A date abbreviation ("déc.", "Nov.") at the end of a sentence already carries its period.
_DOUBLE_PERIOD = re.compile(r"(?<=\w)\.\.(?=\s|<|$)")
_PENDING = frozenset({"backordered", "in_stock"})
_END_OF_DAY = dt.time(23, 59)  # a choice deadline is the last second of a day
# SMS spellings that keep a GSM-7 language in the GSM-7 alphabet. French "août" loses its
# circumflex as the 1990 spelling reform allows ("aout"): one û would make the SMS UCS-2.
_SMS_SPELLINGS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "fr": (("août", "aout"), ("Août", "Aout")),
}
# CLDR puts a right-to-left mark in Arabic numeric dates ("9\u200f/12"). An SMS pays a unit for
# each, and without them a phone shows Latin digits as one left-to-right run, "9/12": the way
# Arabic readers type a date, day first.
_BIDI_MARKS = str.maketrans("", "", "\u200e\u200f\u061c")


class TemplateProblem(ValueError):
    """A message template is unknown, does not compile, or does something the sandbox forbids."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedSms:
    body: str
    segments: int
    encoding: str
    units: int


@dataclass(frozen=True)
class EtaMove:
    """One line's estimate before and after an ETA change."""

    line: LineInfo
    later: bool
    old_ship_by: dt.date | None
    old_from: dt.date | None
    old_to: dt.date | None
    new_ship_by: dt.date | None
    new_from: dt.date | None
    new_to: dt.date | None


@dataclass(frozen=True)
class Story:
    """One news item with its references resolved, as the templates read it."""

    trigger: str
    data: Mapping[str, Any]
    lines: tuple[LineInfo, ...] = ()
    parcel: ParcelInfo | None = None
    choices: tuple[ChoiceInfo, ...] = ()
    moves: tuple[EtaMove, ...] = ()
    following: tuple[LineInfo, ...] = ()  # lines of the order still to come after a parcel
    deadline: dt.datetime | None = None
    default_action: str | None = None
    decision: str | None = None
    defaulted: bool = False
    alternative: str | None = None  # the title switched to
    status: str | None = None  # shipment_exception: exception | lost | returned
    promised: dt.date | None = None
    carrier_eta: dt.date | None = None
    span_from: dt.date | None = None  # delivery range covering every line the news is about
    span_to: dt.date | None = None
    replies: Mapping[str, str] = field(default_factory=dict)  # keep/switch/refund -> SMS reply

    @property
    def choice(self) -> ChoiceInfo | None:
        return self.choices[0] if self.choices else None


@dataclass(frozen=True)
class MessageFormatter(Formatter):
    """The page's formatter plus the short forms an SMS needs, each result formatted once.

    Babel looks its patterns up and parses them on every call, and messages repeat the same
    dates and counts: results are memoized per formatter (locale, timezone) and arguments.
    """

    def date(self, value: dt.date) -> str:
        return _formatted(self, "date", value)

    def short_date(self, value: dt.date) -> str:
        return _formatted(self, "short_date", value)

    def date_range(self, start: dt.date, end: dt.date) -> str:
        return _formatted(self, "date_range", start, end)

    def moment(self, value: dt.datetime) -> str:
        return _formatted(self, "moment", value)

    def short_moment(self, value: dt.datetime) -> str:
        """Format an instant without the year, in the timezone ("Dec 9, 11:30 PM")."""
        return _formatted(self, "short_moment", value)

    def number(self, value: int) -> str:
        return _formatted(self, "number", value)


def _short_moment(fmt: MessageFormatter, value: dt.datetime) -> str:
    local = value.astimezone(fmt.timezone)
    pattern = Locale.parse(fmt.locale).datetime_formats["short"]
    return str(pattern).format(
        format_time(local, "short", locale=fmt.locale), fmt.short_date(local.date())
    )


def _numeric_date(fmt: MessageFormatter, value: dt.date) -> str:
    return format_skeleton("Md", value, locale=fmt.locale).translate(_BIDI_MARKS)


def _numeric_range(fmt: MessageFormatter, start: dt.date, end: dt.date) -> str:
    return str(format_interval(start, end, "Md", locale=fmt.locale)).translate(_BIDI_MARKS)


_FORMATS: Mapping[str, Any] = {
    "date": Formatter.date,
    "short_date": Formatter.short_date,
    "date_range": Formatter.date_range,
    "moment": Formatter.moment,
    "short_moment": _short_moment,
    "number": Formatter.number,
    "numeric_date": _numeric_date,
    "numeric_range": _numeric_range,
}


@lru_cache(maxsize=FORMAT_CACHE)
def _formatted(fmt: MessageFormatter, name: str, *args: Any) -> str:
    """Format once per formatter, format and arguments (all hashable values)."""
    return str(_FORMATS[name](fmt, *args))


@dataclass(frozen=True)
class SmsFormatter(MessageFormatter):
    """Dates as an SMS writes them: in the SMS alphabet where the language allows, brief on demand.

    Brief dates leave out what the reader supplies: the years of a range (it is weeks ahead, not
    a year) and the time of a deadline at the very end of the shopper's day ("by Dec 9").
    Numeric dates write the day and month in digits, in the locale's order ("12/9", "9/12").
    """

    brief: bool = False
    numeric: bool = False

    def date(self, value: dt.date) -> str:
        return _spell(self.locale, super().date(value))

    def short_date(self, value: dt.date) -> str:
        if self.numeric:
            return _formatted(self, "numeric_date", value)
        return _spell(self.locale, super().short_date(value))

    def date_range(self, start: dt.date, end: dt.date) -> str:
        if self.numeric:
            return _formatted(self, "numeric_range", start, end)
        if self.brief:
            return _spell(self.locale, format_interval(start, end, "MMMd", locale=self.locale))
        return _spell(self.locale, super().date_range(start, end))

    def moment(self, value: dt.datetime) -> str:
        return _spell(self.locale, super().moment(value))

    def short_moment(self, value: dt.datetime) -> str:
        local = value.astimezone(self.timezone)
        if self.brief and local.time() >= _END_OF_DAY:
            return self.short_date(local.date())
        return _spell(self.locale, super().short_moment(value))


@dataclass(frozen=True)
class Room:
    """What an SMS keeps; the renderer gives up the least it can to fit two segments.

    `brief` picks the brief wording: the order number and secondary details are left to the link
    (the page has them all), dates are brief. Without `titles` a choice names "an item"; without
    `refs` the reply options do not name the choice's short ref (a bare "1" from a number with
    several orders open gets a question back: which order?). `tight` picks the tightest wording:
    a choice's news in a few words and its options as a menu, one a line, and the opt-out line
    as a label ("Opt out: STOP"). `numeric` writes dates in digits ("9/12" for December 9).
    """

    brief: bool = False
    titles: bool = True
    refs: bool = True
    tight: bool = False
    numeric: bool = False


FULL = Room()
# Least loss first. A short ref outweighs a title (without it a reply costs another exchange),
# but once the refs are gone the titles may fit again. The tight wording and then numeric dates
# come last: a month's name cannot be misread, "9/12" can by a reader used to month first.
_LADDER = (
    FULL,
    Room(brief=True),
    Room(brief=True, titles=False),
    Room(brief=True, refs=False),
    Room(brief=True, titles=False, refs=False),
    Room(brief=True, titles=False, refs=False, tight=True),
    Room(brief=True, titles=False, refs=False, tight=True, numeric=True),
)


class Clip:
    """Shorten product titles in an SMS once the renderer has had to pick a room for them."""

    def __init__(self, room: int | None = None) -> None:
        self.room = room
        self.lengths: list[int] = []

    def __call__(self, text: str) -> str:
        self.lengths.append(len(text))
        if self.room is None or len(text) <= self.room:
            return text
        return text[: self.room - 3].rstrip() + "..."


class _CompiledTemplates(BytecodeCache):
    """Share compiled templates, in memory, among the environments of one renderer."""

    def __init__(self) -> None:
        # Each locale and each brand's overrides get an environment of their own: without this,
        # each would compile the shipped templates again. Jinja checks the source's checksum.
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


def _public_attributes(*classes: type) -> frozenset[tuple[type, str]]:
    """Return (class, name) for the fields, properties and methods templates may read."""
    return frozenset(
        (cls, name)
        for cls in classes
        for name in {f.name for f in fields(cls)} | set(dir(cls))
        if not name.startswith("_")
    )


# Our own frozen data and formatters, read thousands of times per render. The sandbox allows each
# of these attributes (public, on objects that are neither functions, types nor mutable
# containers); checking them took a fifth of a render under cProfile: it answers from this set.
_DATA_ATTRIBUTES = _public_attributes(
    MessageContext,
    BrandInfo,
    OrderInfo,
    LineInfo,
    ParcelInfo,
    ChoiceInfo,
    NewsItem,
    Story,
    EtaMove,
    Room,
    MessageFormatter,
    SmsFormatter,
)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, also closed to the timezone object (its class methods touch shared caches)."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if (type(obj), attr) in _DATA_ATTRIBUTES:
            return True
        if isinstance(obj, zoneinfo.ZoneInfo) and attr != "key":
            return False
        return bool(super().is_safe_attribute(obj, attr, value))


class MessageRenderer:
    """Render message templates; one sandboxed environment per locale and set of overrides."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.templates_dir = templates_dir
        self.names = frozenset(
            path.name for path in templates_dir.iterdir() if path.name.endswith(PARTS)
        )
        self._defaults = FileSystemLoader(templates_dir)
        self._compiled = _CompiledTemplates()
        self._fallback = _look_key(load_themes()["default"].tokens)
        self._envs: OrderedDict[tuple[str, str], _Sandbox] = OrderedDict()
        self._lock = threading.Lock()
        # Remote stylesheets are never fetched: a brand template must not make us call out.
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)

    def email(
        self, ctx: MessageContext, overrides: Mapping[str, str] = NO_OVERRIDES
    ) -> RenderedEmail:
        """Render the email for the context's news, led by its most important item."""
        env, values = self._prepare(ctx, overrides)
        trigger = ctx.lead.trigger
        subject = " ".join(_periods(self._render(env, f"{trigger}.email.subject", values)).split())
        values["subject"] = subject
        text = _periods(self._render(env, f"{trigger}.email.text", values))
        text = _BLANK_LINES.sub("\n\n", "\n".join(line.rstrip() for line in text.splitlines()))
        html = self._inliner.inline(_periods(self._render(env, f"{trigger}.email.html", values)))
        return RenderedEmail(subject=subject, text=text.strip() + "\n", html=html)

    def sms(self, ctx: MessageContext, overrides: Mapping[str, str] = NO_OVERRIDES) -> RenderedSms:
        """Render the SMS, giving up as little as it can (title length, then detail) to fit.

        The ladder, least loss first: the full wording, the brief wording, a choice without its
        titles, replies without the short ref (with titles, then without), the tight wording,
        then numeric dates; at each step titles are clipped as little as needed, never below
        MIN_TITLE_ROOM. The first rendering in two segments wins; when none fits, the first that
        reaches the fewest segments any step can.
        """
        env, values = self._prepare(ctx, overrides)
        name = f"{ctx.lead.trigger}.sms.text"
        lead: Story = values["lead"]
        fmt: MessageFormatter = values["fmt"]
        formatters = {
            (brief, numeric): SmsFormatter(fmt.locale, fmt.timezone, brief=brief, numeric=numeric)
            for brief in (False, True)
            for numeric in (False, True)
        }
        bare = lead
        if lead.choice and lead.replies != _replies(lead.choice, several_orders=False):
            bare = replace(lead, replies=_replies(lead.choice, several_orders=False))

        tried: dict[tuple[Room, int | None], tuple[RenderedSms, list[int]]] = {}

        def attempt(room: Room, width: int | None) -> tuple[RenderedSms, list[int]]:
            if (room, width) in tried:
                return tried[room, width]
            story = lead if room.refs else bare
            clip = Clip(width)
            body = self._render(
                env,
                name,
                {
                    **values,
                    "room": room,
                    "clip": clip,
                    "fmt": formatters[room.brief, room.numeric],
                    "lead": story,
                    "stories": (story, *values["stories"][1:]),
                },
            )
            body = _tidy_sms(normalize_sms(body))
            count = count_segments(body)
            sms = RenderedSms(body, count.segments, count.encoding, count.units)
            tried[room, width] = sms, clip.lengths
            return sms, clip.lengths

        def fit(target: int) -> tuple[RenderedSms | None, RenderedSms]:
            """Return the first rendering in `target` segments (if any), and the first shortest."""
            shortest: RenderedSms | None = None
            seen: set[str] = set()
            rooms: set[Room] = set()
            for step in _LADDER:
                # Only a choice names "an item" and only a short ref can be left out: a step that
                # gives up what this SMS does not have is the step it equals, tried once.
                room = replace(
                    step, titles=step.titles or not lead.choice, refs=step.refs or bare is lead
                )
                if room in rooms:
                    continue
                rooms.add(room)
                sms, titles = attempt(room, None)
                if sms.body in seen:
                    continue  # the template gives nothing up at this step (a brand's own, say)
                seen.add(sms.body)
                if shortest is None or sms.segments < shortest.segments:
                    shortest = sms
                if sms.segments <= target:
                    return sms, shortest
                longest = max(titles, default=0)
                if longest <= MIN_TITLE_ROOM:
                    continue
                clipped, _ = attempt(room, MIN_TITLE_ROOM)
                if clipped.segments < shortest.segments:
                    shortest = clipped
                if clipped.segments > target:
                    continue
                # The longest titles that still fit: a binary search, a few renders at most.
                best, fits, too_long = clipped, MIN_TITLE_ROOM, longest
                while too_long - fits > 1:
                    width = (fits + too_long) // 2
                    sms, _ = attempt(room, width)
                    if sms.segments <= target:
                        best, fits = sms, width
                    else:
                        too_long = width
                return best, shortest
            assert shortest is not None  # FULL is always tried
            return None, shortest

        found, shortest = fit(SMS_MAX_SEGMENTS)
        if found is None:  # too long even at its briefest: aim for the fewest segments it can
            found = fit(shortest.segments)[0] or shortest
        return found

    def check_override(self, name: str, source: str) -> None:
        """Reject a brand template that is unknown, does not compile or breaks the sandbox."""
        if name not in self.names:
            known = ", ".join(sorted(self.names))
            raise TemplateProblem(f"unknown template {name!r}; known templates: {known}")
        overrides = {name: source}
        env = self._environment(SOURCE_LOCALE, overrides)
        try:
            env.parse(source, name=name)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{name}, line {exc.lineno}: {exc.message}") from exc
        # Sandbox checks happen while rendering: try the template on sample news.
        trigger, _, _ = name.partition(".")
        for sample in TRIGGERS if name.startswith("_") else (trigger,):
            ctx = sample_context(sample)
            if ".email." in name or name.startswith("_"):
                self.email(ctx, overrides)
            if ".sms." in name or name.startswith("_"):
                self.sms(ctx, overrides)

    # Internals -----------------------------------------------------------------------

    def _prepare(
        self, ctx: MessageContext, overrides: Mapping[str, str]
    ) -> tuple[_Sandbox, dict[str, Any]]:
        locale = ctx.locale if ctx.locale in LOCALES else negotiate(None, ctx.locale, None, "")
        fmt = MessageFormatter(locale, zoneinfo.ZoneInfo(ctx.timezone))
        stories = tuple(_story(ctx, item) for item in ctx.news)
        lead = stories[0]
        values: dict[str, Any] = {
            "ctx": ctx,
            "brand": ctx.brand,
            "order": ctx.order,
            "stories": stories,
            "lead": lead,
            # Extra choices in the lead news are answered on the page, like the other news.
            "more": len(stories) - 1 + max(0, len(lead.choices) - 1),
            "fmt": fmt,
            "locale": locale,
            "rtl": locale in RTL_LOCALES,
            "look": _look(_look_key(ctx.brand.tokens), self._fallback),
            "logo": _logo(ctx.brand),
            "unsubscribe_url": ctx.unsubscribe_url
            if any(item.trigger in OPTIONAL_EMAIL_TRIGGERS for item in ctx.news)
            else None,
            "clip": Clip(),
            "room": FULL,
        }
        return self._environment(locale, overrides), values

    def _environment(self, locale: str, overrides: Mapping[str, str]) -> _Sandbox:
        digest = hashlib.sha256()
        for name in sorted(overrides):
            digest.update(f"{len(name)}:{name}{len(overrides[name])}:{overrides[name]}".encode())
        key = (locale, digest.hexdigest())
        with self._lock:
            env = self._envs.get(key)
            if env is not None:
                self._envs.move_to_end(key)
                return env
        env = self._build(locale, overrides)
        with self._lock:
            self._envs[key] = env
            while len(self._envs) > ENVIRONMENT_CACHE:
                self._envs.popitem(last=False)
        return env

    def _build(self, locale: str, overrides: Mapping[str, str]) -> _Sandbox:
        loaders: list[BaseLoader] = []
        if overrides:
            loaders.append(DictLoader(dict(overrides)))
        loaders += [self._defaults, PrefixLoader({"default": self._defaults}, delimiter=":")]
        env = _Sandbox(
            loader=ChoiceLoader(loaders),
            autoescape=lambda name: name is not None and name.endswith(".html"),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            bytecode_cache=self._compiled,
        )
        env.policies["ext.i18n.trimmed"] = True
        # Jinja's newstyle wrapper escapes the variables only where autoescape is on, so the
        # plain catalog functions serve HTML and text alike (template_gettext always escapes).
        catalog = translations(locale)
        env.install_gettext_callables(  # type: ignore[attr-defined]
            catalog.gettext, catalog.ngettext, newstyle=True
        )
        return env

    def _render(self, env: _Sandbox, name: str, values: Mapping[str, Any]) -> str:
        try:
            return env.get_template(name).render(values)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{exc.name or name}, line {exc.lineno}: {exc.message}") from exc
        except TemplateError as exc:
            raise TemplateProblem(f"{name}: {exc.message or exc}") from exc
        # A brand template can still call a helper the wrong way: that is its problem too.
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            raise TemplateProblem(f"{name}: {type(exc).__name__}: {exc}") from exc


def _spell(locale: str, text: str) -> str:
    for word, spelling in _SMS_SPELLINGS.get(locale, ()):
        text = text.replace(word, spelling)
    return text


def _periods(text: str) -> str:
    return _DOUBLE_PERIOD.sub(".", text)


def _tidy_sms(text: str) -> str:
    """Collapse the blank runs a template leaves: one space between words, one newline at most."""
    # A clipped title ends a sentence with its own "...": the sentence's period goes.
    text = _periods(text).replace("....", "...")
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _look_key(tokens: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return the token values the look depends on, hashable (what is not text is not a token)."""
    values = (tokens.get(name) for name in _LOOK_INPUTS)
    return tuple(v if isinstance(v, str) else (_NOT_TEXT if v else None) for v in values)


@lru_cache(maxsize=LOOK_CACHE)
def _look(values: tuple[Any, ...], fallback: tuple[Any, ...]) -> Mapping[str, Markup]:
    """Return the theme tokens the email uses, checked so they are safe inside a <style>.

    Keyed by the values it reads (`_look_key`): parsing colours is the dearest part of a render,
    and a brand's tokens change rarely. The result is shared, so it is read-only.
    """
    tokens = dict(zip(_LOOK_INPUTS, values, strict=True))
    defaults = dict(zip(_LOOK_INPUTS, fallback, strict=True))
    look: dict[str, Markup] = {}
    for name in _LOOK:
        value = tokens.get(name) or (tokens.get("muted") if name == "muted_text" else None)
        if not value or check_token_values({name: value}):
            value = defaults[name]
        if name in COLOR_TOKENS:
            value = parse_color(value).hex
        # A checked token (a colour, font names, a length) cannot close the <style> block.
        look[name] = Markup(value)  # noqa: S704
    return MappingProxyType(look)


def _logo(brand: BrandInfo) -> str | None:
    logo = brand.logo_url or brand.tokens.get("logo")
    return logo if logo and not check_token_values({"logo": logo}) else None


def _day(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value) if value else None


def _span(lines: tuple[LineInfo, ...]) -> tuple[dt.date | None, dt.date | None]:
    """Return the delivery range covering every line, or nothing if one has no date yet."""
    if not lines or any(line.delivery_from is None or line.delivery_to is None for line in lines):
        return None, None
    return (
        min(line.delivery_from for line in lines if line.delivery_from),
        max(line.delivery_to for line in lines if line.delivery_to),
    )


def _estimate(value: Mapping[str, Any] | None) -> tuple[dt.date | None, ...]:
    value = value or {}
    delivery = value.get("delivery") or (None, None)
    return _day(value.get("ship_by")), _day(delivery[0]), _day(delivery[1])


def _story(ctx: MessageContext, item: NewsItem) -> Story:
    """Resolve a news item's references (lines, parcel, choices) against the order."""
    order, data, trigger = ctx.order, item.data, item.trigger
    lines = {line.ref: line for line in order.lines}
    choices = {choice.id: choice for choice in order.choices}
    refs = [data.get("line"), *data.get("lines", ())]
    picked = tuple(lines[ref] for ref in refs if isinstance(ref, str) and ref in lines)
    fields: dict[str, Any] = {}
    if trigger == "partial_shipment":
        picked = tuple(line for line in order.lines if line.status in _PENDING)
        fields["following"] = picked
    elif trigger == "eta_changed":
        fields["moves"] = tuple(
            EtaMove(lines[move["line"]], move.get("direction") != "earlier", *old, *new)
            for move in data.get("lines", ())
            if move.get("line") in lines
            for old, new in [(_estimate(move.get("old")), _estimate(move.get("new")))]
        )
        picked = tuple(move.line for move in fields["moves"])
    elif trigger in ("window_at_risk", "window_expired"):
        chosen = tuple(choices[c] for c in data.get("choices", ()) if c in choices)
        deadline = data.get("deadline")
        fields.update(choices=chosen, default_action=data.get("default_action"))
        fields["deadline"] = dt.datetime.fromisoformat(deadline) if deadline else None
        if chosen:
            fields["deadline"] = fields["deadline"] or chosen[0].deadline
            fields["default_action"] = fields["default_action"] or chosen[0].default_action
            fields["replies"] = _replies(chosen[0], ctx.several_orders)
    elif trigger == "choice_confirmed":
        choice = choices.get(data.get("choice", -1))
        titles = {alt.get("sku"): alt.get("title") for alt in choice.alternatives} if choice else {}
        fields.update(
            choices=(choice,) if choice else (),
            decision=data.get("decision") or (choice.decision if choice else None),
            defaulted=bool(data.get("defaulted")),
            alternative=(choice.alternative_title if choice else None)
            or titles.get(data.get("alternative")),
        )
    start, end = _span(picked)
    return Story(
        trigger=trigger,
        data=MappingProxyType(dict(data)),
        lines=picked,
        parcel=next((p for p in order.parcels if p.ref == data.get("shipment")), None),
        promised=_day(data.get("promised")),
        carrier_eta=_day(data.get("carrier_eta")),
        status=data.get("status"),
        span_from=start,
        span_to=end,
        **fields,
    )


def _replies(choice: ChoiceInfo, several_orders: bool) -> Mapping[str, str]:
    """Return the SMS reply for each option, naming the choice when the number has several."""
    suffix = f" {choice.short_ref}" if several_orders and choice.short_ref else ""
    return MappingProxyType({"keep": f"1{suffix}", "switch": f"2{suffix}", "refund": f"3{suffix}"})


def sample_context(trigger: str, locale: str = SOURCE_LOCALE) -> MessageContext:
    """Build a small but complete context for one trigger: used to try a brand's template."""
    day, deadline = dt.date(2026, 12, 1), dt.datetime(2026, 12, 8, 23, 0, tzinfo=dt.UTC)
    waiting = LineInfo("2", "Wool scarf", 2, "backordered", "standard", day, day, day, None, 3)
    silk = ({"sku": "S2", "title": "Silk scarf"},)
    choice = ChoiceInfo(1, "2", "Wool scarf", "at_risk", "open", deadline, "keep", silk, "A1")
    estimate = {"ship_by": day.isoformat(), "delivery": [day.isoformat(), day.isoformat()]}
    window = {
        "lines": ["2"],
        "choices": [1],
        "deadline": deadline.isoformat(),
        "default_action": "keep",
    }
    data: dict[str, dict[str, Any]] = {
        "backordered": {"lines": ["2"]},
        "partial_shipment": {"shipment": "P1"},
        "shipment_delayed": {
            "shipment": "P1",
            "promised": "2026-11-28",
            "carrier_eta": "2026-12-02",
        },
        "eta_changed": {
            "lines": [{"line": "2", "direction": "later", "old": estimate, "new": estimate}]
        },
        "items_ready": {"lines": ["2"]},
        "window_at_risk": window,
        "window_expired": window,
        "choice_confirmed": {"choice": 1, "line": "2", "decision": "switch", "alternative": "S2"},
        "shipment_exception": {"shipment": "P1", "status": "lost"},
    }
    order = OrderInfo(
        number="1001",
        tracking_url="https://track.example/t/sample",
        sms_url="https://track.example/s/sample",
        customer_name="Sam",
        lines=(LineInfo("1", "Canvas tote", 1, "shipped"), waiting),
        parcels=(ParcelInfo("P1", "ups", "1Z9", "in_transit", lines=(("Canvas tote", 1),)),),
        choices=(choice,),
    )
    return MessageContext(
        brand=BrandInfo("sample", "Sample Shop", "UTC", support_email="help@shop.example"),
        order=order,
        news=(NewsItem(trigger, "sample", data[trigger]),),
        locale=locale,
        timezone="UTC",
        first_sms=True,
        several_orders=True,
        unsubscribe_url="https://track.example/unsubscribe/sample",
    )
