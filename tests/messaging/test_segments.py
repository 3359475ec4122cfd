"""SMS segment counting and normalization: boundary tables and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.segments import (
    GSM_BASIC,
    GSM_EXTENSION,
    SegmentCount,
    count_segments,
    is_gsm7,
    normalize_sms,
)

EMOJI = "\U0001f4e6"  # package emoji, outside the BMP: a surrogate pair in UTF-16
ARABIC = "طلبك في الطريق"
UCS2_LETTER = "ê"  # not in GSM 03.38, unlike é


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SegmentCount("GSM-7", 0, 1, 160)),
        ("a", SegmentCount("GSM-7", 1, 1, 160)),
        ("a" * 160, SegmentCount("GSM-7", 160, 1, 160)),
        ("a" * 161, SegmentCount("GSM-7", 161, 2, 153)),
        ("a" * 306, SegmentCount("GSM-7", 306, 2, 153)),
        ("a" * 307, SegmentCount("GSM-7", 307, 3, 153)),
        ("€" * 80, SegmentCount("GSM-7", 160, 1, 160)),
        ("a" * 159 + "€", SegmentCount("GSM-7", 161, 2, 153)),
        # 152 septets then an escape pair: the pair moves whole to part two.
        ("a" * 152 + "€" + "a" * 152, SegmentCount("GSM-7", 306, 3, 153)),
        ("a" * 151 + "€" + "a" * 153, SegmentCount("GSM-7", 306, 2, 153)),
        ("\f", SegmentCount("GSM-7", 2, 1, 160)),
        ("é" * 160, SegmentCount("GSM-7", 160, 1, 160)),
        (UCS2_LETTER, SegmentCount("UCS-2", 1, 1, 70)),
        ("a" * 159 + UCS2_LETTER, SegmentCount("UCS-2", 160, 3, 67)),
        ("ê" * 70, SegmentCount("UCS-2", 70, 1, 70)),
        ("ê" * 71, SegmentCount("UCS-2", 71, 2, 67)),
        ("ê" * 134, SegmentCount("UCS-2", 134, 2, 67)),
        ("ê" * 135, SegmentCount("UCS-2", 135, 3, 67)),
        (EMOJI, SegmentCount("UCS-2", 2, 1, 70)),
        (EMOJI * 35, SegmentCount("UCS-2", 70, 1, 70)),
        ("a" * 69 + EMOJI, SegmentCount("UCS-2", 71, 2, 67)),
        # 66 units then a surrogate pair: the pair moves whole to part two.
        ("ê" * 66 + EMOJI + "ê" * 66, SegmentCount("UCS-2", 134, 3, 67)),
        ("ê" * 65 + EMOJI + "ê" * 67, SegmentCount("UCS-2", 134, 2, 67)),
        # Extension characters cost one UTF-16 unit once the text is UCS-2.
        ("€" + UCS2_LETTER, SegmentCount("UCS-2", 2, 1, 70)),
        (ARABIC, SegmentCount("UCS-2", len(ARABIC), 1, 70)),
        ("\u00a0", SegmentCount("UCS-2", 1, 1, 70)),
    ],
    ids=lambda value: repr(value)[:24] if isinstance(value, str) else None,
)
def test_count_segments_at_the_boundaries(text: str, expected: SegmentCount) -> None:
    assert count_segments(text) == expected


def test_character_sets_follow_gsm_03_38() -> None:
    assert len(GSM_BASIC) == 127
    assert len(GSM_EXTENSION) == 10
    assert not GSM_BASIC & GSM_EXTENSION
    assert "\x1b" not in GSM_BASIC
    assert {"é", "è", "à", "ñ", "ü", "Ç", "Δ"} <= GSM_BASIC
    assert not {"ê", "ç", "á", "í", "ó", "ú", "`"} & GSM_BASIC


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Ready\u00a0soon", "Ready soon"),
        ("10\u202f€", "10 €"),
        ("a\u2009b\u2007c\u2003d\u3000e", "a b c d e"),
        ("it\u2019s", "it's"),
        ("\u2018keep\u2019", "'keep'"),
        ("\u201cSWAP\u201d", '"SWAP"'),
        ("\u201eja\u201c", '"ja"'),
        ("5\u2032 9\u2033", "5' 9\""),
        ("wait\u2026", "wait..."),
        ("Mon\u2013Fri", "Mon-Fri"),
        ("soon \u2014 really", "soon - really"),
        ("\u22125", "-5"),
        ("e\u2011mail", "e-mail"),
        ("\u2022 one\n\u2022 two", "- one\n- two"),
        ("zero\u200bwidth\u2060joined\ufeff", "zerowidthjoined"),
        ("soft\u00adhyphen", "softhyphen"),
        # Letters, joiners and emoji carry meaning: they stay.
        ("crème brûlée", "crème brûlée"),
        (ARABIC, ARABIC),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        ("\U0001f469\u200d\U0001f4bb " + EMOJI, "\U0001f469\u200d\U0001f4bb " + EMOJI),
        ("two  spaces\tand tab", "two  spaces\tand tab"),
        ("«oui»", "«oui»"),
    ],
)
def test_normalize_sms(raw: str, normalized: str) -> None:
    assert normalize_sms(raw) == normalized


def test_normalizing_a_typical_message_saves_segments() -> None:
    text = (
        "Your order\u2019s \u201cblue mug\u201d is back\u00a0soon \u2014 reply 1, 2 or 3\u2026 " * 2
    )
    assert count_segments(text).encoding == "UCS-2"
    after = count_segments(normalize_sms(text))
    assert after.encoding == "GSM-7"
    assert after.segments < count_segments(text).segments


gsm_chars = st.sampled_from(sorted(GSM_BASIC | GSM_EXTENSION))
basic_chars = st.sampled_from(sorted(GSM_BASIC))
typographic_chars = st.sampled_from(
    "\u00a0\u202f\u2009\u2007\u200b\u2060\ufeff\u2018\u2019\u201c\u201d\u2026\u2013\u2014\u2212\u2011\u2022"
)
any_text = st.text(max_size=400)


@settings(max_examples=150)
@given(text=any_text, extra=st.characters())
def test_appending_never_lowers_the_segment_count(text: str, extra: str) -> None:
    assert count_segments(text + extra).segments >= count_segments(text).segments


@settings(max_examples=150)
@given(text=st.text(alphabet=st.one_of(gsm_chars, typographic_chars), max_size=400))
def test_normalized_typography_becomes_gsm7(text: str) -> None:
    normalized = normalize_sms(text)
    assert is_gsm7(normalized)
    assert count_segments(normalized).encoding == "GSM-7"


@settings(max_examples=150)
@given(text=st.text(alphabet=basic_chars, max_size=800))
def test_basic_gsm_text_divides_plainly(text: str) -> None:
    n = len(text)
    expected = 1 if n <= 160 else math.ceil(n / 153)
    assert count_segments(text) == SegmentCount("GSM-7", n, expected, 160 if n <= 160 else 153)


@settings(max_examples=150)
@given(text=any_text)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_sms(text)
    assert normalize_sms(once) == once


@settings(max_examples=150)
@given(text=any_text)
def test_units_match_the_encoding(text: str) -> None:
    count = count_segments(text)
    if count.encoding == "UCS-2":
        assert count.units == len(text.encode("utf-16-le")) // 2
    else:
        assert count.units == len(text) + sum(char in GSM_EXTENSION for char in text)
    assert count.segments * count.per_segment >= count.units


def reference_count(text: str) -> SegmentCount:
    """Count one character at a time, as GSM 03.38 and UCS-2 say: the straightforward way."""
    if all(char in GSM_BASIC or char in GSM_EXTENSION for char in text):
        encoding, single, multipart = "GSM-7", 160, 153
        costs = [2 if char in GSM_EXTENSION else 1 for char in text]
    else:
        encoding, single, multipart = "UCS-2", 70, 67
        costs = [len(char.encode("utf-16-le", "surrogatepass")) // 2 for char in text]
    units = sum(costs)
    if units <= single:
        return SegmentCount(encoding, units, 1, single)
    parts = [0]
    for cost in costs:
        if parts[-1] + cost > multipart:  # an escape or surrogate pair is never cut
            parts.append(0)
        parts[-1] += cost
    return SegmentCount(encoding, units, len(parts), multipart)


extension_chars = st.sampled_from(sorted(GSM_EXTENSION))
ucs2_chars = st.sampled_from(["ê", "ç", "\u00a0", "\u2019", *ARABIC])
astral_chars = st.sampled_from([EMOJI, "\U0001f469", "\U00020000"])
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@settings(max_examples=400)
@given(
    text=st.one_of(
        st.text(alphabet=basic_chars, max_size=500),
        st.text(alphabet=st.one_of(basic_chars, extension_chars), max_size=500),
        st.text(alphabet=st.one_of(basic_chars, ucs2_chars), max_size=300),
        st.text(alphabet=st.one_of(ucs2_chars, astral_chars, extension_chars), max_size=300),
        st.text(alphabet=st.one_of(ucs2_chars, lone_surrogates), max_size=200),
        any_text,
    )
)
def test_count_segments_agrees_with_a_plain_count(text: str) -> None:
    """Every path (all in C, and the walk when a character takes two units) counts alike."""
    assert count_segments(text) == reference_count(text)
    assert is_gsm7(text) == (reference_count(text).encoding == "GSM-7")
