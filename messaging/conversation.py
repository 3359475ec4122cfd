"""What to do with an SMS reply about open choices, and what to answer: pure, no I/O.

`respond` takes what the reply says (`messaging.replies.Reading`), where the conversation with
that number stands (the question we asked last, how many unclear replies in a row) and the
number's orders with undecided choices, and returns a `Plan`: the decisions to take, the
choices to hand to a person, the conversation's next state and the answer as sentences.
`render` turns the sentences into one short SMS in the shopper's language.

    reply names an order (or only one is open) --> decide it (all of its waiting lines)
    several orders open, none named ------------> ask which; the next "A7" completes it
    switch, a line with several alternatives ---> list them; the next number picks one
    nothing understood -------------------------> restate the options; twice in a row: a person
    nothing open -------------------------------> say what already happened, if anything did

Answers never suggest an opt-out word, nor use one ("cancel" is one): options are numbers
(1 / 2 / 3) and order codes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.i18n import N_
from messaging.replies import Reading
from messaging.segments import count_segments, normalize_sms

Decision = Literal["keep", "switch", "refund"]
ESCALATE_AFTER = 2  # unclear replies in a row before a person takes over

SORRY = N_("Sorry, we did not understand that.")
OPTIONS = N_(
    "Order %(order)s: reply 1 to keep waiting, 2 to switch to a similar item or 3 for a refund."
)
OPTIONS_NO_SWITCH = N_("Order %(order)s: reply 1 to keep waiting or 3 for a refund.")
OPTIONS_MANY = N_(
    "Reply 1 to keep waiting, 2 to switch or 3 for a refund, with the order's code, like "
    "1 %(ref)s. Codes: %(orders)s."
)
WHICH_ORDER = N_("Which order? Reply with its code: %(orders)s.")
WHICH_ALTERNATIVE = N_("Which item instead of %(item)s? Reply with its number: %(choices)s.")
NO_ALTERNATIVE = N_("Sorry, there is no similar item for %(item)s.")
KEPT = N_("Thanks! Order %(order)s: we will keep it on order and tell you when it ships.")
SWITCHED = N_("Thanks! Order %(order)s: we will send %(item)s instead, as soon as we can.")
REFUNDED_ONE = N_("Thanks! Order %(order)s: we will remove the delayed item and refund you.")
REFUNDED_MANY = N_("Thanks! Order %(order)s: we will remove the delayed items and refund you.")
ALREADY = {
    "keep": N_("Order %(order)s: you already chose to keep waiting, on %(date)s."),
    "switch": N_("Order %(order)s: you already chose to switch items, on %(date)s."),
    "refund": N_("Order %(order)s: you already chose a refund, on %(date)s."),
}
DEFAULTED = {
    "keep": N_("Order %(order)s: the time to answer ended on %(date)s, so we kept it on order."),
    "refund": N_(
        "Order %(order)s: the time to answer ended on %(date)s, so we removed the item and will "
        "refund you."
    ),
}
PERSON = N_("Thanks. Someone from %(brand)s will be in touch with you soon.")
NOTHING_OPEN = N_("Thanks for your message. Nothing is waiting for your answer right now.")
UNKNOWN_NUMBER = N_(
    "Sorry, we could not find your order from this number. Please use the link in our message."
)
HELP = N_("%(brand)s order updates. Help: %(contact)s. Reply STOP to opt out.")
HELP_NO_CONTACT = N_("%(brand)s order updates. Reply STOP to opt out.")
OPTED_IN = N_("%(brand)s: you will get order updates by text again.")
OPTED_IN_ANY = N_("You will get order updates by text again.")

# Titles are cut to these lengths, longest first, until the answer fits one segment.
_TITLE_LIMITS: tuple[int | None, ...] = (None, 40, 30, 24, 18, 12)


# --- What the reply is about ---------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """A waiting line of an order: its undecided choices and what it could switch to."""

    title: str
    choice_ids: tuple[int, ...]
    alternatives: tuple[tuple[str, str], ...] = ()  # (sku, title)


@dataclass(frozen=True)
class OpenOrder:
    """An order with undecided choices, as the shopper knows it: number and SMS code."""

    order_id: int
    number: str
    ref: str
    lines: tuple[Line, ...]

    @property
    def can_switch(self) -> bool:
        return all(line.alternatives for line in self.lines)


@dataclass(frozen=True)
class Settled:
    """An order whose choice was already made or defaulted, and when."""

    order_id: int
    number: str
    ref: str | None
    decision: Decision
    defaulted: bool
    at: dt.datetime  # when it was made; for a default, the deadline that passed


@dataclass(frozen=True)
class State:
    """Where the conversation stands: the question asked last and unclear replies in a row."""

    pending: Mapping[str, Any] = field(default_factory=dict)
    unclear: int = 0


# --- What to do and say ----------------------------------------------------------------------


@dataclass(frozen=True)
class Titles:
    """Item titles in an answer: shortened, if need be, to keep it to one segment."""

    items: tuple[str, ...]
    numbered: bool = False


Param = str | dt.datetime | Titles


@dataclass(frozen=True)
class Sentence:
    msgid: str
    params: Mapping[str, Param] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """Decide one choice."""

    order_id: int
    choice_id: int
    decision: Decision
    alternative: str | None = None


@dataclass(frozen=True)
class Plan:
    outcome: str
    answer: tuple[Sentence, ...]
    state: State
    decide: tuple[Action, ...] = ()
    escalate: tuple[int, ...] = ()


def respond(
    reading: Reading, state: State, open_orders: Sequence[OpenOrder], settled: Sequence[Settled]
) -> Plan:
    """Plan what a choice reply (or an unclear one) does and what we answer."""
    pending = state.pending
    if pending.get("awaiting") == "alternative" and reading.number is not None:
        order = next((o for o in open_orders if o.order_id == pending.get("order")), None)
        if order is not None and reading.order_ref in (None, order.ref):
            return _pick_alternative(reading.number, pending, order, state)
    if pending.get("awaiting") == "order" and reading.order_ref and reading.decision is None:
        decision = pending.get("decision")
        if decision in ("keep", "switch", "refund"):
            reading = Reading("choice", decision=decision, order_ref=reading.order_ref)
    if reading.kind == "choice" and reading.decision is not None:
        return _choose(reading.decision, reading.order_ref, open_orders, settled)
    return _unclear(state, open_orders, settled)


def _choose(
    decision: Decision,
    ref: str | None,
    open_orders: Sequence[OpenOrder],
    settled: Sequence[Settled],
) -> Plan:
    """Act on a decision for the order the reply names, or ask which order."""
    if ref is not None:
        order = next((o for o in open_orders if o.ref == ref), None)
        if order is None:
            done = next((s for s in settled if s.ref == ref), None)
            if done is not None:
                return _already(done)
    elif len(open_orders) == 1:
        order = open_orders[0]
    else:
        order = None
    if order is None:
        if not open_orders:
            return _nothing_open(settled)
        return Plan(
            "asked_order",
            (Sentence(WHICH_ORDER, {"orders": _order_list(open_orders)}),),
            State({"awaiting": "order", "decision": decision}),
        )
    if decision == "switch":
        return _switch(order, {})
    actions = tuple(
        Action(order.order_id, choice_id, decision)
        for line in order.lines
        for choice_id in line.choice_ids
    )
    if decision == "keep":
        answer = Sentence(KEPT, {"order": order.number})
    else:
        many = len(order.lines) > 1
        answer = Sentence(REFUNDED_MANY if many else REFUNDED_ONE, {"order": order.number})
    return Plan("decided", (answer,), State(), decide=actions)


def _switch(order: OpenOrder, picked: Mapping[str, str]) -> Plan:
    """Switch every waiting line of the order, asking for an alternative where there are several."""
    missing = next((line for line in order.lines if not line.alternatives), None)
    if missing is not None:
        return Plan(
            "no_alternative",
            (
                Sentence(NO_ALTERNATIVE, {"item": Titles((missing.title,))}),
                _options([order]),
            ),
            State(),
        )
    chosen = dict(picked)
    for line in order.lines:
        key = str(line.choice_ids[0])
        if key in chosen:
            continue
        if len(line.alternatives) == 1:
            chosen[key] = line.alternatives[0][0]
            continue
        return Plan(
            "asked_alternative",
            (_alternatives(line),),
            State(
                {
                    "awaiting": "alternative",
                    "order": order.order_id,
                    "choice": line.choice_ids[0],
                    "picked": chosen,
                }
            ),
        )
    titles = []
    actions = []
    for line in order.lines:
        sku = chosen[str(line.choice_ids[0])]
        titles.append(next(title for alt, title in line.alternatives if alt == sku))
        actions += [Action(order.order_id, c, "switch", sku) for c in line.choice_ids]
    answer = Sentence(SWITCHED, {"order": order.number, "item": Titles(tuple(titles))})
    return Plan("decided", (answer,), State(), decide=tuple(actions))


def _pick_alternative(
    number: int, pending: Mapping[str, Any], order: OpenOrder, state: State
) -> Plan:
    """Take the number given as the pick among the alternatives we listed."""
    line = next((ln for ln in order.lines if pending.get("choice") in ln.choice_ids), None)
    if line is None:
        return _switch(order, {})
    if not 1 <= number <= len(line.alternatives):
        return _unclear(state, [order], ())
    picked = {str(k): str(v) for k, v in dict(pending.get("picked") or {}).items()}
    picked[str(line.choice_ids[0])] = line.alternatives[number - 1][0]
    return _switch(order, picked)


def _unclear(state: State, open_orders: Sequence[OpenOrder], settled: Sequence[Settled]) -> Plan:
    """Restate the question once; a second unclear reply in a row goes to a person."""
    if not open_orders:
        return _nothing_open(settled)
    count = state.unclear + 1
    if count >= ESCALATE_AFTER:
        ids = tuple(c for o in open_orders for line in o.lines for c in line.choice_ids)
        return Plan("needs_person", (Sentence(PERSON),), State(), escalate=ids)
    pending = state.pending
    question: Sentence | None = None
    if pending.get("awaiting") == "alternative":
        for order in open_orders:
            for line in order.lines:
                if order.order_id == pending.get("order") and pending.get("choice") in (
                    line.choice_ids
                ):
                    question = _alternatives(line)
    elif pending.get("awaiting") == "order" and len(open_orders) > 1:
        question = Sentence(WHICH_ORDER, {"orders": _order_list(open_orders)})
    if question is None:
        pending = {}
        question = _options(open_orders)
    return Plan("unclear", (Sentence(SORRY), question), State(pending, count))


def _already(done: Settled) -> Plan:
    """Tell what happened to a choice that can no longer be made."""
    table = DEFAULTED if done.defaulted else ALREADY
    msgid = table.get(done.decision, ALREADY[done.decision])
    return Plan(
        "already_decided", (Sentence(msgid, {"order": done.number, "date": done.at}),), State()
    )


def _nothing_open(settled: Sequence[Settled]) -> Plan:
    if settled:
        latest = max(settled, key=lambda s: s.at)
        return _already(latest)
    return Plan("nothing_open", (Sentence(NOTHING_OPEN),), State())


def _options(open_orders: Sequence[OpenOrder]) -> Sentence:
    """The options, naming the order (one open) or asking for its code (several)."""
    if len(open_orders) == 1:
        order = open_orders[0]
        return Sentence(OPTIONS if order.can_switch else OPTIONS_NO_SWITCH, {"order": order.number})
    return Sentence(OPTIONS_MANY, {"orders": _order_list(open_orders), "ref": open_orders[0].ref})


def _alternatives(line: Line) -> Sentence:
    return Sentence(
        WHICH_ALTERNATIVE,
        {
            "item": Titles((line.title,)),
            "choices": Titles(tuple(title for _, title in line.alternatives), numbered=True),
        },
    )


def _order_list(open_orders: Sequence[OpenOrder]) -> str:
    return ", ".join(f"{o.ref} ({o.number})" for o in open_orders)


# --- Rendering -------------------------------------------------------------------------------


def render(
    sentences: Sequence[Sentence],
    gettext: Callable[[str], str],
    date: Callable[[dt.datetime], str],
    common: Mapping[str, str] | None = None,
) -> str:
    """Translate and fill the sentences; shorten titles until the text fits one segment.

    `common` fills what every answer may name (the brand).
    """
    text = ""
    for limit in _TITLE_LIMITS:
        text = normalize_sms(
            " ".join(
                gettext(s.msgid) % {**(common or {}), **_fill(s.params, date, limit)}
                for s in sentences
            )
        )
        if count_segments(text).segments == 1:
            break
    return text


def _fill(
    params: Mapping[str, Param], date: Callable[[dt.datetime], str], limit: int | None
) -> dict[str, str]:
    filled = {}
    for name, value in params.items():
        if isinstance(value, dt.datetime):
            filled[name] = date(value)
        elif isinstance(value, Titles):
            titles = [_shorten(title, limit) for title in value.items]
            if value.numbered:
                titles = [f"{n} {title}" for n, title in enumerate(titles, start=1)]
            filled[name] = ", ".join(titles)
        else:
            filled[name] = value
    return filled


def _shorten(title: str, limit: int | None) -> str:
    if limit is None or len(title) <= limit:
        return title
    return title[: limit - 3].rstrip() + "..."
