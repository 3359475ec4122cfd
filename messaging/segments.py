"""SMS segment counting and GSM-7-friendly normalization.

An SMS is billed per segment. Text made only of GSM 03.38 characters travels as 7-bit septets
(160 in one segment, 153 per part once split, extension characters costing two); anything else
turns the whole message into UCS-2 (70 UTF-16 code units, 67 per part). `normalize_sms` removes
the typographic characters that would force UCS-2 for no visible gain, and `count_segments` says
what a text will cost. Both are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 basic character set (the escape code itself excluded: it is not text)."""

GSM_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")
"""Characters reached through the escape code: each costs two septets."""

_GSM = GSM_BASIC | GSM_EXTENSION

GSM_SINGLE = 160
GSM_MULTIPART = 153
UCS2_SINGLE = 70
UCS2_MULTIPART = 67

_SPACE = " "
_DROP = ""

# Only typography is rewritten. Letters (accented, Arabic, ...) and emoji carry meaning, and the
# zero-width joiner and non-joiner shape emoji sequences and some scripts, so they stay.
_SUBSTITUTIONS: dict[int, str] = {
    # Spaces that look like a plain space.
    0x00A0: _SPACE,  # no-break space
    0x1680: _SPACE,  # ogham space mark
    **{code: _SPACE for code in range(0x2000, 0x200B)},  # en quad .. hair space
    0x202F: _SPACE,  # narrow no-break space
    0x205F: _SPACE,  # medium mathematical space
    0x3000: _SPACE,  # ideographic space
    # Invisible characters with no effect on how the message reads.
    0x00AD: _DROP,  # soft hyphen: only a line-break hint
    0x200B: _DROP,  # zero-width space
    0x2060: _DROP,  # word joiner
    0xFEFF: _DROP,  # byte order mark / zero-width no-break space
    # Quotes and primes.
    0x2018: "'",
    0x2019: "'",
    0x201A: "'",
    0x201B: "'",
    0x2032: "'",
    0x201C: '"',
    0x201D: '"',
    0x201E: '"',
    0x201F: '"',
    0x2033: '"',
    # Dashes and hyphens.
    0x2010: "-",
    0x2011: "-",  # non-breaking hyphen
    0x2012: "-",  # figure dash
    0x2013: "-",  # en dash
    0x2014: "-",  # em dash
    0x2015: "-",  # horizontal bar
    0x2212: "-",  # minus sign
    # A bullet starts a list item; "- " reads the same on a phone and keeps the text GSM-7.
    0x2022: "-",
    0x2026: "...",
}


@dataclass(frozen=True, slots=True)
class SegmentCount:
    """What a text costs as an SMS."""

    encoding: Literal["GSM-7", "UCS-2"]
    units: int
    """Septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2."""
    segments: int
    per_segment: int
    """Capacity of one segment in units: 160/70 for a single segment, 153/67 once split."""


def normalize_sms(text: str) -> str:
    """Replace typographic characters that needlessly force UCS-2 with GSM-7 equivalents."""
    return text.translate(_SUBSTITUTIONS)


def is_gsm7(text: str) -> bool:
    """Tell whether the text can travel in the GSM-7 alphabet."""
    return _GSM.issuperset(text)


def count_segments(text: str) -> SegmentCount:
    """Count the units and segments the text takes as an SMS."""
    # Each step runs in C; only a long text with a character of two units walks it in Python.
    if _GSM.issuperset(text):
        escapes = 0 if GSM_EXTENSION.isdisjoint(text) else sum(map(text.count, GSM_EXTENSION))
        return _count("GSM-7", text, len(text) + escapes, GSM_SINGLE, GSM_MULTIPART)
    # Lone surrogates (never valid text, but a str may hold them) take one unit, as they did.
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    return _count("UCS-2", text, units, UCS2_SINGLE, UCS2_MULTIPART)


def _count(
    encoding: Literal["GSM-7", "UCS-2"], text: str, units: int, single: int, multipart: int
) -> SegmentCount:
    """Fill parts greedily so that no escape pair or surrogate pair is cut in two."""
    if units <= single:
        return SegmentCount(encoding=encoding, units=units, segments=1, per_segment=single)
    if units == len(text):  # a unit a character: every cut falls between two characters
        segments = -(-units // multipart)
        return SegmentCount(
            encoding=encoding, units=units, segments=segments, per_segment=multipart
        )
    if encoding == "GSM-7":
        costs = [2 if char in GSM_EXTENSION else 1 for char in text]
    else:
        costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multipart:
            segments, used = segments + 1, 0
        used += cost
    return SegmentCount(encoding=encoding, units=units, segments=segments, per_segment=multipart)
