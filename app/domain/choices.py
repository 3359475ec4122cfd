"""The shopper's choice for a line that will miss the brand's promise: one state machine.

A choice is offered when a line is at risk or its window expired. It is made once, from the
tracking page or by SMS: later attempts see the first decision. SMS replies we cannot read twice
in a row hand it to a person, but it stays undecided: the shopper may still answer. At the
deadline without an answer, the brand's default action (keep or cancel) applies, also to a
choice waiting for a person: the shopper was promised that default, and a line must not wait
in limbo because nobody got round to it. A choice whose line stopped waiting meanwhile (served
from stock, shipped, cancelled by the brand) is closed at its deadline instead.

    open --decide--> made             (keep | switch to an alternative | refund)
    open --two unclear replies--> needs_person --decide--> made
    open | needs_person --deadline--> defaulted (the brand's default action)
    open | needs_person --deadline, line no longer waiting--> closed

In SMS an order is named by a short code (`short_ref`, "A7"): a letter and a digit, unique among
the undecided choices of one phone number, so "2 A7" says which order a reply is about.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

Decision = Literal["keep", "switch", "refund"]
DECISIONS: tuple[Decision, ...] = ("keep", "switch", "refund")
# What the order line becomes after each decision (keep leaves it waiting).
LINE_STATUS_AFTER: dict[str, str | None] = {
    "keep": None,
    "switch": "substituted",
    "refund": "cancelled",
}


# States in which the shopper can still answer.
UNDECIDED: frozenset[str] = frozenset({"open", "needs_person"})
# Letters of short codes: no I, L or O, which read as 1, 1 and 0.
REF_LETTERS = "ABCDEFGHJKMNPQRSTUVWXYZ"
_ONE_DIGIT = len(REF_LETTERS) * 9  # A1 … Z9
_TWO_DIGITS = len(REF_LETTERS) * 90  # A10 … Z99


class ChoiceError(ValueError):
    """The decision cannot be taken (unknown decision, unknown alternative, closed choice)."""


@dataclass(frozen=True)
class Outcome:
    state: str
    decision: Decision
    alternative_sku: str | None
    line_status: str | None
    already_decided: bool = False


def decide(
    state: str,
    current: str | None,
    current_alternative: str | None,
    decision: str,
    alternative: str | None,
    alternatives: Collection[str],
    deadline: dt.datetime,
    now: dt.datetime,
) -> Outcome:
    """Take the shopper's decision, or report the one already taken."""
    if state not in UNDECIDED:
        if current not in DECISIONS:
            raise ChoiceError("this choice is closed")
        return Outcome(state, current, current_alternative, None, already_decided=True)
    if now > deadline:
        raise ChoiceError("the deadline has passed")
    if decision not in DECISIONS:
        raise ChoiceError(f"unknown decision {decision!r}")
    if decision == "switch":
        if alternative not in alternatives:
            raise ChoiceError("pick one of the offered alternatives")
    elif alternative is not None:
        raise ChoiceError("only a switch names an alternative")
    return Outcome("made", decision, alternative, LINE_STATUS_AFTER[decision])


def default_outcome(default_action: str) -> Outcome:
    """Return what happens at the deadline without an answer."""
    decision: Decision = "refund" if default_action == "cancel" else "keep"
    return Outcome("defaulted", decision, None, LINE_STATUS_AFTER[decision])


def escalate(state: str) -> str:
    """Hand an undecided choice to a person (after replies nobody could read)."""
    if state not in UNDECIDED:
        raise ChoiceError("this choice is closed")
    return "needs_person"


def overdue(state: str, deadline: dt.datetime, now: dt.datetime) -> bool:
    """Tell whether the default action is due: undecided and past its deadline."""
    return state in UNDECIDED and now > deadline


def short_ref(order_id: int, taken: Collection[str]) -> str:
    """Pick an order's SMS code: derived from its id, else the next one not `taken`.

    Consecutive ids get different codes (A1, A2, … A9, B1), so a shopper's orders rarely
    collide even before `taken` is consulted; two digits follow only if every one-digit code is
    taken.
    """
    for step in range(_ONE_DIGIT):
        index = (order_id + step) % _ONE_DIGIT
        code = f"{REF_LETTERS[index // 9]}{index % 9 + 1}"
        if code not in taken:
            return code
    for step in range(_TWO_DIGITS):
        index = (order_id + step) % _TWO_DIGITS
        code = f"{REF_LETTERS[index // 90]}{index % 90 + 10}"
        if code not in taken:
            return code
    raise ChoiceError("no free short code")


def unique_refs(current: Mapping[int, str | None]) -> dict[int, str]:
    """Give one phone's open orders distinct codes, keeping each code that is already unique.

    Orders that share a code (two offers written at once) all get new ones, so a reply naming
    the shared code is asked which order it meant rather than guessed at.
    """
    counts = Counter(ref for ref in current.values() if ref)
    fixed = {order: ref for order, ref in current.items() if ref and counts[ref] == 1}
    taken = set(counts)
    for order in sorted(set(current) - set(fixed)):
        fixed[order] = short_ref(order, taken)
        taken.add(fixed[order])
    return fixed
