"""The SMS conversation about choices, as plain data: what a reply does and what we answer."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain import choices as machine
from messaging import conversation as c
from messaging.conversation import Action, Line, OpenOrder, Settled, State
from messaging.replies import OPT_OUT_WORDS, read_reply
from messaging.segments import count_segments

MUG = Line("Stoneware mug", (11,), (("MUG-GREEN", "Green mug"),))
LAMP = Line("Oak lamp", (21,), (("LAMP-ASH", "Ash lamp"), ("LAMP-PINE", "Pine lamp")))
SOFA = Line("Linen sofa", (31,), ())
ONE = OpenOrder(1, "1001", "A2", (LAMP,))
TWO = OpenOrder(2, "1002", "B7", (MUG,))
DAY = dt.datetime(2026, 11, 9, 7, 59, 59, tzinfo=dt.UTC)


def say(plan: c.Plan) -> str:
    return c.render(
        plan.answer, lambda msgid: msgid, lambda at: at.strftime("%b %-d"), {"brand": "Acme"}
    )


def reply(text: str, open_orders, state=None, settled=()):
    return c.respond(read_reply(text), state or State(), open_orders, settled)


def test_a_number_decides_every_waiting_line_of_the_only_open_order():
    order = OpenOrder(1, "1001", "A2", (MUG, Line("Blue mug", (12, 13), ())))
    plan = reply("1", [order])
    assert plan.outcome == "decided"
    assert plan.decide == (
        Action(1, 11, "keep"),
        Action(1, 12, "keep"),
        Action(1, 13, "keep"),
    )
    assert say(plan) == "Thanks! Order 1001: we will keep it on order and tell you when it ships."
    assert plan.state == State()
    refund = reply("refund please", [order])
    assert [a.decision for a in refund.decide] == ["refund"] * 3
    assert say(refund) == "Thanks! Order 1001: we will remove the delayed items and refund you."


def test_two_open_orders_ask_which_and_the_code_completes_the_pending_decision():
    asked = reply("3", [ONE, TWO])
    assert asked.outcome == "asked_order"
    assert asked.decide == ()
    assert say(asked) == "Which order? Reply with its code: A2 (1001), B7 (1002)."
    assert asked.state.pending == {"awaiting": "order", "decision": "refund"}
    done = reply("b7", [ONE, TWO], asked.state)
    assert done.decide == (Action(2, 11, "refund"),)
    assert say(done) == "Thanks! Order 1002: we will remove the delayed item and refund you."
    assert done.state == State()


def test_a_reply_naming_a_code_acts_on_that_order_at_once():
    plan = reply("1 A2", [ONE, TWO])
    assert plan.decide == (Action(1, 21, "keep"),)


def test_switch_lists_several_alternatives_and_the_next_number_picks_one():
    asked = reply("2", [ONE])
    assert asked.outcome == "asked_alternative"
    assert say(asked) == (
        "Which item instead of Oak lamp? Reply with its number: 1 Ash lamp, 2 Pine lamp."
    )
    assert asked.state.pending == {
        "awaiting": "alternative",
        "order": 1,
        "choice": 21,
        "picked": {},
    }
    # "1" is "keep" on its own, but here it picks the first alternative.
    first = reply("1", [ONE], asked.state)
    assert first.decide == (Action(1, 21, "switch", "LAMP-ASH"),)
    second = reply("2", [ONE], asked.state)
    assert second.decide == (Action(1, 21, "switch", "LAMP-PINE"),)
    assert say(second) == "Thanks! Order 1001: we will send Pine lamp instead, as soon as we can."


def test_a_number_past_the_alternatives_restates_them():
    asked = reply("swap", [ONE])
    again = reply("5", [ONE], asked.state)
    assert again.outcome == "unclear"
    assert again.decide == ()
    assert say(again).startswith(
        "Sorry, we did not understand that. Which item instead of Oak lamp?"
    )
    assert again.state.pending == asked.state.pending
    assert again.state.unclear == 1


def test_switch_asks_line_by_line_and_decides_all_at_once():
    order = OpenOrder(1, "1001", "A2", (LAMP, MUG, Line("Pine lamp", (22,), LAMP.alternatives)))
    first = reply("2", [order])
    assert first.state.pending["choice"] == 21
    second = reply("2", [order], first.state)
    assert second.outcome == "asked_alternative"
    assert second.state.pending == {
        "awaiting": "alternative",
        "order": 1,
        "choice": 22,
        "picked": {"21": "LAMP-PINE", "11": "MUG-GREEN"},
    }
    done = reply("1", [order], second.state)
    assert done.decide == (
        Action(1, 21, "switch", "LAMP-PINE"),
        Action(1, 11, "switch", "MUG-GREEN"),
        Action(1, 22, "switch", "LAMP-ASH"),
    )
    assert say(done) == (
        "Thanks! Order 1001: we will send Pine lamp, Green mug, Ash lamp instead, as soon as we "
        "can."
    )


def test_one_alternative_switches_at_once_and_none_says_so():
    plan = reply("2", [TWO])
    assert plan.decide == (Action(2, 11, "switch", "MUG-GREEN"),)
    none = reply("swap", [OpenOrder(3, "1003", "C1", (SOFA,))])
    assert none.outcome == "no_alternative"
    assert none.decide == ()
    assert say(none) == (
        "Sorry, there is no similar item for Linen sofa. "
        "Order 1003: reply 1 to keep waiting or 3 for a refund."
    )


def test_unclear_twice_in_a_row_goes_to_a_person_and_an_answer_resets_the_count():
    first = reply("what is this?", [ONE, TWO])
    assert first.outcome == "unclear"
    assert first.state.unclear == 1
    assert say(first) == (
        "Sorry, we did not understand that. Reply 1 to keep waiting, 2 to switch or 3 for a "
        "refund, with the order's code, like 1 A2. Codes: A2 (1001), B7 (1002)."
    )
    second = reply("hmm", [ONE, TWO], first.state)
    assert second.outcome == "needs_person"
    assert second.escalate == (21, 11)
    assert say(second) == "Thanks. Someone from Acme will be in touch with you soon."
    assert second.state == State()
    understood = reply("1 A2", [ONE, TWO], first.state)
    assert understood.state.unclear == 0


def test_the_options_for_one_order_name_it():
    plan = reply("?", [TWO])
    assert say(plan) == (
        "Sorry, we did not understand that. Order 1002: reply 1 to keep waiting, 2 to switch to "
        "a similar item or 3 for a refund."
    )


def test_a_reply_with_nothing_open_is_told_what_happened():
    made = Settled(4, "1004", "D3", "switch", False, DAY)
    defaulted = Settled(5, "1005", "E4", "refund", True, DAY + dt.timedelta(days=1))
    latest = reply("1", [], settled=[made, defaulted])
    assert latest.outcome == "already_decided"
    assert latest.decide == ()
    assert say(latest) == (
        "Order 1005: the time to answer ended on Nov 10, so we removed the item and will refund "
        "you."
    )
    named = reply("3 D3", [TWO], settled=[made, defaulted])
    assert say(named) == "Order 1004: you already chose to switch items, on Nov 9."
    kept = reply("hello", [], settled=[Settled(6, "1006", None, "keep", True, DAY)])
    assert say(kept) == "Order 1006: the time to answer ended on Nov 9, so we kept it on order."
    assert say(reply("2", [])) == (
        "Thanks for your message. Nothing is waiting for your answer right now."
    )


def test_an_unknown_code_asks_which_order():
    plan = reply("1 Z9", [ONE, TWO])
    assert plan.outcome == "asked_order"
    assert plan.state.pending == {"awaiting": "order", "decision": "keep"}


def test_answers_are_translated_and_dates_formatted_by_the_caller():
    plan = reply("1", [], settled=[Settled(4, "1004", None, "keep", False, DAY)])
    french = {
        c.ALREADY["keep"]: "Commande %(order)s : vous avez déjà choisi d'attendre (%(date)s)."
    }
    text = c.render(plan.answer, lambda m: french.get(m, m), lambda at: "9 nov")
    assert text == "Commande 1004 : vous avez déjà choisi d'attendre (9 nov)."


def test_long_titles_are_cut_to_keep_the_list_to_one_segment():
    long = Line(
        "Professional espresso machine with dual boilers",
        (41,),
        (
            ("A", "Compact espresso machine with milk frother, brushed steel"),
            ("B", "Stovetop moka pot, six cups, aluminium, induction base"),
            ("C", "Manual lever espresso maker with pressure gauge"),
        ),
    )
    text = say(reply("2", [OpenOrder(1, "1001", "A2", (long,))]))
    assert count_segments(text).segments == 1
    assert "1 Compact espresso" in text
    assert "2 Stovetop moka" in text
    assert "3 Manual lever" in text


OPT_OUT = re.compile(r"\b(" + "|".join(sorted(OPT_OUT_WORDS)) + r")\b", re.IGNORECASE)


@given(st.sampled_from(["1", "2", "3", "keep", "swap", "?", "1 A2", "B7", "refund", "x"]))
def test_no_answer_suggests_an_opt_out_word(text):
    state = State()
    for orders in ([ONE], [ONE, TWO], [TWO], [OpenOrder(3, "1003", "C1", (SOFA,))]):
        for _ in range(2):
            plan = c.respond(read_reply(text), state, orders, ())
            assert not OPT_OUT.search(say(plan))
            state = plan.state


def test_every_msgid_but_help_is_free_of_opt_out_words():
    msgids = [v for name, v in vars(c).items() if name.isupper() and isinstance(v, str)]
    msgids += [*c.ALREADY.values(), *c.DEFAULTED.values()]
    assert c.HELP in msgids
    assert c.SORRY in msgids
    for msgid in msgids:
        if msgid in (c.HELP, c.HELP_NO_CONTACT):
            assert "Reply STOP to opt out." in msgid
        else:
            assert not OPT_OUT.search(msgid), msgid


def test_short_refs_are_derived_from_the_order_and_skip_taken_ones():
    assert machine.short_ref(0, ()) == "A1"
    assert machine.short_ref(1, ()) == "A2"
    assert machine.short_ref(9, ()) == "B1"
    assert machine.short_ref(1, {"A2"}) == "A3"
    assert machine.short_ref(206, ()) == "Z9"
    assert machine.short_ref(206, {"Z9"}) == "A1"
    every = {machine.short_ref(n, ()) for n in range(207)}
    assert len(every) == 207
    assert machine.short_ref(5, every) == "A15"
    for code in every:
        assert read_reply(f"2 {code}").order_ref == code
        assert not set(code) & set("ILO")


@given(st.dictionaries(st.integers(1, 10_000), st.sampled_from([None, "A1", "A2", "B3"])))
def test_unique_refs_keeps_unique_codes_and_renames_shared_ones(current):
    fixed = machine.unique_refs(current)
    assert set(fixed) == set(current)
    assert len(set(fixed.values())) == len(fixed)
    shared = {ref for ref in current.values() if list(current.values()).count(ref) > 1}
    for order, ref in current.items():
        if ref and ref not in shared:
            assert fixed[order] == ref
        else:
            assert fixed[order] not in set(current.values())


@pytest.mark.parametrize(
    ("state", "now", "due"),
    [
        ("open", DAY + dt.timedelta(seconds=1), True),
        ("needs_person", DAY + dt.timedelta(seconds=1), True),
        ("open", DAY, False),
        ("made", DAY + dt.timedelta(days=1), False),
        ("defaulted", DAY + dt.timedelta(days=1), False),
    ],
)
def test_overdue_is_undecided_and_past_the_deadline(state, now, due):
    assert machine.overdue(state, DAY, now) is due


def test_a_person_can_be_asked_only_while_undecided_and_the_shopper_may_still_answer():
    assert machine.escalate("open") == "needs_person"
    with pytest.raises(machine.ChoiceError):
        machine.escalate("made")
    outcome = machine.decide(
        "needs_person", None, None, "keep", None, (), DAY, DAY - dt.timedelta(days=1)
    )
    assert (outcome.state, outcome.decision) == ("made", "keep")
