"""Check a theme's colour pairs against the WCAG 2.x contrast minimums.

Colours are read with tinycss2's CSS Color 4 parser: hex (``#rgb``, ``#rgba``, ``#rrggbb``,
``#rrggbbaa``), ``rgb()``/``rgba()`` in the comma and space syntaxes, ``hsl()``/``hsla()``,
``hwb()``, ``color(srgb …)`` and every CSS named colour. A colour must be opaque (alpha 1): a
translucent one has no contrast of its own, it depends on what lies behind it. ``currentcolor``
and colours outside sRGB (``lab()``, ``oklch()``, ``color(display-p3 …)``) are refused.
Channels outside 0-255 are clamped, as browsers do.

Luminance and ratio follow WCAG 2.2 to the letter: each sRGB channel c in [0, 1] becomes
c / 12.92 when c <= 0.04045, else ((c + 0.055) / 1.055) ** 2.4 (WCAG 2.0 printed 0.03928; no
8-bit channel lies between the two, so hex colours give the same result under either); then
L = 0.2126 R + 0.7152 G + 0.0722 B and ratio = (L_lighter + 0.05) / (L_darker + 0.05), from 1
to 21. A pair passes when the exact ratio reaches the minimum; it is never rounded up to pass.

Errors::

    ValueError
     └── ColorError    a colour cannot be read or checked; names the theme token if any
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tinycss2.color4 import parse_color as _parse_css_color

DEFAULT_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("text", "background", 4.5),
    ("link", "background", 4.5),
    ("button_text", "accent", 4.5),
    ("muted_text", "surface", 4.5),
)
_LEVELS = {3.0: "WCAG AA (large text)", 4.5: "WCAG AA", 7.0: "WCAG AAA"}


class ColorError(ValueError):
    """A colour cannot be read or checked; `token` names the theme token it came from."""

    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


@dataclass(frozen=True, slots=True)
class Rgb:
    """An opaque sRGB colour, each channel from 0 to 1."""

    red: float
    green: float
    blue: float

    @property
    def hex(self) -> str:
        """Return the colour as ``#rrggbb``, lower case."""
        return "#" + "".join(f"{round(c * 255):02x}" for c in (self.red, self.green, self.blue))


@dataclass(frozen=True, slots=True)
class ContrastProblem:
    """A foreground/background pair of theme tokens below its minimum contrast."""

    foreground: str
    background: str
    foreground_color: str
    background_color: str
    ratio: float
    minimum: float
    message: str


def parse_color(value: str) -> Rgb:
    """Read an opaque sRGB CSS colour; raise `ColorError` for anything else."""
    if not isinstance(value, str):
        raise ColorError(f"{value!r} is not a CSS colour")
    try:
        color = _parse_css_color(value)
    except Exception as error:  # tinycss2 trips on some malformed input (e.g. "color()")
        raise ColorError(f"{value!r} is not a CSS colour") from error
    if color is None:
        raise ColorError(f"{value!r} is not a CSS colour")
    if color == "currentcolor":
        raise ColorError(f"{value!r} follows the text colour; give a fixed colour")
    if color.alpha != 1:
        raise ColorError(
            f"{value!r} is translucent; its contrast depends on what is behind it, "
            "so give an opaque colour"
        )
    if color.space in ("hsl", "hwb"):
        color = color.to("srgb")
    if color.space != "srgb":
        raise ColorError(f"{value!r} is outside sRGB; use hex, rgb(), hsl() or a colour name")
    red, green, blue = (min(max(c or 0.0, 0.0), 1.0) for c in color.coordinates)
    return Rgb(red, green, blue)


def relative_luminance(color: str | Rgb) -> float:
    """Return the WCAG 2.2 relative luminance of `color`, from 0 (black) to 1 (white)."""
    rgb = color if isinstance(color, Rgb) else parse_color(color)
    red, green, blue = (_linear(c) for c in (rgb.red, rgb.green, rgb.blue))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(a: str | Rgb, b: str | Rgb) -> float:
    """Return the WCAG 2.2 contrast ratio of two colours, from 1 to 21, whichever is lighter."""
    lighter, darker = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def check_theme_contrast(
    tokens: Mapping[str, str], pairs: Sequence[tuple[str, str, float]] = DEFAULT_PAIRS
) -> list[ContrastProblem]:
    """List each (foreground, background, minimum) pair of `tokens` below its minimum.

    Raises `ColorError` naming the token when a token is missing or is not a colour that can
    be checked.
    """
    problems: list[ContrastProblem] = []
    for foreground, background, minimum in pairs:
        front, back = _token_color(tokens, foreground), _token_color(tokens, background)
        ratio = contrast_ratio(front, back)
        if ratio >= minimum:
            continue
        shown = _shown_ratio(ratio, minimum)
        level = _LEVELS.get(float(minimum), "this check")
        message = (
            f"{foreground} {front.hex} on {background} {back.hex} is {shown:g}:1; "
            f"{level} needs {minimum:g}:1"
        )
        problems.append(
            ContrastProblem(foreground, background, front.hex, back.hex, shown, minimum, message)
        )
    return problems


def _linear(channel: float) -> float:
    if channel <= 0.04045:
        return channel / 12.92
    return float(((channel + 0.055) / 1.055) ** 2.4)


def _token_color(tokens: Mapping[str, str], token: str) -> Rgb:
    if token not in tokens:
        raise ColorError(f"theme token {token!r} is missing", token=token)
    try:
        return parse_color(tokens[token])
    except ColorError as error:
        raise ColorError(f"theme token {token!r}: {error}", token=token) from error


def _shown_ratio(ratio: float, minimum: float) -> float:
    """Round to 2 decimals, but never up to the minimum a failing ratio missed (4.499 -> 4.49)."""
    shown = round(ratio, 2)
    if shown >= minimum:
        shown = math.floor(ratio * 100) / 100
    return shown
