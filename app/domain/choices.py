"""The shopper's choice for a line that will miss the brand's promise: one state machine.

A choice is offered when a line is at risk or its window expired. It is made once, from the
tracking page or by SMS: later attempts see the first decision. At the deadline without an
answer, the brand's default action (keep or cancel) applies.

    open --decide--> made        (keep | switch to an alternative | refund)
    open --deadline--> defaulted (the brand's default action)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
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
    if state != "open":
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
