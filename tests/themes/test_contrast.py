"""Theme colour contrast: WCAG 2.2 luminance and ratio, colour parsing, and theme checks."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.themes.contrast import (
    DEFAULT_PAIRS,
    ColorError,
    ContrastProblem,
    Rgb,
    check_theme_contrast,
    contrast_ratio,
    parse_color,
    relative_luminance,
)

GOOD_THEME = {
    "text": "#1a1a1a",
    "background": "#ffffff",
    "link": "#0b5cad",
    "button_text": "#ffffff",
    "accent": "#00664f",
    "muted_text": "#595959",
    "surface": "#f5f5f5",
}


def test_black_on_white_is_exactly_21() -> None:
    assert contrast_ratio("#000000", "#ffffff") == 21.0


def test_same_colour_is_exactly_1() -> None:
    assert contrast_ratio("#3a7", "#33aa77") == 1.0


def test_ratio_is_symmetric() -> None:
    assert contrast_ratio("#777", "white") == contrast_ratio("white", "#777")


@pytest.mark.parametrize(
    ("foreground", "background", "expected"),
    [
        ("#777777", "#ffffff", 4.4781),
        ("#767676", "#ffffff", 4.5422),
        ("#0000ee", "#ffffff", 9.3976),
        ("#ffffff", "#00aa77", 2.9930),
        ("#808080", "#000000", 5.3172),
    ],
)
def test_known_ratios(foreground: str, background: str, expected: float) -> None:
    assert contrast_ratio(foreground, background) == pytest.approx(expected, abs=1e-4)


def test_relative_luminance_of_known_colours() -> None:
    assert relative_luminance("#ffffff") == pytest.approx(1.0)
    assert relative_luminance("#000000") == 0.0
    assert relative_luminance("#808080") == pytest.approx(0.2158605)
    assert relative_luminance("#ff0000") == pytest.approx(0.2126)
    assert relative_luminance("#00ff00") == pytest.approx(0.7152)
    assert relative_luminance("#0000ff") == pytest.approx(0.0722)


def test_linearisation_switches_at_the_wcag_22_threshold() -> None:
    # 4% = 0.04 lies between WCAG 2.0's 0.03928 and WCAG 2.2's 0.04045: 2.2 keeps it linear.
    assert relative_luminance("rgb(4% 4% 4%)") == pytest.approx(0.04 / 12.92)
    # 8-bit neighbours of the threshold fall on the same side under either wording.
    assert relative_luminance("#0a0a0a") == pytest.approx((10 / 255) / 12.92)
    assert relative_luminance("#0b0b0b") == pytest.approx(((11 / 255 + 0.055) / 1.055) ** 2.4)


@pytest.mark.parametrize(
    "text",
    [
        "#fff",
        "#FFFFFF",
        "#ffff",
        "#ffffffff",
        " #fff ",
        "white",
        "WHITE",
        "rgb(255, 255, 255)",
        "rgb(255 255 255)",
        "rgb(255 255 255 / 1)",
        "rgba(255, 255, 255, 1)",
        "rgb(100% 100% 100%)",
        "hsl(0 0% 100%)",
        "hsla(0, 0%, 100%, 1)",
        "hwb(0 100% 0%)",
        "color(srgb 1 1 1)",
    ],
)
def test_white_in_every_accepted_form(text: str) -> None:
    assert parse_color(text) == Rgb(1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("text", "hex_form"),
    [
        ("#3a7", "#33aa77"),
        ("rebeccapurple", "#663399"),
        ("navy", "#000080"),
        ("hsl(120 100% 25%)", "#008000"),
        ("rgb(300, -5, 0)", "#ff0000"),
    ],
)
def test_colours_normalise_to_hex(text: str, hex_form: str) -> None:
    assert parse_color(text).hex == hex_form


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is not a CSS colour"),
        ("blurple", "is not a CSS colour"),
        ("#ggg", "is not a CSS colour"),
        ("#12345", "is not a CSS colour"),
        ("red blue", "is not a CSS colour"),
        ("var(--brand)", "is not a CSS colour"),
        ("url(x.png)", "is not a CSS colour"),
        ("color()", "is not a CSS colour"),
        ("rgba(0, 0, 0, .5)", "is translucent"),
        ("#0008", "is translucent"),
        ("#000000fe", "is translucent"),
        ("transparent", "is translucent"),
        ("currentColor", "follows the text colour"),
        ("oklch(50% 0.1 20)", "is outside sRGB"),
        ("color(display-p3 1 0 0)", "is outside sRGB"),
    ],
)
def test_unusable_colours_are_refused(text: str, says: str) -> None:
    with pytest.raises(ColorError, match=says) as caught:
        parse_color(text)
    assert caught.value.token is None


def test_a_good_theme_has_no_problems() -> None:
    assert check_theme_contrast(GOOD_THEME, DEFAULT_PAIRS) == []


def test_a_failing_pair_names_both_tokens_and_colours() -> None:
    tokens = {"text": "#777", "background": "white"}

    problems = check_theme_contrast(tokens, [("text", "background", 4.5)])

    assert problems == [
        ContrastProblem(
            foreground="text",
            background="background",
            foreground_color="#777777",
            background_color="#ffffff",
            ratio=4.48,
            minimum=4.5,
            message="text #777777 on background #ffffff is 4.48:1; WCAG AA needs 4.5:1",
        )
    ]


def test_767676_on_white_passes_aa() -> None:
    tokens = {"text": "#767676", "background": "#ffffff"}
    assert check_theme_contrast(tokens, [("text", "background", 4.5)]) == []


def test_a_ratio_just_short_is_never_shown_as_the_minimum() -> None:
    tokens = {"link": "#d24800", "background": "#ffffff"}  # 4.4994:1, which rounds to 4.50

    [problem] = check_theme_contrast(tokens, [("link", "background", 4.5)])

    assert problem.ratio == 4.49
    assert problem.message == "link #d24800 on background #ffffff is 4.49:1; WCAG AA needs 4.5:1"


@pytest.mark.parametrize(
    ("minimum", "level"),
    [(3, "WCAG AA (large text) needs 3:1"), (7, "WCAG AAA needs 7:1"), (5, "this check needs 5:1")],
)
def test_the_message_names_the_level(minimum: float, level: str) -> None:
    tokens = {"text": "#999999", "background": "#ffffff"}  # 2.85:1

    [problem] = check_theme_contrast(tokens, [("text", "background", minimum)])

    assert problem.message == f"text #999999 on background #ffffff is 2.85:1; {level}"


def test_every_failing_pair_is_reported_in_order() -> None:
    tokens = {**GOOD_THEME, "link": "#66aaff", "muted_text": "#aaaaaa"}

    problems = check_theme_contrast(tokens, DEFAULT_PAIRS)

    assert [(p.foreground, p.background) for p in problems] == [
        ("link", "background"),
        ("muted_text", "surface"),
    ]


def test_an_invalid_token_colour_names_the_token() -> None:
    tokens = {**GOOD_THEME, "accent": "blurple"}

    with pytest.raises(ColorError, match="theme token 'accent': 'blurple' is not a CSS colour"):
        check_theme_contrast(tokens, DEFAULT_PAIRS)


def test_a_translucent_token_names_the_token() -> None:
    tokens = {**GOOD_THEME, "surface": "rgba(255, 255, 255, .8)"}

    with pytest.raises(ColorError) as caught:
        check_theme_contrast(tokens, DEFAULT_PAIRS)
    assert caught.value.token == "surface"
    assert "translucent" in str(caught.value)


def test_a_missing_token_names_the_token() -> None:
    tokens = {"text": "#000000"}

    with pytest.raises(ColorError, match="theme token 'background' is missing") as caught:
        check_theme_contrast(tokens, [("text", "background", 4.5)])
    assert caught.value.token == "background"


hex_colours = st.integers(0, 0xFFFFFF).map(lambda n: f"#{n:06x}")


@settings(max_examples=300, deadline=None)
@given(hex_colours, hex_colours)
def test_ratio_is_between_1_and_21_and_symmetric(a: str, b: str) -> None:
    ratio = contrast_ratio(a, b)
    assert 1.0 <= ratio <= 21.0
    assert ratio == contrast_ratio(b, a)
    assert contrast_ratio(a, a) == 1.0


@settings(max_examples=300, deadline=None)
@given(hex_colours)
def test_hex_round_trips_and_luminance_is_in_range(colour: str) -> None:
    assert parse_color(colour).hex == colour
    assert 0.0 <= relative_luminance(colour) <= 1.0 + 1e-12


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="#0123456789abcdefgrbhslwa(),%/ .-", max_size=30) | st.text(max_size=30))
def test_parse_color_raises_nothing_but_color_error(text: str) -> None:
    try:
        colour = parse_color(text)
    except ColorError:
        return
    assert all(0.0 <= c <= 1.0 for c in (colour.red, colour.green, colour.blue))
