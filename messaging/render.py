"""Render a message (email subject, text and HTML; SMS) from its context, in the shopper's language.

Templates live in `templates/messages/` as `<trigger>.<channel>.<part>`; the lead news item picks
the template, and the email lists every news item through the `_news.email.*` partials. A brand
may override any template with its own source: overrides come first in the loader and may extend
the shipped template as `{% extends "default:eta_changed.email.html" %}`. Defaults and overrides
render in one Jinja sandbox family, so brand wording never reaches Python internals.

Brand templates run in the worker that sends for every brand, so each template part renders on a
budget: TIME_BUDGET_MS of the thread's CPU time for one message (all the renders an SMS needs to
fit, together: a machine busy elsewhere does not use it up), at most
OUTPUT_LIMITS characters of output, and no value (text, list, a macro's output) longer than
VALUE_LIMIT. The sandbox checks the clock at every loop item, call, filter, operator and include,
and checks sizes before the steps that could build a huge value in one go (`*`, `**`, joins,
replaces, format widths) and after every other one. A container (list, tuple, dict, namespace)
made text in one step, by `{{ value }}`, a text filter (`string`, `tojson`, `pprint`, `upper`...),
`~`, `%`, `format` or a join, has the length of its text estimated first, item by item.

Errors::

    ValueError
     └── TemplateProblem            a template is unknown, does not compile, or breaks the sandbox
          └── RenderBudgetExceeded  a template took too long, or made too much text
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import math
import re
import string
import threading
import time
import zoneinfo
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, replace
from functools import cache, lru_cache, wraps
from itertools import chain
from pathlib import Path
from types import BuiltinMethodType, FunctionType, MappingProxyType, MethodType
from typing import Any, NoReturn, TypeVar

import css_inline
from babel import Locale
from babel.dates import format_interval, format_skeleton, format_time
from babel.support import NullTranslations
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
    nodes,
    pass_environment,
    pass_eval_context,
)
from jinja2.bccache import Bucket
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import FILTERS, make_attrgetter, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from markupsafe import Markup, escape

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

# The render budget of one template part for one message. Ours take under a millisecond warm and
# about 10 ms on a cold worker (compiling is not counted); a brand's may take 20 times that.
TIME_BUDGET_MS = 200
# Characters a part may render. Ours render at most 2,745 (HTML, before CSS is inlined), 823
# (text), 103 (subject) and 238 (SMS, before blank runs are collapsed). Gmail clips HTML past
# 102 KB and Twilio refuses an SMS past 1,600 characters: these leave room, and no more.
OUTPUT_LIMITS: Mapping[str, int] = MappingProxyType(
    {"email.subject": 1_000, "email.text": 64_000, "email.html": 256_000, "sms.text": 4_000}
)
# Characters or items of any one value a template builds: a string, a list, a macro's output.
VALUE_LIMIT = max(OUTPUT_LIMITS.values())
NUMBER_BITS_LIMIT = 4_096  # an integer of 1,234 digits: more than any sum a message shows

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


class RenderBudgetExceeded(TemplateProblem):
    """A template took longer than its time budget, or made more text than its part may have."""


class RenderTooSlow(RenderBudgetExceeded):
    """A template took longer than its time budget (CPU time, which garbage collection and cold
    caches count in too)."""


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
    quiet_since: dt.date | None = None  # shipment_delayed, a stall: the carrier's last news, local
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
    With `whole_days`, a deadline that falls inside the shopper's day is written as the last whole
    day before it ("by 9/12" for 10/12, 7:59 AM): earlier than the deadline, never later, so a
    shopper who replies by then is in time.
    """

    brief: bool = False
    numeric: bool = False
    whole_days: bool = False

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
        if local.time() >= _END_OF_DAY:
            if self.brief or self.whole_days:
                return self.short_date(local.date())
        elif self.whole_days:
            return self.short_date(local.date() - dt.timedelta(days=1))
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
    Without `hours`, a deadline that falls inside the shopper's day (the brand's day ends at
    another hour in another timezone) is written as the last whole day before it, without its
    time: "by 9/12" for a deadline at 7:59 on December 10. The shopper loses those hours, never
    gains any. Without `more`, an SMS that carries other updates does not say so ("And one more
    update."): the link shows them all, and the news it does tell holds whatever they say.
    """

    brief: bool = False
    titles: bool = True
    refs: bool = True
    tight: bool = False
    numeric: bool = False
    hours: bool = True
    more: bool = True


FULL = Room()
# Least loss first. A short ref outweighs a title (without it a reply costs another exchange),
# but once the refs are gone the titles may fit again. The tight wording and then numeric dates
# come last: a month's name cannot be misread, "9/12" can by a reader used to month first. Last
# of all, a deadline's hours: only a shopper outside the brand's timezone has any (the brand's
# 23:59 is their 7:59, whose time costs the units a first SMS's opt-out line needs), and giving
# them up gives up time to answer.
_WITH_MORE = (
    FULL,
    Room(brief=True),
    Room(brief=True, titles=False),
    Room(brief=True, refs=False),
    Room(brief=True, titles=False, refs=False),
    Room(brief=True, titles=False, refs=False, tight=True),
    Room(brief=True, titles=False, refs=False, tight=True, numeric=True),
    Room(brief=True, titles=False, refs=False, tight=True, numeric=True, hours=False),
)
# When none of those fits (a first Arabic SMS that carries another update: its opt-out line takes
# the units the mention needs), the mention of the other updates goes, and the ladder is climbed
# again from the top without it: what had to go to make room for it may fit again.
_LADDER = (*_WITH_MORE, *(replace(step, more=False) for step in _WITH_MORE))


@cache
def _steps(*, choice: bool, refs: bool, hours: bool, more: bool) -> tuple[Room, ...]:
    """Return the ladder an SMS climbs: with a choice or not, with short refs to leave out or not,
    with a deadline's hours to give up or not, with other updates to mention or not.

    Only a choice names "an item", only a short ref can be left out, only a deadline inside the
    shopper's day, whose day before is still ahead, has hours to give up, and only an SMS with
    other updates mentions them: a step that gives up what the SMS does not have is the step it
    equals, taken once.
    """
    rooms = (
        replace(
            step,
            titles=step.titles or not choice,
            refs=step.refs or not refs,
            hours=step.hours or not hours,
            more=step.more or not more,
        )
        for step in _LADDER
    )
    return tuple(dict.fromkeys(rooms))


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
# The formatters' methods that take a date or a number and make a short text.
_QUICK_NAMES = ("date", "short_date", "date_range", "moment", "short_moment", "number", "money")
_QUICK_METHODS = frozenset(
    getattr(cls, name)
    for cls in (MessageFormatter, SmsFormatter)
    for name in (*_QUICK_NAMES, "relative", "today")
)
# The attributes of the mappings templates read (`look.accent`, `lead.replies.keep`): any other
# name is a key to them, which the sandbox looks up once reading the attribute has failed.
_MAPPING_ATTRIBUTES: Mapping[type, frozenset[str]] = {
    kind: frozenset(dir(kind)) for kind in (dict, MappingProxyType)
}


# The render budget ------------------------------------------------------------------------

_V = TypeVar("_V")
_Text = str | bytes
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)
# Values whose text (str, repr, JSON) holds their items' text: checked before it is made.
_DICT_VIEWS: tuple[type[Iterable[Any]], ...] = (
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)
_SEQUENCES: tuple[type[Iterable[Any]], ...] = (list, tuple, set, frozenset, *_DICT_VIEWS)
_MAPPINGS = (dict, MappingProxyType)
_CONTAINERS: tuple[type, ...] = (*_SEQUENCES, *_MAPPINGS, Namespace)
# Values whose text is never much longer than they are: most of what our templates output.
_PLAIN_TYPES = frozenset({str, Markup, int, float, bool, type(None)})
_NO_MORE = object()
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_DIGITS = re.compile(r"\d+")
_FEW_FIELDS = 8  # formats with as few fields make a few values' length: checked once made
# %-formats already found to have few fields, none too wide: gettext's messages, mostly.
_PLAIN_FORMATS: set[str] = set()
_PLAIN_FORMATS_KEPT = 1024
_PLAIN_FORMAT_LENGTH = 1_000


@dataclass(slots=True)
class _Meter:
    """What one template part has left for one message: a deadline and characters of output.

    The budget is time the rendering thread spends on the processor, not time on the clock: a
    machine busy with other work, or a process stopped for a moment, must not fail a brand's
    template that needs no more than its budget. Reading the thread's CPU clock costs a system
    call, so the checks read the wall clock (`deadline`) and consult the CPU clock only when the
    wall clock has run out; what the CPU clock says is left moves the deadline on.
    """

    name: str
    deadline: float = math.inf
    limit: int = VALUE_LIMIT
    cpu_deadline: float = math.inf

    @classmethod
    def start(cls, name: str, *, timed: bool = True) -> _Meter:
        """Meter a part; untimed for our own templates alone, which need no watching and must
        not fail a message because the machine is slow (a cold start, a busy CI run)."""
        limit = OUTPUT_LIMITS[name.partition(".")[2]]
        if not timed:
            return cls(name, math.inf, limit)
        budget = TIME_BUDGET_MS / 1000
        return cls(name, time.perf_counter() + budget, limit, time.thread_time() + budget)

    @property
    def timed(self) -> bool:
        return self.deadline < math.inf

    def overdue(self) -> None:
        """The wall clock passed the deadline: fail if the thread's CPU time did too."""
        left = self.cpu_deadline - time.thread_time()
        if left <= 0:
            raise RenderTooSlow(f"template {self.name} took longer than {TIME_BUDGET_MS} ms")
        self.deadline = time.perf_counter() + left

    def excuse(self, wall: float, cpu: float) -> None:
        """Leave work that is not rendering (compiling an included template) off the budget."""
        self.deadline += wall
        self.cpu_deadline += cpu

    def too_long(self) -> NoReturn:
        raise RenderBudgetExceeded(
            f"template {self.name} rendered more than {self.limit} characters"
        )

    def collect(self, stream: Iterator[str]) -> str:
        """Join a template's output, stopping a brand's as soon as it passes the part's limit."""
        if not self.timed:
            # Our templates alone: their output grows with the order, not without end, so it is
            # joined in one go (in C: an email is some 100 chunks) and measured once made.
            text = "".join(stream)
            if len(text) > self.limit:
                self.too_long()
            return text
        chunks: list[str] = []
        append = chunks.append
        size = 0
        for chunk in stream:
            size += len(chunk)
            if size > self.limit:
                self.too_long()
            append(chunk)
        return "".join(chunks)


# The sandbox's hooks get no render to charge (getattr gets no context at all), and environments
# are shared by every render of a locale and set of overrides: the render in progress is set here.
# Outside a render (Jinja folds constants when it compiles) nothing is metered.
_METER: ContextVar[_Meter] = ContextVar("render_meter")
_UNMETERED = _Meter("(no render)")


def _tick() -> None:
    meter = _METER.get(_UNMETERED)
    if time.perf_counter() > meter.deadline:
        meter.overdue()


def _check_size(size: int) -> None:
    if size > VALUE_LIMIT:
        name = _METER.get(_UNMETERED).name
        raise RenderBudgetExceeded(
            f"template {name} built a value of more than {VALUE_LIMIT} characters or items"
        )


def _check_width(width: int) -> None:
    if width > VALUE_LIMIT:
        name = _METER.get(_UNMETERED).name
        raise RenderBudgetExceeded(
            f"template {name} asked for a field wider than {VALUE_LIMIT} characters"
            " (or as wide as a value)"
        )


def _check_bits(bits: int) -> None:
    if bits > NUMBER_BITS_LIMIT:
        name = _METER.get(_UNMETERED).name
        raise RenderBudgetExceeded(
            f"template {name} built a number of more than {NUMBER_BITS_LIMIT} bits"
        )


def _sized(value: _V) -> _V:
    if isinstance(value, _SIZED):
        _check_size(len(value))
    return value


def _text_size(value: Any, indent: int = 0) -> int:
    """Estimate the length of a value's text (str, repr or JSON), short of it; once past
    VALUE_LIMIT, stop counting.

    Each item counts its own text (a string its length, a number its digits, a container its
    items) and a separator; with `indent`, each item starts a line indented by its depth. Other
    objects in a container count their repr, taken once per object.
    """
    size = 0
    reprs: dict[int, int] = {}
    # The items being read, one iterator a level: a value seen many times over (a list of the
    # same list) is read each time, as its text would be written each time.
    stack: list[tuple[Iterator[Any], int]] = [(iter((value,)), 0)]
    while stack and size <= VALUE_LIMIT:
        items, depth = stack[-1]
        item: Any = next(items, _NO_MORE)
        if item is _NO_MORE:
            stack.pop()
            continue
        if depth:
            size += 2 + depth * indent  # ", " or ": ", or a new line
        if isinstance(item, str | bytes):
            size += len(item)
        elif isinstance(item, int):
            size += item.bit_length() * 3 // 10 + 1  # log10(2) > 0.3: digits, at least
        elif isinstance(item, _MAPPINGS):
            stack.append((chain.from_iterable(item.items()), depth + 1))
        elif isinstance(item, Namespace):
            stack.append((iter((item._Namespace__attrs,)), depth))  # its repr shows its dict
        elif isinstance(item, _SEQUENCES):
            stack.append((iter(item), depth + 1))
        elif depth and not isinstance(item, float) and item is not None:
            known = reprs.get(id(item))  # our data, say, named many times over
            if known is None:
                known = reprs[id(item)] = len(repr(item))
            size += known
    return size


def _check_text(value: Any) -> None:
    """Check the text a container would make, before it is made."""
    if isinstance(value, _CONTAINERS):
        _check_size(_text_size(value))


def _check_values(values: Any) -> None:
    """Check the text of values to format (a tuple, a dict or one value), quick when plain."""
    kind = type(values)
    if kind is dict or kind is tuple:
        for value in values.values() if kind is dict else values:
            if type(value) not in _PLAIN_TYPES:
                _check_text(values)  # all of them: formatted, or shown whole by a plain %s
                return
    elif kind not in _PLAIN_TYPES:
        _check_text(values)


def _text(value: Any) -> str:
    """Return str(value), its length checked first if it is a container."""
    _check_text(value)
    return str(value)


def _text_length(value: Any) -> int:
    """Return the length of str(value); a container's is estimated, and stops past the limit."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, _CONTAINERS):
        return _text_size(value)
    return len(str(value))


def _spec_width(spec: str) -> int:
    return max(
        (int(n) if len(n) < 10 else VALUE_LIMIT + 1 for n in _DIGITS.findall(spec)), default=0
    )


def _check_formatting(fmt: str, fields: int, widest: int, values: Iterable[Any]) -> None:
    """Check what formatting would make: each field as wide as asked, or as the longest value.

    With a few fields the result is a few values long at most, and checked once it is made.
    """
    if widest > VALUE_LIMIT:
        _check_width(widest)
    if fields > _FEW_FIELDS:
        longest = max(map(_text_length, values), default=0)
        _check_size(len(fmt) + fields * max(widest, longest))


def _check_printf(fmt: Any, values: Any) -> None:
    """Check `fmt % values` (the operator, the format filter, gettext) before it runs; the
    values' own text is the caller's to check."""
    if isinstance(fmt, bytes):
        fmt = fmt.decode("latin-1")
    if not isinstance(fmt, str) or fmt in _PLAIN_FORMATS or "%" not in fmt:
        return
    specs = _PRINTF_SPEC.findall(fmt)  # (width, precision); "*" takes one from the values
    widths = [VALUE_LIMIT + 1 if n == "*" else _spec_width(n) for spec in specs for n in spec if n]
    widest = max(widths, default=0)
    if len(specs) <= _FEW_FIELDS and widest <= VALUE_LIMIT:
        if len(fmt) <= _PLAIN_FORMAT_LENGTH and len(_PLAIN_FORMATS) < _PLAIN_FORMATS_KEPT:
            _PLAIN_FORMATS.add(fmt)
        return
    if isinstance(values, dict | MappingProxyType):
        values = values.values()
    elif not isinstance(values, tuple):
        values = (values,)
    _check_formatting(fmt, len(specs), widest, values)


def _check_format(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Check `fmt.format(*args, **kwargs)` before it runs; a nested {width} has no bound."""
    specs = [spec for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    widths = [VALUE_LIMIT + 1 if "{" in spec else _spec_width(spec) for spec in specs if spec]
    _check_values(args)
    _check_values(kwargs)
    _check_formatting(fmt, len(specs), max(widths, default=0), chain(args, kwargs.values()))


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(times, int) and isinstance(seq, str | bytes):
            _check_size(len(seq) * times)
        elif isinstance(times, int) and isinstance(seq, list | tuple):
            # A list of long strings is as long as they are, once printed.
            weight = sum(len(item) if isinstance(item, str) else 1 for item in seq)
            _check_size(max(weight, len(seq)) * times)
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length())


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _check_bits(base.bit_length() * exponent)


def _check_replace(s: _Text, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(old, str | bytes) and isinstance(new, str | bytes) and len(new) > len(old):
        times = s.count(old) if old else len(s) + 1  # type: ignore[arg-type]
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        _check_size(len(s) + times * (len(new) - len(old)))


# What a str (or bytes) method would make, checked before it runs; `join` reads its items here.
def _str_replace(s: _Text, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    _check_replace(s, *args[:3])
    return args


def _str_width(s: _Text, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if args and isinstance(args[0], int):
        _check_width(args[0])
    return args


def _str_tabs(s: _Text, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    size = args[0] if args else kwargs.get("tabsize", 8)
    if isinstance(size, int):
        tabs = s.count(b"\t") if isinstance(s, bytes) else s.count("\t")
        _check_size(len(s) + tabs * size)
    return args


def _str_join(s: _Text, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    if not args:
        return args
    items = list(args[0])
    _check_size(len(s) * len(items) + sum(len(i) for i in items if isinstance(i, str | bytes)))
    return (items, *args[1:])


def _str_translate(s: _Text, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    table = args[0] if args else None
    values = table.values() if isinstance(table, Mapping) else table
    if isinstance(values, Iterable) and not isinstance(values, str | bytes):
        widest = max((len(v) for v in values if isinstance(v, str)), default=1)
        _check_size(len(s) * widest)
    return args


def _join_phrases(fmt: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a formatter's list of phrases ("a, b, and c") before it is joined."""
    if not args:
        return args
    items = list(args[0])
    _check_size(sum(map(_text_length, items)) + 8 * len(items))  # 8: more than ", and "
    return (items, *args[1:])


_Guard = Callable[[Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]
_STR_GUARDS: Mapping[str, _Guard] = {
    "replace": _str_replace,
    "center": _str_width,
    "ljust": _str_width,
    "rjust": _str_width,
    "zfill": _str_width,
    "expandtabs": _str_tabs,
    "join": _str_join,
    "translate": _str_translate,
}


# Filters that could build a huge value in one step, checked first: same signatures as Jinja's,
# as a template calls them (without the context, environment or eval context Jinja passes).
def _replace_guard(s: Any, old: Any, new: Any, count: Any = None) -> None:
    _check_replace(_text(s), _text(old), _text(new), -1 if count is None else count)


def _center_guard(value: Any, width: Any = 80) -> None:
    _check_text(value)
    if isinstance(width, int):
        _check_width(width)


def _indent_guard(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
    text = _text(s)
    pad = len(width) if isinstance(width, str) else width
    if isinstance(pad, int):
        _check_size(len(text) + (text.count("\n") + 1) * pad)


def _format_guard(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_text(value)
    _check_values(kwargs or args)
    _check_printf(value, kwargs or args)


def _wordwrap_guard(
    s: Any,
    width: Any = 79,
    break_long_words: bool = True,
    wrapstring: Any = None,
    break_on_hyphens: bool = True,
) -> None:
    text = _text(s)
    wrap = "\n" if wrapstring is None else _text(wrapstring)  # our newline_sequence
    if isinstance(width, int):
        lines = len(text) // max(width, 1) + text.count("\n") + 1
        _check_size(len(text) + lines * len(wrap))


def _urlize_guard(
    value: Any,
    trim_url_limit: Any = None,
    nofollow: bool = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> None:
    # Each link repeats the target and rel attributes: a long target on text of many short
    # links ("x.com x.com ...") makes gigabytes. A word can only become a link if it has a dot,
    # a colon or an @ in it; count those, and the URL written twice, as the link's text and href.
    text = _text(value)
    attributes = len(_text(target or "")) + len(_text(rel or "")) + 64
    links = sum(1 for word in text.split() if "." in word or ":" in word or "@" in word)
    _check_size(2 * len(text) + links * attributes)


def _count_guard(value: Any, count: Any, fill_with: Any = None) -> None:
    if isinstance(count, int):
        _check_size(count)


def _text_guard(value: Any, *args: Any, **kwargs: Any) -> None:
    """Check a filter that makes text of its value (str, escape, urlencode, xmlattr...)."""
    _check_text(value)


def _pprint_guard(value: Any) -> None:
    if isinstance(value, _CONTAINERS):
        _check_size(_text_size(value, indent=1))  # an item a line, once it is long


def _tojson_guard(value: Any, indent: Any = None) -> None:
    if isinstance(indent, int):
        _check_width(indent)  # json makes " " * indent first
    if isinstance(value, _CONTAINERS):
        spaces = (
            len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        )
        _check_size(_text_size(value, indent=spaces))


_FILTER_GUARDS: Mapping[str, Any] = {
    "replace": _replace_guard,
    "center": _center_guard,
    "indent": _indent_guard,
    "format": _format_guard,
    "wordwrap": _wordwrap_guard,
    "batch": _count_guard,
    "slice": _count_guard,
    "pprint": _pprint_guard,
    "tojson": _tojson_guard,
    "urlize": _urlize_guard,
    **dict.fromkeys(
        (
            "capitalize",
            "e",
            "escape",
            "forceescape",
            "lower",
            "safe",
            "string",
            "striptags",
            "title",
            "trim",
            "truncate",
            "upper",
            "urlencode",
            "wordcount",
            "xmlattr",
        ),
        _text_guard,
    ),
}


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: Any = "", attribute: Any = None) -> str:
    """Join like Jinja's `join`, once the length of what it would make is known to be in budget."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = list(value)
    _check_size(_text_length(d) * len(items) + sum(map(_text_length, items)))
    return sync_do_join(eval_ctx, items, d)


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """Sum like Jinja's `sum`; lists (or tuples) are chained in one pass, not copied per item."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    items = list(iterable)
    kind = type(start)
    if kind in (list, tuple) and all(type(item) is kind for item in items):
        _check_size(len(start) + sum(map(len, items)))
        return kind(chain(start, *items))
    return sum(items, start)


def _lipsum(*args: Any, **kwargs: Any) -> str:
    asked = inspect.signature(generate_lorem_ipsum).bind(*args, **kwargs)
    asked.apply_defaults()
    paragraphs, words = asked.arguments["n"], asked.arguments["max"]
    if isinstance(paragraphs, int) and isinstance(words, int):
        _check_size(paragraphs * words * 8)  # 8 characters a word, with its space, is plenty
    return generate_lorem_ipsum(*args, **kwargs)


def _gettext_callables(catalog: NullTranslations) -> tuple[Any, Any]:
    """Return gettext and ngettext as Jinja's newstyle i18n makes them, checking the format.

    Jinja's call the catalog through the template context, for catalogs that want it; ours do
    not, and gettext is most of the calls a template makes. Ours take the eval context, which
    says whether to escape: unlike the template context, Jinja passes it without copying.
    """

    @pass_eval_context
    def gettext(eval_ctx: EvalContext, message: str, /, **variables: Any) -> str:
        text = catalog.gettext(message)
        return _format_message(eval_ctx, text, variables)

    @pass_eval_context
    def ngettext(
        eval_ctx: EvalContext, singular: str, plural: str, num: int, /, **variables: Any
    ) -> str:
        variables.setdefault("num", num)
        text = catalog.ngettext(singular, plural, num)
        return _format_message(eval_ctx, text, variables)

    return gettext, ngettext


def _format_message(eval_ctx: EvalContext, text: str, variables: dict[str, Any]) -> str:
    if eval_ctx.autoescape:
        text = Markup(text)  # noqa: S704 - our catalog's wording, or the template's own
    if not variables and "%" not in text:
        return text  # what `text % {}` gives, without its cost (most strings have no fields)
    for value in variables.values():  # `_check_values`, without a call: gettext is most calls
        if type(value) not in _PLAIN_TYPES:
            _check_text(variables)
            break
    _check_printf(text, variables)
    # Always a format, even without variables: Jinja's newstyle gettext does the same.
    message: str = text % variables
    if len(message) > VALUE_LIMIT:
        _check_size(len(message))
    return message


def _metered_filter(func: Any, guard: Any = None) -> Any:
    passed = 1 if hasattr(func, "jinja_pass_arg") else 0  # Jinja's context, ahead of the value

    @wraps(func)  # keeps that mark, so Jinja passes the same arguments
    def metered(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if guard is not None:
            guard(*args[passed:], **kwargs)
        return _sized(func(*args, **kwargs))

    return metered


# Filters that take constant time and make nothing longer than they are given go unmetered.
_CONSTANT_FILTERS = frozenset({"abs", "count", "d", "default", "first", "float", "int", "length"})
_METERED_FILTERS: Mapping[str, Any] = MappingProxyType(
    {
        name: func if name in _CONSTANT_FILTERS else _metered_filter(func, _FILTER_GUARDS.get(name))
        for name, func in {**FILTERS, "join": _join, "sum": _sum}.items()
    }
)


class _MeteredCode(CodeGenerator):
    """Compile for loops to check the clock at each item, and `~` to check its length first;
    and output to check a container's text first, and in HTML to pass on text already safe
    (see `_Sandbox.text_output` and `_Sandbox.escape_output`)."""

    _loop_iterables: frozenset[int] = frozenset()

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        self._loop_iterables = frozenset(id(loop.iter) for loop in node.find_all(nodes.For))
        super().visit_Template(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) in self._loop_iterables:  # Jinja allows no node types of our own
            self.write("environment.metered(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # Jinja's own, but handing the parts to the sandbox to measure before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.concat_parts({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        # Jinja's hooks around each `{{ value }}`, as its native-types code generator uses them:
        # the sandbox's conversions where Jinja writes `escape(` and `str(`. Text (in HTML,
        # Markup) is most of what a template outputs: it is passed on without a call.
        if frame.eval_ctx.volatile:
            self.write(
                "(environment.escape_output if context.eval_ctx.autoescape"
                " else environment.text_output)("
            )
        elif finalize.src is None:
            self.write("(_output if type(_output := ")
            return
        elif frame.eval_ctx.autoescape:
            self.write("environment.escape_output(")
        else:
            self.write("environment.text_output(")
        if finalize.src is not None:
            self.write(finalize.src)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if frame.eval_ctx.volatile or finalize.src is not None:
            super()._output_child_post(node, frame, finalize)
        elif frame.eval_ctx.autoescape:
            self.write(") is Markup else environment.escape_output(_output))")
        else:
            self.write(") is str else environment.text_output(_output))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, closed to the timezone object (its class methods touch shared caches), and
    holding each render to the budget of the meter in _METER.

    The clock is read at each loop item, call, filter, intercepted operator and template load:
    unbounded work needs one of them. Attribute reads are not metered (our data is read thousands
    of times a render), nor are the operators that cannot grow a value much in one step.
    """

    code_generator_class = _MeteredCode
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = dict(_METERED_FILTERS)
        self.globals["lipsum"] = _lipsum
        self.own_callables: frozenset[Any] = frozenset()  # gettext, once installed

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # Jinja overlays the environment's globals in a ChainMap, which each of the dozen
        # contexts a message makes (a template part, an include, a scoped block) copies item by
        # item in Python: a dict is copied in C. The environment's globals are all set before
        # it loads a template (see `_build`), so the copy shows what the ChainMap would.
        return {**self.globals, **(d or {})}

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if (kind, attribute) in _DATA_ATTRIBUTES:
            # Our data, read some 100 times a message: what the sandbox would answer, as the
            # attribute is safe and none of these classes holds a str's format method to wrap.
            return getattr(obj, attribute)
        names = _MAPPING_ATTRIBUTES.get(kind)
        if names is not None and attribute not in names:
            # A key: what the sandbox would answer, without the AttributeError first.
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if (type(obj), attr) in _DATA_ATTRIBUTES:
            return True
        if isinstance(obj, zoneinfo.ZoneInfo) and attr != "key":
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        kind = type(obj)
        if (
            kind is Clip
            or (kind is MethodType and obj.__func__ in _QUICK_METHODS)
            or (kind is FunctionType and obj in self.own_callables)
        ):
            # Our formatters, gettext and the title clipper, called dozens of times a render: none
            # is marked unsafe (the sandbox's check, two failed attribute lookups, would pass),
            # each is quick and makes a short text (gettext checks its own), so both the
            # sandbox's check and the budget's are skipped. So is Context.call: what it would
            # do for these is pass gettext the eval context, and drop the variables a loop or
            # block sets, which Jinja passes along for callables that take the template context.
            kwargs.pop("_loop_vars", None)
            kwargs.pop("_block_vars", None)
            if kind is FunctionType:
                return obj(context.eval_ctx, *args, **kwargs)
            return obj(*args, **kwargs)
        _tick()
        if kind is FunctionType:
            fmt = getattr(obj.__dict__.get("__wrapped__"), "__self__", None)
            if isinstance(fmt, str):  # the sandbox's wrapper of fmt.format
                _check_format(fmt, args, kwargs)
        elif kind is BuiltinMethodType or kind is MethodType:
            owner = obj.__self__
            guard: _Guard | None
            if isinstance(owner, str | bytes):
                guard = _STR_GUARDS.get(obj.__name__)
            else:
                guard = _join_phrases if getattr(obj, "__func__", None) is Formatter.join else None
            if guard is not None:
                args = guard(owner, args, kwargs)
        value = super().call(context, obj, *args, **kwargs)
        if isinstance(value, _SIZED) and len(value) > VALUE_LIMIT:
            _check_size(len(value))
        return value

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_values(right)
            _check_printf(left, right)
        return _sized(self.binop_table[operator](left, right))

    def get_template(self, name: Any, parent: Any = None, globals: Any = None) -> Any:
        return self._charge_load(super().get_template, name, parent, globals)

    def select_template(self, names: Any, parent: Any = None, globals: Any = None) -> Any:
        return self._charge_load(super().select_template, names, parent, globals)

    def _charge_load(self, load: Any, *args: Any) -> Any:
        """Load a template (an include, import or extends) at a tick; compiling is not rendering."""
        meter = _METER.get(_UNMETERED)
        if not meter.timed:
            return load(*args)
        if time.perf_counter() > meter.deadline:
            meter.overdue()
        started, cpu_started = time.perf_counter(), time.thread_time()
        template = load(*args)
        meter.excuse(time.perf_counter() - started, time.thread_time() - cpu_started)
        return template

    @staticmethod
    def metered(iterable: Iterable[_V]) -> Iterator[_V]:
        meter = _METER.get(_UNMETERED)
        for item in iterable:
            if time.perf_counter() > meter.deadline:
                meter.overdue()
            yield item

    @staticmethod
    def escape_output(value: Any) -> Markup:
        """Escape a value for HTML output; Markup (the look, our messages) is passed on as it is,
        where markupsafe's `escape` would copy it, in Python. A container's text is checked
        first."""
        if type(value) is Markup:
            return value
        if type(value) not in _PLAIN_TYPES:
            _check_text(value)
        return escape(value)

    @staticmethod
    def text_output(value: Any) -> str:
        """Make a value text for output, as `str` would; a container's text is checked first."""
        if type(value) not in _PLAIN_TYPES:
            _check_text(value)
        return str(value)

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Join a buffer (a macro, call, set or filter block's output) within VALUE_LIMIT."""
        chunks = parts if isinstance(parts, list) else list(parts)
        _check_size(sum(map(len, chunks)))
        return "".join(chunks)

    @staticmethod
    def concat_parts(join: Any, parts: tuple[Any, ...]) -> Any:
        """Join the operands of `~` within VALUE_LIMIT."""
        _check_size(sum(len(p) if type(p) is str else _text_length(p) for p in parts))
        return _sized(join(parts))


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

        def render(part: str) -> str:
            meter = _Meter.start(f"{trigger}.email.{part}", timed=bool(overrides))
            return _periods(self._render(env, meter, values))

        subject = " ".join(render("subject").split())
        values["subject"] = subject
        text = render("text")
        text = _BLANK_LINES.sub("\n\n", "\n".join(line.rstrip() for line in text.splitlines()))
        html = self._inliner.inline(render("html"))
        return RenderedEmail(subject=subject, text=text.strip() + "\n", html=html)

    def sms(self, ctx: MessageContext, overrides: Mapping[str, str] = NO_OVERRIDES) -> RenderedSms:
        """Render the SMS, giving up as little as it can (title length, then detail) to fit.

        The ladder, least loss first: the full wording, the brief wording, a choice without its
        titles, replies without the short ref (with titles, then without), the tight wording,
        numeric dates, a deadline inside the shopper's day written as the whole day before it,
        then all of those again without mentioning the other updates; at each step titles are
        clipped as little as needed, never below MIN_TITLE_ROOM. The first rendering in two
        segments wins; when none fits, the first that reaches the fewest segments any step can.
        """
        env, values = self._prepare(ctx, overrides)
        # One budget for every rendering the ladder tries: they all hold up the same worker.
        meter = _Meter.start(f"{ctx.lead.trigger}.sms.text", timed=bool(overrides))
        lead: Story = values["lead"]
        fmt: MessageFormatter = values["fmt"]
        bare = lead
        if lead.choice and lead.replies != _replies(lead.choice, several_orders=False):
            bare = replace(lead, replies=_replies(lead.choice, several_orders=False))
        choice = lead.choice
        steps = _steps(
            choice=choice is not None,
            refs=bare is not lead,
            hours=choice is not None
            and _day_before_is_left(lead.deadline or choice.deadline, fmt.timezone, ctx.now),
            more=values["more"] > 0,
        )

        tried: dict[tuple[Room, int | None], tuple[RenderedSms, list[int]]] = {}

        def attempt(room: Room, width: int | None) -> tuple[RenderedSms, list[int]]:
            if (room, width) in tried:
                return tried[room, width]
            story = lead if room.refs else bare
            clip = Clip(width)
            body = self._render(
                env,
                meter,
                {
                    **values,
                    "room": room,
                    "clip": clip,
                    "fmt": SmsFormatter(
                        fmt.locale,
                        fmt.timezone,
                        brief=room.brief,
                        numeric=room.numeric,
                        whole_days=not room.hours,
                    ),
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
            for room in steps:
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
        key = (locale, _digest(overrides) if overrides else "")  # most brands override nothing
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
            # The few templates of its loader, once loaded, are kept in a dict: Jinja's LRU cache
            # takes a lock and reorders at each of the dozen loads a message makes.
            cache_size=-1,
            bytecode_cache=self._compiled,
        )
        env.policies["ext.i18n.trimmed"] = True
        # Newstyle gettext escapes the variables only where autoescape is on, so the plain
        # catalog functions serve HTML and text alike (template_gettext always escapes).
        gettext, ngettext = _gettext_callables(translations(locale))
        env.newstyle_gettext = True  # type: ignore[attr-defined]
        # What install_gettext_callables(newstyle=True) sets, but `_` is gettext itself rather
        # than Jinja's alias that looks `gettext` up in the context at each call.
        env.globals.update(
            _=gettext, gettext=gettext, ngettext=ngettext, pgettext=None, npgettext=None
        )
        env.own_callables = frozenset({gettext, ngettext})
        return env

    def _render(self, env: _Sandbox, meter: _Meter, values: Mapping[str, Any]) -> str:
        """Render a template part on its meter's budget."""
        name = meter.name
        token = _METER.set(meter)
        try:
            template = env.get_template(name)  # compiling it is not charged to the meter
            try:
                # Template.render, but reading the output chunk by chunk.
                context = template.new_context(dict(values))
                return meter.collect(template.root_render_func(context))
            except Exception:
                env.handle_exception()  # re-raises, pointing at the template's line
        except TemplateProblem:
            raise
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{exc.name or name}, line {exc.lineno}: {exc.message}") from exc
        except TemplateError as exc:
            raise TemplateProblem(f"{name}: {exc.message or exc}") from exc
        except RecursionError as exc:  # a macro or include that calls itself without end
            raise TemplateProblem(f"{name}: templates call themselves too deeply") from exc
        # A brand template can still call a helper the wrong way: that is its problem too.
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            raise TemplateProblem(f"{name}: {type(exc).__name__}: {exc}") from exc
        finally:
            _METER.reset(token)


def _digest(overrides: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(overrides):
        digest.update(f"{len(name)}:{name}{len(overrides[name])}:{overrides[name]}".encode())
    return digest.hexdigest()


def _spell(locale: str, text: str) -> str:
    for word, spelling in _SMS_SPELLINGS.get(locale, ()):
        text = text.replace(word, spelling)
    return text


def _day_before_is_left(
    deadline: dt.datetime, timezone: zoneinfo.ZoneInfo, now: dt.datetime | None
) -> bool:
    """Tell whether a deadline falls inside the shopper's day, the day before it not yet over.

    Only then can the SMS name that day instead of the deadline's time: a day already gone would
    tell the shopper they are too late.
    """
    local = deadline.astimezone(timezone)
    if local.time() >= _END_OF_DAY:
        return False  # the shopper's day ends with it: the date alone says it
    return now is None or now.astimezone(timezone).date() < local.date()


def _periods(text: str) -> str:
    return _DOUBLE_PERIOD.sub(".", text) if ".." in text else text


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


def _local_day(value: Any, timezone: str) -> dt.date | None:
    """The shopper's day of an ISO instant."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value).astimezone(zoneinfo.ZoneInfo(timezone)).date()


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
        quiet_since=_local_day(data.get("quiet_since"), ctx.timezone),
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
