"""Reading SMS replies to the keep / switch / refund choice: real replies and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.replies import (
    HELP_WORDS,
    NUMBER_DECISIONS,
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    Decision,
    Reading,
    read_reply,
)

UNCLEAR = Reading("unclear")
OPTOUT = Reading("optout")
OPTIN = Reading("optin")
HELP = Reading("help")


def choice(decision: Decision | None, number: int | None = None, ref: str | None = None) -> Reading:
    """Build the reading of a choice."""
    return Reading("choice", decision=decision, number=number, order_ref=ref)


KEEP, SWITCH, REFUND = choice("keep"), choice("switch"), choice("refund")

REPLIES: list[tuple[str, Reading]] = [
    # Option digits, in every shape a phone produces.
    ("1", choice("keep", 1)),
    ("2.", choice("switch", 2)),
    ("#3", choice("refund", 3)),
    ("option 3", choice("refund", 3)),
    ("3)", choice("refund", 3)),
    ("(2)", choice("switch", 2)),
    ("2!", choice("switch", 2)),
    ("1 👍", choice("keep", 1)),
    (" 2 ", choice("switch", 2)),
    ("2\ufe0f\u20e3", choice("switch", 2)),
    ("opción 2", choice("switch", 2)),
    ("Option 2 bitte", choice("switch", 2)),
    ("٢", choice("switch", 2)),
    ("۲", choice("switch", 2)),
    ("\uff12", choice("switch", 2)),  # full-width digit
    ("الخيار ٣", choice("refund", 3)),
    ("5", choice(None, 5)),
    ("0", UNCLEAR),
    ("12", UNCLEAR),
    # Number words and ordinals.
    ("One", choice("keep", 1)),
    ("two please", choice("switch", 2)),
    ("THREE", choice("refund", 3)),
    ("uno", choice("keep", 1)),
    ("dos por favor", choice("switch", 2)),
    ("tres", choice("refund", 3)),
    ("deux", choice("switch", 2)),
    ("trois merci", choice("refund", 3)),
    ("option un", choice("keep", 1)),
    ("eins", choice("keep", 1)),
    ("zwei", choice("switch", 2)),
    ("zwo", choice("switch", 2)),
    ("drei", choice("refund", 3)),
    ("واحد", choice("keep", 1)),
    ("اثنين", choice("switch", 2)),
    ("إثنان", choice("switch", 2)),
    ("ثلاثة", choice("refund", 3)),
    ("the second option", choice("switch", 2)),
    ("la segunda opción", choice("switch", 2)),
    ("الخيار الثاني", choice("switch", 2)),
    # English decision words.
    ("keep", KEEP),
    ("Keep it please", KEEP),
    ("I'll wait", KEEP),
    ("I\u2019ll keep waiting", KEEP),
    ("wait!!", KEEP),
    ("swap", SWITCH),
    ("SWITCH", SWITCH),
    ("exchange it", SWITCH),
    ("I'll take the similar one", SWITCH),
    ("refund", REFUND),
    ("Refund please 🙏", REFUND),
    ("money back", REFUND),
    ("give me my money back", REFUND),
    # Spanish.
    ("esperar", KEEP),
    ("Espero, gracias", KEEP),
    ("mantener el pedido", KEEP),
    ("cambiar", SWITCH),
    ("Cambio", SWITCH),
    ("reembolso", REFUND),
    ("devolución", REFUND),
    ("devolucion por favor", REFUND),
    ("quiero mi dinero", REFUND),
    # French.
    ("garder", KEEP),
    ("j'attends", KEEP),
    ("J\u2019attends", KEEP),
    ("attendre", KEEP),
    ("échanger", SWITCH),
    ("echanger svp", SWITCH),
    ("changer", SWITCH),
    ("je veux un échange", SWITCH),
    ("remboursement", REFUND),
    ("Rembourser s'il vous plaît", REFUND),
    # German.
    ("behalten", KEEP),
    ("warten", KEEP),
    ("Ich warte", KEEP),
    ("tauschen", SWITCH),
    ("Umtauschen bitte", SWITCH),
    ("wechseln", SWITCH),
    ("Erstattung", REFUND),
    ("Geld zurück", REFUND),
    ("geld zurueck bitte", REFUND),
    ("Rückerstattung", REFUND),
    # Arabic, with and without hamza, diacritics and tatweel.
    ("انتظر", KEEP),
    ("سأنتظر", KEEP),
    ("سانتظر", KEEP),
    ("سأنْتَظِر", KEEP),
    ("احتفظ", KEEP),
    ("أحتفظ بالطلب", KEEP),
    ("تبديل", SWITCH),
    ("استبدال", SWITCH),
    ("اسـتـبـدال", SWITCH),
    ("استرداد", REFUND),
    ("استرجاع المبلغ", REFUND),
    ("إسترجاع المبلغ من فضلك", REFUND),
    # Negation.
    ("don't refund, I'll wait", KEEP),
    ("I do not want to wait, refund", REFUND),
    ("No quiero esperar, prefiero el reembolso", REFUND),
    ("je n'attends pas, remboursement svp", REFUND),
    ("Ich will nicht warten, Geld zurück", REFUND),
    ("ich warte nicht, geld zurück", REFUND),
    ("kein Umtausch, ich warte", KEEP),
    ("لا أريد الانتظار، أريد استرداد المبلغ", REFUND),
    ("I don't want to switch to a similar item", UNCLEAR),
    ("not 3", UNCLEAR),
    # Numbers and words together, and conflicts.
    ("2 swap", choice("switch", 2)),
    ("3 - refund please", choice("refund", 3)),
    ("1 refund", UNCLEAR),
    ("1 or 3", UNCLEAR),
    ("1, 2 or 3?", UNCLEAR),
    ("keep or swap", UNCLEAR),
    ("refund or wait, not sure", UNCLEAR),
    ("5 swap", choice("switch", 5)),
    ("5 refund", UNCLEAR),
    # Order references.
    ("2 A7", choice("switch", 2, "A7")),
    ("A7 3", choice("refund", 3, "A7")),
    ("a7 2", choice("switch", 2, "A7")),
    ("A7: refund", choice("refund", None, "A7")),
    ("a12 keep", choice("keep", None, "A12")),
    ("K12 - option 1", choice("keep", 1, "K12")),
    ("A7 2, K12 3", UNCLEAR),
    ("A7", Reading("unclear", order_ref="A7")),
    # Carrier keywords: the whole message only.
    ("STOP", OPTOUT),
    ("stop", OPTOUT),
    ("Stop.", OPTOUT),
    ("sToP", OPTOUT),
    ("STOP 🙏", OPTOUT),
    ("  stop!!  ", OPTOUT),
    ("Stopall", OPTOUT),
    ("unsubscribe", OPTOUT),
    ("Cancel", OPTOUT),
    ("CANCEL.", OPTOUT),
    ("end", OPTOUT),
    ("Quit", OPTOUT),
    ("revoke", OPTOUT),
    ("OptOut", OPTOUT),
    ("opt out", OPTOUT),
    ("Opt-Out", OPTOUT),
    ("\uff33\uff34\uff2f\uff30", OPTOUT),  # full-width letters
    ("START", OPTIN),
    ("unstop", OPTIN),
    ("Help", HELP),
    ("help?", HELP),
    ("INFO", HELP),
    ("cancel my order", UNCLEAR),
    ("cancel please", UNCLEAR),
    ("stop sending", UNCLEAR),
    ("stop stop", UNCLEAR),
    ("help me", UNCLEAR),
    ("annuler", UNCLEAR),
    ("Stornieren", UNCLEAR),
    ("the end", UNCLEAR),
    # Nothing to act on.
    ("", UNCLEAR),
    ("   ", UNCLEAR),
    ("👍", UNCLEAR),
    ("🙏🙏", UNCLEAR),
    ("yes", UNCLEAR),
    ("No", UNCLEAR),
    ("ok", UNCLEAR),
    ("Sí", UNCLEAR),
    ("oui", UNCLEAR),
    ("ja", UNCLEAR),
    ("نعم", UNCLEAR),
    ("asdfgh", UNCLEAR),
    ("where is my package?", UNCLEAR),
    ("Where is my package, I've been waiting forever", UNCLEAR),
    ("merci, très gentil", UNCLEAR),
    ("wait a second", KEEP),
    (
        "Hi, I ordered a blue mug three weeks ago and the tracking page still says it is on "
        "its way, can you tell me when it arrives or should I refund",
        UNCLEAR,
    ),
]


@pytest.mark.parametrize(("text", "expected"), REPLIES, ids=[text[:30] for text, _ in REPLIES])
def test_read_reply(text: str, expected: Reading) -> None:
    assert read_reply(text) == expected


def test_the_table_covers_every_kind_and_language() -> None:
    assert len(REPLIES) >= 80
    kinds = {reading.kind for _, reading in REPLIES}
    assert kinds == {"choice", "optout", "optin", "help", "unclear"}


def test_keyword_sets() -> None:
    assert {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"} <= (
        OPT_OUT_WORDS
    )
    assert {"START", "UNSTOP"} == OPT_IN_WORDS
    assert {"HELP", "INFO"} == HELP_WORDS
    assert not OPT_OUT_WORDS & (OPT_IN_WORDS | HELP_WORDS)


@settings(max_examples=200)
@given(text=st.text(max_size=300))
def test_read_reply_never_raises_and_stays_consistent(text: str) -> None:
    reading = read_reply(text)
    if reading.kind == "choice":
        assert reading.decision is not None or reading.number is not None
        if reading.number in NUMBER_DECISIONS:
            assert reading.decision == NUMBER_DECISIONS[reading.number]
    else:
        assert reading.decision is None
        assert reading.number is None
    if reading.number is not None:
        assert 1 <= reading.number <= 9
    if reading.order_ref is not None:
        assert reading.order_ref.isupper()


def _mixed_case(word: str, flips: list[bool]) -> str:
    """Flip the case of the letters where `flips` says so."""
    return "".join(
        char.swapcase() if index < len(flips) and flips[index] else char
        for index, char in enumerate(word)
    )


space = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000", max_size=4)


@settings(max_examples=150)
@given(
    word=st.sampled_from(sorted(OPT_OUT_WORDS)),
    flips=st.lists(st.booleans(), max_size=11),
    before=space,
    after=space,
)
def test_an_opt_out_word_alone_is_always_an_opt_out(
    word: str, flips: list[bool], before: str, after: str
) -> None:
    assert read_reply(before + _mixed_case(word, flips) + after) == OPTOUT


# Words and marks that carry no decision: around an opt-out word they must not make a choice.
neutral = st.sampled_from(
    [
        *("please", "my", "order", "now", "the", "it", "all", "sending", "me", "thanks", "bitte"),
        *("!", "?", ".", ",", "🙏", "👍", "\u2019", "-"),
    ]
)
opt_out_word = st.builds(
    _mixed_case, st.sampled_from(sorted(OPT_OUT_WORDS)), st.lists(st.booleans(), max_size=11)
)


@settings(max_examples=150)
@given(parts=st.lists(st.one_of(opt_out_word, neutral), min_size=1, max_size=8))
def test_an_opt_out_word_is_never_read_as_a_choice(parts: list[str]) -> None:
    assert read_reply(" ".join(parts)).kind != "choice"
