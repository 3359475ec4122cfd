"""Read a shopper's SMS reply to the keep / switch / refund choice.

The reader is a small table-driven parser, pure and deterministic:

1. Carrier keywords first. When the whole message (trimmed, any case, outer punctuation and emoji
   ignored) is an opt-out, opt-in or help keyword, that is the reading, whatever else it could mean.
   Inside a longer message these words mean nothing: carriers only act on the bare keyword, so
   "stop sending" or "cancel my order" are read as unclear rather than guessed at, and "cancel"
   is never taken for a refund.
2. Normalization: compatibility forms folded (full-width digits), every script's digits made ASCII,
   case folded, Arabic letter variants, tatweel and diacritics unified; Latin accents are dropped
   for keyword matching only.
3. Tokens are split into clauses at punctuation and at words such as "but"; a negation ("don't",
   "no", "ne", "nicht", "kein", "لا", ...) cancels what follows it in its clause, and a trailing
   "nicht" or "pas" cancels the whole clause.
4. Option numbers (digits and number words) and decision words in every shipped language are
   collected. One decision, one number, or a number and a word that agree make a choice; anything
   else (no signal, two decisions, two numbers, a long message) is unclear and left to a human or a
   follow-up question.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Decision = Literal["keep", "switch", "refund"]
Kind = Literal["choice", "optout", "optin", "help", "unclear"]

OPT_OUT_WORDS: frozenset[str] = frozenset(
    {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPTOUT",
        "OPT OUT",
        "OPT-OUT",
    }
)
OPT_IN_WORDS: frozenset[str] = frozenset({"START", "UNSTOP"})
HELP_WORDS: frozenset[str] = frozenset({"HELP", "INFO"})

MAX_TOKENS = 20
"""Longer messages are conversations, not answers: a person reads them rather than a guess."""

NUMBER_DECISIONS: dict[int, Decision] = {1: "keep", 2: "switch", 3: "refund"}


@dataclass(frozen=True, slots=True)
class Reading:
    """What a reply says: a choice, a carrier keyword, or nothing we can act on."""

    kind: Kind
    decision: Decision | None = None
    number: int | None = None
    """The bare option number (1-9) given; the caller decides what it means in context."""
    order_ref: str | None = None
    """The short order reference named in the reply (such as "A7"), uppercased."""


# Keyword patterns, matched on accent-free tokens: "word" exact, "stem*" prefix, "*stem*" anywhere
# in the token (Arabic, where articles and prefixes attach to the word), and spaces separate the
# tokens of a phrase. Opt-out words never appear here. English "waiting" is left out on purpose:
# "I've been waiting for weeks" is a complaint, while "keep waiting" still reads through "keep".
_DECISION_WORDS: dict[str, dict[Decision, tuple[str, ...]]] = {
    "en": {
        "keep": ("keep*", "wait", "hold", "still want", "patient*"),
        "switch": (
            "swap*",
            "switch*",
            "exchang*",
            "substitut*",
            "replace",
            "replacement",
            "similar",
            "alternative*",
            "change",
        ),
        "refund": ("refund*", "reimburs*", "money back", "my money"),
    },
    "es": {
        "keep": ("esper*", "manten*", "conserv*", "lo quedo", "la quedo"),
        "switch": ("cambi*", "intercambi*", "sustitu*", "reemplaz*"),
        "refund": ("reembols*", "devol*", "devuelv*", "mi dinero", "el dinero", "dinero de vuelta"),
    },
    "fr": {
        "keep": ("gard*", "attend*"),
        "switch": ("echang*", "changer", "changez", "changement", "remplac*", "similaire"),
        "refund": ("rembours*", "mon argent"),
    },
    "de": {
        "keep": ("behalt*", "wart*", "abwart*"),
        "switch": ("tausch*", "umtausch*", "austausch*", "wechs*", "ersatz*", "ahnlich*"),
        "refund": (
            "erstatt*",
            "ruckerstatt*",
            "rueckerstatt*",
            "ruckzahl*",
            "rueckzahl*",
            "geld zuruck",
            "geld zurueck",
            "mein geld",
        ),
    },
    "ar": {
        "keep": ("*نتظ*", "*حتف*", "استني", "هستني"),
        "switch": ("*بدل*", "*بدال*", "*بديل*", "*تغيير*", "*مشابه*"),
        "refund": ("*سترد*", "*سترج*", "*ارجاع*", "*فلوس*", "*مبلغ*"),
    },
}

# Keyed by the case-folded token with its accents, so that French "très" is not Spanish "tres".
_NUMBER_WORDS: dict[str, int] = {
    "two": 2,
    "three": 3,
    "dos": 2,
    "tres": 3,
    "deux": 2,
    "trois": 3,
    "eins": 1,
    "zwei": 2,
    "zwo": 2,
    "drei": 3,
    "اثنين": 2,
    "اثنان": 2,
    "اتنين": 2,
    "ثنين": 2,
    "ثلاثه": 3,
    "ثلاث": 3,
    "تلاته": 3,
    "تلات": 3,
}

# Words that are also articles, pronouns or ordinals ("a similar one", "wait a second"): they count
# as a number only next to an option word or when nothing but courtesy surrounds them.
_WEAK_NUMBER_WORDS: dict[str, int] = {
    "one": 1,
    "uno": 1,
    "una": 1,
    "un": 1,
    "une": 1,
    "واحد": 1,
    "واحده": 1,
    "first": 1,
    "second": 2,
    "third": 3,
    "1st": 1,
    "2nd": 2,
    "3rd": 3,
    "primero": 1,
    "primera": 1,
    "segundo": 2,
    "segunda": 2,
    "tercero": 3,
    "tercera": 3,
    "premier": 1,
    "premiere": 1,
    "première": 1,
    "deuxième": 2,
    "deuxieme": 2,
    "seconde": 2,
    "troisième": 3,
    "troisieme": 3,
    "erste": 1,
    "ersten": 1,
    "zweite": 2,
    "zweiten": 2,
    "dritte": 3,
    "dritten": 3,
    "اول": 1,
    "الاول": 1,
    "ثاني": 2,
    "الثاني": 2,
    "ثالث": 3,
    "الثالث": 3,
}

_OPTION_WORDS = frozenset(
    {"option", "opcion", "opt", "choice", "number", "nr", "numero", "nummer", "choix", "wahl"}
    | {"auswahl", "variante", "رقم", "خيار", "الخيار", "اختيار"}
)
_COURTESY_WORDS = frozenset(
    {"please", "pls", "plz", "thanks", "thank", "you", "thx", "ok", "okay", "the"}
    | {"por", "favor", "gracias", "la", "el", "merci", "svp", "s", "il", "vous", "plait", "le"}
    | {"bitte", "danke", "die", "der", "das", "من", "فضلك", "شكرا", "لو", "سمحت"}
)

# "t" is what is left of "don't", "won't", "can't" once the apostrophe splits the word.
_NEGATORS = frozenset(
    {"no", "not", "dont", "t", "never", "non", "ne", "n", "nunca", "jamas", "nein", "kein"}
    | {"keine", "keinen", "nie", "niemals", "لا", "لن", "مش", "ما", "مو", "ليس"}
)
# Negations that may also follow the verb they cancel ("ich warte nicht", "j'attends pas").
_TRAILING_NEGATORS = frozenset({"nicht", "pas"})
_CLAUSE_WORDS = frozenset(
    {"but", "and", "pero", "sino", "y", "mais", "et", "aber", "sondern", "und", "لكن", "بل"}
)

_TOKEN = re.compile(r"[^\W_]+|[.,;:!?¡¿؟،؛\n]")
_ORDER_REF = re.compile(r"[a-z][0-9]{1,2}")
_OUTER_NOISE = re.compile(r"^[\W_]+|[\W_]+$")
# Hamza-carrying and wasla alefs to bare alef, alef maqsura to yeh, teh marbuta to heh.
_ARABIC_LETTERS = str.maketrans(
    {"\u0623": "\u0627", "\u0625": "\u0627", "\u0622": "\u0627", "\u0671": "\u0627"}
    | {"\u0649": "\u064a", "\u0629": "\u0647"}
)
_ARABIC_MARKS = re.compile("[\u0640\u064b-\u065f\u0670]")  # tatweel, harakat, dagger alef


@dataclass(frozen=True, slots=True)
class _Token:
    light: str
    """Case-folded, with Latin accents kept."""
    plain: str
    """Case-folded and accent-free: the form keywords match."""


@dataclass(frozen=True, slots=True)
class _Pattern:
    parts: tuple[str, ...]
    decision: Decision

    def matches(self, tokens: list[_Token], start: int) -> bool:
        """Tell whether the pattern's tokens begin at `start`."""
        if start + len(self.parts) > len(tokens):
            return False
        return all(
            _part_matches(part, token.plain)
            for part, token in zip(self.parts, tokens[start:], strict=False)
        )


def _part_matches(part: str, word: str) -> bool:
    """Match one pattern token: exact, prefix ("stem*") or anywhere ("*stem*")."""
    if part.startswith("*"):
        return part.strip("*") in word
    if part.endswith("*"):
        return word.startswith(part[:-1])
    return word == part


def _compile(tables: dict[str, dict[Decision, tuple[str, ...]]]) -> tuple[_Pattern, ...]:
    """Flatten the keyword tables, longest phrases first so they win over their words."""
    patterns = [
        _Pattern(tuple(text.split()), decision)
        for table in tables.values()
        for decision, texts in table.items()
        for text in texts
    ]
    return tuple(sorted(patterns, key=lambda pattern: -len(pattern.parts)))


_PATTERNS = _compile(_DECISION_WORDS)


def read_reply(text: str) -> Reading:
    """Read an SMS reply to the choice message."""
    light = _normalize(text)
    keyword = " ".join(_OUTER_NOISE.sub("", light).split()).upper()
    if keyword in OPT_OUT_WORDS:
        return Reading("optout")
    if keyword in OPT_IN_WORDS:
        return Reading("optin")
    if keyword in HELP_WORDS:
        return Reading("help")

    clauses = _clauses(light)
    words = [token for clause in clauses for token in clause]
    refs = {token.plain.upper() for token in words if _ORDER_REF.fullmatch(token.plain)}
    if len(refs) > 1:
        return Reading("unclear")
    order_ref = next(iter(refs), None)
    if len(words) > MAX_TOKENS:
        return Reading("unclear", order_ref=order_ref)

    numbers: set[int] = set()
    decisions: set[Decision] = set()
    for clause in clauses:
        clause_numbers, clause_decisions = _read_clause(clause, words)
        numbers |= clause_numbers
        decisions |= clause_decisions
    return _decide(numbers, decisions, order_ref)


def _normalize(text: str) -> str:
    """Fold case, compatibility forms, digits and Arabic letter variants; keep Latin accents."""
    folded = unicodedata.normalize("NFKC", text)
    folded = "".join(
        str(unicodedata.decimal(char)) if not char.isascii() and char.isdecimal() else char
        for char in folded
    )
    folded = _ARABIC_MARKS.sub("", folded.casefold())
    return folded.translate(_ARABIC_LETTERS)


def _strip_accents(word: str) -> str:
    """Drop combining marks, so "devolución" matches "devolucion"."""
    decomposed = unicodedata.normalize("NFD", word)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _clauses(light: str) -> list[list[_Token]]:
    """Split the text into clauses of tokens at punctuation and joining words."""
    clauses: list[list[_Token]] = [[]]
    for match in _TOKEN.finditer(light):
        word = match.group()
        plain = _strip_accents(word)
        if not word[0].isalnum() or plain in _CLAUSE_WORDS:
            clauses.append([])
        else:
            clauses[-1].append(_Token(light=word, plain=plain))
    return [clause for clause in clauses if clause]


def _read_clause(clause: list[_Token], words: list[_Token]) -> tuple[set[int], set[Decision]]:
    """Collect the numbers and decisions a clause asserts, leaving out negated ones."""
    if any(token.plain in _TRAILING_NEGATORS for token in clause):
        return set(), set()
    numbers: set[int] = set()
    decisions: set[Decision] = set()
    index = 0
    while index < len(clause):
        token = clause[index]
        if token.plain in _NEGATORS:
            break
        number = _number(clause, index, words)
        if number is not None:
            numbers.add(number)
            index += 1
            continue
        pattern = next((p for p in _PATTERNS if p.matches(clause, index)), None)
        if pattern is None:
            index += 1
            continue
        decisions.add(pattern.decision)
        index += len(pattern.parts)
    return numbers, decisions


def _number(clause: list[_Token], index: int, words: list[_Token]) -> int | None:
    """Return the option number the token at `index` gives, if any."""
    token = clause[index]
    if len(token.plain) == 1 and token.plain in "123456789":
        return int(token.plain)
    if token.light in _NUMBER_WORDS:
        return _NUMBER_WORDS[token.light]
    weak = _WEAK_NUMBER_WORDS.get(token.light)
    if weak is None:
        return None
    neighbours = clause[max(index - 1, 0) : index] + clause[index + 1 : index + 2]
    if any(other.plain in _OPTION_WORDS for other in neighbours):
        return weak
    if _only_courtesy(other for other in words if other is not token):
        return weak
    return None


def _only_courtesy(tokens: Iterable[_Token]) -> bool:
    """Tell whether the tokens add nothing but politeness, option words or an order reference."""
    return all(
        token.plain in _COURTESY_WORDS
        or token.plain in _OPTION_WORDS
        or _ORDER_REF.fullmatch(token.plain)
        for token in tokens
    )


def _decide(numbers: set[int], decisions: set[Decision], order_ref: str | None) -> Reading:
    """Turn what the clauses asserted into one reading, or unclear when they disagree."""
    if len(numbers) > 1 or len(decisions) > 1 or not (numbers or decisions):
        return Reading("unclear", order_ref=order_ref)
    number = next(iter(numbers), None)
    word = next(iter(decisions), None)
    implied = NUMBER_DECISIONS.get(number) if number is not None else None
    if number is not None and word is not None:
        # A number past the three options can only pick among alternatives: it fits "switch".
        agrees = implied == word if implied is not None else word == "switch"
        if not agrees:
            return Reading("unclear", order_ref=order_ref)
    return Reading("choice", decision=word or implied, number=number, order_ref=order_ref)
