r"""Sanitise a brand's custom CSS for its tracking page: keep only what an allowlist names.

The source is parsed with tinycss2 and re-serialised from the parsed tokens, never copied, so a
CSS escape is judged by what it decodes to (``\75 rl(`` is a ``url(``, ``@\69mport`` an
``@import``, ``c\olor`` a ``color``) and comments, which could hide or join tokens, never reach
the output. Each emitted piece is parsed again and must come out the same, so what a browser
reads is what was checked, and sanitising twice changes nothing.

Decisions:

- Rules: style rules, ``@media`` and ``@supports`` (their rules sanitised the same way, up to
  ``MAX_NESTING`` deep), ``@font-face`` and ``@keyframes``. Every other at-rule goes, and so do
  rules nested in a style rule (CSS nesting).
- Properties: ``ALLOWED_PROPERTIES`` and custom properties (``--*``). ``position`` may only be
  ``static``, ``relative`` or ``sticky``: ``fixed`` and ``absolute`` would let brand CSS lay a
  box over the page's own statuses, dates and choice buttons (a fake overlay).
- Values: ASCII identifiers, numbers, hex colours, strings without quotes, backslashes, angle
  brackets or control characters, and the functions in ``ALLOWED_FUNCTIONS``. ``url()`` only in
  ``URL_PROPERTIES`` and ``@font-face src``, and only for an ``https://`` URL under one of the
  ``asset_origins`` or a same-origin path under ``/assets/`` without ``..``: no ``data:``,
  ``javascript:`` or protocol-relative URL. Custom properties carry no ``url()``, so ``var()``
  cannot move one into a property that must not load it. ``!important`` is kept.
- Selectors: ordinary selectors; attribute selectors only with ``=``, ``~=`` or ``|=``, since
  the substring matchers (``^=``, ``$=``, ``*=``) are how CSS reads an attribute out, a
  character at a time, through background URLs. With a ``scope`` (e.g. ``".wa-page"``) every
  selector is put under it and a leading ``:root``, ``html`` or ``body`` becomes the scope, so
  brand CSS cannot restyle anything outside the page's container.
- Output: one canonical form (two-space indents, a declaration a line) that never contains a
  backslash, ``<``, ``-->`` or ``@import``, in any case: safe inside ``<style>``.

Errors::

    ValueError
     └── CssRejected    the source is over MAX_SOURCE_BYTES
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import tinycss2

MAX_SOURCE_BYTES = 50 * 1024
MAX_NESTING = 8

_BOX = ("", "-top", "-right", "-bottom", "-left", "-block", "-block-start", "-block-end",
        "-inline", "-inline-start", "-inline-end")  # fmt: skip
_CORNERS = ("top-left", "top-right", "bottom-right", "bottom-left", "start-start", "start-end",
            "end-start", "end-end")  # fmt: skip

ALLOWED_PROPERTIES = frozenset(
    {f"margin{side}" for side in _BOX}
    | {f"padding{side}" for side in _BOX}
    | {f"border{side}{part}" for side in _BOX for part in ("", "-width", "-style", "-color")}
    | {f"border-{corner}-radius" for corner in _CORNERS}
    | {
        # colour and background
        "color", "opacity", "accent-color", "caret-color", "fill", "stroke", "stroke-width",
        "background", "background-color", "background-image", "background-position",
        "background-position-x", "background-position-y", "background-size",
        "background-repeat", "background-origin", "background-clip", "background-attachment",
        "background-blend-mode",
        # borders, outlines, shadows
        "border-radius", "border-collapse", "border-spacing", "border-image",
        "border-image-source", "border-image-slice", "border-image-width",
        "border-image-outset", "border-image-repeat", "outline", "outline-color",
        "outline-style", "outline-width", "outline-offset", "box-shadow", "text-shadow",
        # size
        "width", "height", "min-width", "max-width", "min-height", "max-height",
        "inline-size", "block-size", "min-inline-size", "max-inline-size", "min-block-size",
        "max-block-size", "box-sizing", "aspect-ratio", "overflow", "overflow-x",
        "overflow-y", "object-fit", "object-position",
        # type
        "font", "font-family", "font-size", "font-style", "font-weight", "font-variant",
        "font-variant-numeric", "font-variant-caps", "font-stretch", "font-feature-settings",
        "font-variation-settings", "font-kerning", "font-optical-sizing", "font-synthesis",
        "-webkit-font-smoothing", "-moz-osx-font-smoothing", "line-height", "letter-spacing",
        "word-spacing", "text-align", "text-align-last", "text-decoration",
        "text-decoration-line", "text-decoration-color", "text-decoration-style",
        "text-decoration-thickness", "text-underline-offset", "text-underline-position",
        "text-transform", "text-indent", "text-overflow", "text-wrap", "text-rendering",
        "white-space", "word-break", "overflow-wrap", "hyphens", "vertical-align",
        "list-style", "list-style-type", "list-style-position", "list-style-image", "quotes",
        "content", "counter-reset", "counter-increment",
        # layout
        "display", "visibility", "float", "clear", "position", "top", "right", "bottom",
        "left", "inset", "z-index", "flex", "flex-direction", "flex-wrap", "flex-flow",
        "flex-grow", "flex-shrink", "flex-basis", "order", "justify-content", "justify-items",
        "justify-self", "align-content", "align-items", "align-self", "place-content",
        "place-items", "place-self", "gap", "row-gap", "column-gap", "grid", "grid-template",
        "grid-template-columns", "grid-template-rows", "grid-template-areas",
        "grid-auto-columns", "grid-auto-rows", "grid-auto-flow", "grid-area", "grid-column",
        "grid-column-start", "grid-column-end", "grid-row", "grid-row-start", "grid-row-end",
        "table-layout", "caption-side",
        # motion and effects
        "transition", "transition-property", "transition-duration",
        "transition-timing-function", "transition-delay", "animation", "animation-name",
        "animation-duration", "animation-timing-function", "animation-delay",
        "animation-iteration-count", "animation-direction", "animation-fill-mode",
        "animation-play-state", "transform", "transform-origin", "translate", "rotate",
        "scale", "filter", "backdrop-filter", "cursor",
    }
)  # fmt: skip
URL_PROPERTIES = frozenset(
    {"background", "background-image", "border-image", "border-image-source", "list-style",
     "list-style-image"}
)  # fmt: skip
ALLOWED_FUNCTIONS = frozenset(
    {
        "rgb", "rgba", "hsl", "hsla", "hwb", "lab", "lch", "oklab", "oklch", "color",
        "color-mix", "linear-gradient", "radial-gradient", "conic-gradient",
        "repeating-linear-gradient", "repeating-radial-gradient", "repeating-conic-gradient",
        "var", "calc", "min", "max", "clamp", "minmax", "repeat", "fit-content", "env",
        "translate", "translatex", "translatey", "translatez", "translate3d", "scale",
        "scalex", "scaley", "rotate", "rotatex", "rotatey", "rotatez", "skew", "skewx",
        "skewy", "matrix", "perspective", "cubic-bezier", "steps", "blur", "brightness",
        "contrast", "drop-shadow", "grayscale", "hue-rotate", "invert", "saturate", "sepia",
        "counter", "counters",
    }
)  # fmt: skip
FONT_FACE_DESCRIPTORS = frozenset(
    {
        "font-family", "src", "font-style", "font-weight", "font-stretch", "font-display",
        "unicode-range", "font-feature-settings", "font-variation-settings", "size-adjust",
        "ascent-override", "descent-override", "line-gap-override",
    }
)  # fmt: skip
POSITION_VALUES = frozenset({"static", "relative", "sticky"})

Node = Any  # a tinycss2 node; tinycss2 ships no type hints

_IDENT = re.compile(r"--[A-Za-z0-9_-]*|-?[A-Za-z_][A-Za-z0-9_-]*")
_CUSTOM_PROPERTY = re.compile(r"--[A-Za-z0-9_-]+")
_UNIT = re.compile(r"[A-Za-z]{1,12}")
_HEX_COLOUR = re.compile(r"[0-9A-Fa-f]{3,4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8}")
_URL = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&*+,;=%-]+")
_ORIGIN = re.compile(r"https://[a-z0-9.-]+(?::[0-9]{1,5})?/?", re.IGNORECASE)
_SCOPE = re.compile(r"[.#][A-Za-z_][A-Za-z0-9_-]*")
_NTH_IDENT = re.compile(r"-?n(?:-[0-9]+)?|odd|even", re.IGNORECASE)
_NTH_UNIT = re.compile(r"n(?:-[0-9]+)?", re.IGNORECASE)
_FORBIDDEN = ("<", "-->", "@import", "\\")
_BAD_STRING_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_COMBINATORS = frozenset({">", "+", "~"})
_SELECTOR_LIST_FUNCTIONS = frozenset({"not", "is", "where", "has"})
_NTH_FUNCTIONS = frozenset({"nth-child", "nth-last-child", "nth-of-type", "nth-last-of-type"})
_VALUE_LITERALS = frozenset({",", "/", "+", "-", "*"})
_CONDITION_LITERALS = _VALUE_LITERALS | {":", ">", "="}
_FONT_SRC_FUNCTIONS = frozenset({"local", "format", "tech"})


@dataclass(frozen=True, slots=True)
class SanitizedCss:
    """The CSS that passed the allowlist, and one line per thing removed, for the brand."""

    css: str
    removed: list[str]


class CssRejected(ValueError):
    """The custom CSS is refused as a whole (it is too large to consider)."""


class _Drop(Exception):
    """One piece of CSS fails the allowlist; the message says why, for the brand."""


@dataclass(frozen=True, slots=True)
class _ValueRules:
    """What a value may contain, by where it appears."""

    where: str
    urls: bool = False
    functions: frozenset[str] = ALLOWED_FUNCTIONS
    literals: frozenset[str] = _VALUE_LITERALS
    unicode_ranges: bool = False
    selectors: bool = False


def sanitize_css(
    source: str, *, asset_origins: Sequence[str], scope: str | None = None
) -> SanitizedCss:
    """Keep the allowed parts of `source`, re-serialised; list what was removed and why.

    `asset_origins` are the origins ``url()`` may load from (``"https://cdn.brand.example"``);
    `scope`, a class or id selector, confines every rule to that container. Raises
    `CssRejected` when `source` is over ``MAX_SOURCE_BYTES`` (UTF-8), and plain `ValueError`
    for a malformed origin or scope (a caller's mistake, not the brand's).
    """
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise CssRejected(
            f"custom CSS is {size} bytes; the limit is {MAX_SOURCE_BYTES} bytes (50 KB)"
        )
    origins = tuple(_origin(origin) for origin in asset_origins)
    if scope is not None and not _SCOPE.fullmatch(scope):
        raise ValueError(f"scope {scope!r} must be one class or id selector, like '.wa-page'")
    sanitizer = _Sanitizer(origins, scope)
    rules = tinycss2.parse_stylesheet(source, skip_comments=True, skip_whitespace=True)
    return SanitizedCss("".join(sanitizer.rules(rules, 0)), sanitizer.removed)


class _Sanitizer:
    """One pass over a stylesheet, collecting the reasons for what it drops."""

    def __init__(self, origins: tuple[str, ...], scope: str | None) -> None:
        self.origins = origins
        self.scope = scope
        self.removed: list[str] = []

    def note(self, node: Node, reason: str) -> None:
        self.removed.append(f"line {node.source_line}: {reason}")

    # Rules

    def rules(self, nodes: Iterable[Node], depth: int) -> list[str]:
        rendered: list[str] = []
        for node in nodes:
            try:
                rendered.append(self.rule(node, depth))
            except _Drop as drop:
                self.note(node, str(drop))
        return [text for text in rendered if text]

    def rule(self, node: Node, depth: int) -> str:
        if node.type == "qualified-rule":
            selector = self.selector(node.prelude)
            return _declaration_block(selector, self.declarations(node.content), depth)
        if node.type == "error":
            raise _Drop(f"invalid CSS skipped ({node.message})")
        name: str = node.lower_at_keyword
        if depth >= MAX_NESTING:
            raise _Drop(f"@{_shown(name)} is nested too deeply")
        if name not in ("media", "supports", "font-face", "keyframes"):
            raise _Drop(f"@{_shown(name)} is not allowed")
        if node.content is None:
            raise _Drop(f"@{name} needs a {{ }} block")
        if name in ("media", "supports"):
            condition = self.condition(node.prelude, name)
            if name == "supports" and not condition:
                raise _Drop("@supports needs a condition")
            header = f"@{name} {condition}" if condition else f"@{name}"
            content = tinycss2.parse_rule_list(
                node.content, skip_comments=True, skip_whitespace=True
            )
            return _group_block(header, self.rules(content, depth + 1), depth)
        if name == "font-face":
            return self.font_face(node, depth)
        return self.keyframes(node, depth)

    def font_face(self, node: Node, depth: int) -> str:
        if _significant(node.prelude):
            raise _Drop("@font-face takes nothing before its block")
        lines = self.declarations(node.content, self.font_descriptor)
        named = {line.split(":", 1)[0] for line in lines}
        if not {"font-family", "src"} <= named:
            raise _Drop("@font-face needs a font-family and an allowed src")
        return _declaration_block("@font-face", lines, depth)

    def keyframes(self, node: Node, depth: int) -> str:
        prelude = _significant(node.prelude)
        if len(prelude) != 1 or prelude[0].type not in ("ident", "string"):
            raise _Drop("@keyframes needs one name")
        name = _ident(prelude[0].value) if prelude[0].type == "ident" else _string(prelude[0].value)
        frames: list[str] = []
        content = tinycss2.parse_rule_list(node.content, skip_comments=True, skip_whitespace=True)
        for frame in content:
            try:
                if frame.type != "qualified-rule":
                    raise _Drop("only keyframe blocks may appear in @keyframes")
                selector = _keyframe_selector(frame.prelude)
                frames.append(
                    _declaration_block(selector, self.declarations(frame.content), depth + 1)
                )
            except _Drop as drop:
                self.note(frame, str(drop))
        return _group_block(f"@keyframes {name}", [f for f in frames if f], depth)

    # Declarations

    def declarations(
        self, content: list[Node], check: Callable[[Node], str] | None = None
    ) -> list[str]:
        check = check or self.style_declaration
        lines: list[str] = []
        items = tinycss2.parse_blocks_contents(content, skip_comments=True, skip_whitespace=True)
        for item in items:
            try:
                if item.type == "declaration":
                    lines.append(check(item))
                elif item.type == "error":
                    raise _Drop("invalid declaration skipped")
                elif item.type == "at-rule":
                    raise _Drop(f"@{_shown(item.lower_at_keyword)} inside a rule is not allowed")
                else:
                    raise _Drop("nested rules are not supported")
            except _Drop as drop:
                self.note(item, str(drop))
        return lines

    def style_declaration(self, declaration: Node) -> str:
        if declaration.name.startswith("--"):
            name: str = declaration.name
            if not _CUSTOM_PROPERTY.fullmatch(name):
                raise _Drop(f"custom property {_shown(name)!r} has an unusual name")
            value = self.value(declaration.value, _ValueRules(name))
        else:
            name = declaration.lower_name
            if name not in ALLOWED_PROPERTIES:
                raise _Drop(f"property {_shown(name)!r} is not allowed")
            value = self.value(declaration.value, _ValueRules(name, urls=name in URL_PROPERTIES))
            if name == "position" and value.lower() not in POSITION_VALUES:
                raise _Drop("position may only be static, relative or sticky")
        return _declaration(name, value, declaration.important)

    def font_descriptor(self, declaration: Node) -> str:
        name: str = declaration.lower_name
        if name not in FONT_FACE_DESCRIPTORS:
            raise _Drop(f"descriptor {_shown(name)!r} is not allowed in @font-face")
        if name == "src":
            rules = _ValueRules(name, urls=True, functions=_FONT_SRC_FUNCTIONS)
        else:
            rules = _ValueRules(name, unicode_ranges=name == "unicode-range")
        return _declaration(name, self.value(declaration.value, rules), declaration.important)

    # Values

    def value(self, tokens: list[Node], rules: _ValueRules) -> str:
        text = self.value_text(tokens, rules, 0)
        if not text:
            raise _Drop(f"{rules.where} has no value")
        _reread(text, lambda again: self.value_text(again, rules, 0))
        return text

    def condition(self, tokens: list[Node], name: str) -> str:
        rules = _ValueRules(f"@{name}", literals=_CONDITION_LITERALS, selectors=True)
        text = self.value_text(tokens, rules, 0)
        _reread(text, lambda again: self.value_text(again, rules, 0))
        return text

    def value_text(self, tokens: list[Node], rules: _ValueRules, depth: int) -> str:
        if depth > MAX_NESTING:
            raise _Drop(f"{rules.where}: parentheses nested too deeply")
        parts = [self.value_token(token, rules, depth) for token in _significant(tokens)]
        # Tokens only a comment kept apart (`0/**/auto`) get a space, which means the same.
        return "".join(
            f" {part}" if i and _merges(parts[i - 1], part) else part
            for i, part in enumerate(parts)
        )

    def value_token(self, token: Node, rules: _ValueRules, depth: int) -> str:
        kind: str = token.type
        if kind == "whitespace":
            return " "
        if kind == "ident":
            return _ident(token.value)
        if kind in ("number", "percentage", "dimension"):
            return _numeric(token)
        if kind == "hash":
            if not _HEX_COLOUR.fullmatch(token.value):
                raise _Drop(f"{rules.where}: #{_shown(token.value)} is not a hex colour")
            return f"#{token.value}"
        if kind == "string":
            return _string(token.value)
        if kind == "url":
            return self.url(token.value, rules)
        if kind == "function":
            return self.function(token, rules, depth)
        if kind == "() block":
            return f"({self.value_text(token.content, rules, depth + 1)})"
        if kind == "[] block" and all(t.type in ("ident", "whitespace") for t in token.content):
            return f"[{self.value_text(token.content, rules, depth + 1)}]"
        if kind == "unicode-range" and rules.unicode_ranges:
            return _unicode_range(token)
        if kind == "literal" and token.value in rules.literals:
            return str(token.value)
        raise _Drop(f"{rules.where}: {_describe(token)} is not allowed in a value")

    def function(self, token: Node, rules: _ValueRules, depth: int) -> str:
        name: str = token.lower_name
        if name == "url":
            arguments = _significant(token.arguments)
            if len(arguments) != 1 or arguments[0].type != "string":
                raise _Drop(f"{rules.where}: url() must hold one URL")
            return self.url(arguments[0].value, rules)
        if name == "selector" and rules.selectors:
            return f"selector({self.selector_list(token.arguments, depth + 1, relative=False)})"
        if name not in rules.functions:
            raise _Drop(f"{rules.where}: {_shown(name)}() is not allowed")
        return f"{name}({self.value_text(token.arguments, rules, depth + 1)})"

    def url(self, url: str, rules: _ValueRules) -> str:
        if not rules.urls:
            raise _Drop(f"{rules.where}: url() is not allowed here")
        if not _URL.fullmatch(url) or not self.allowed_url(url):
            raise _Drop(f"{rules.where}: url() must point under /assets/ or an asset origin")
        return f'url("{url}")'

    def allowed_url(self, url: str) -> bool:
        if url.startswith("/assets/"):
            path = unquote(url.split("?", 1)[0].split("#", 1)[0])
            return ".." not in path.split("/") and "\\" not in path
        lowered = url.lower()
        return any(lowered == o or lowered.startswith(f"{o}/") for o in self.origins)

    # Selectors

    def selector(self, prelude: list[Node]) -> str:
        text = self.scoped_selector(prelude)
        _reread(text, self.scoped_selector)
        return text

    def scoped_selector(self, prelude: list[Node]) -> str:
        complexes = [self.complex_selector(part, 0, relative=False) for part in _split(prelude)]
        if self.scope is not None:
            scope = self.scope
            return ", ".join(_scoped(segments, scope) for segments in complexes)
        return ", ".join("".join(segments) for segments in complexes)

    def selector_list(self, tokens: list[Node], depth: int, *, relative: bool) -> str:
        parts = _split(tokens)
        return ", ".join("".join(self.complex_selector(p, depth, relative=relative)) for p in parts)

    def complex_selector(self, tokens: list[Node], depth: int, *, relative: bool) -> list[str]:
        """Render compounds and combinators alternately: ``["a.b", " > ", "c"]``."""
        segments: list[str] = []
        compound: list[str] = []
        pending: str | None = None
        for token in tokens:
            is_combinator = token.type == "literal" and token.value in _COMBINATORS
            if token.type == "whitespace" or is_combinator:
                if compound:
                    segments.append("".join(compound))
                    compound = []
                    pending = " "
                if is_combinator:
                    if pending not in (None, " ") or (not segments and not relative):
                        raise _Drop(f"selector has a misplaced {token.value!r}")
                    pending = f" {token.value} " if segments else f"{token.value} "
                continue
            if not compound and (segments or pending is not None):
                segments.append(pending or " ")
            pending = None
            part = self.compound_part(token, depth)
            if compound and _merges(compound[-1], part):
                raise _Drop("selector has names run together (a comment between them?)")
            compound.append(part)
        if compound:
            segments.append("".join(compound))
        elif pending not in (None, " ") or not segments:
            raise _Drop("selector is empty or ends in a combinator")
        return segments

    def compound_part(self, token: Node, depth: int) -> str:
        kind: str = token.type
        if kind == "ident":
            return _ident(token.value)
        if kind == "hash" and token.is_identifier:
            return f"#{_ident(token.value)}"
        if kind == "literal" and token.value in (".", "*", ":"):
            return str(token.value)
        if kind == "[] block":
            return _attribute(token)
        if kind == "function":
            return self.pseudo_function(token, depth)
        if kind == "unicode-range":
            raise _Drop("selector reads as a unicode-range; put spaces around '+'")
        raise _Drop(f"selector has {_describe(token)}")

    def pseudo_function(self, token: Node, depth: int) -> str:
        name: str = token.lower_name
        if depth >= MAX_NESTING:
            raise _Drop("selector is nested too deeply")
        if name in _SELECTOR_LIST_FUNCTIONS:
            inner = self.selector_list(token.arguments, depth + 1, relative=name == "has")
        elif name in _NTH_FUNCTIONS:
            inner = "".join(_nth_part(t) for t in _significant(token.arguments))
        elif name in ("lang", "dir"):
            inner = ", ".join(_ident_or_string(part) for part in _split(token.arguments))
        else:
            raise _Drop(f"selector has :{_shown(name)}()")
        return f"{name}({inner})"


def _origin(origin: str) -> str:
    """Normalise an asset origin to ``https://host[:port]``, lower-case, no trailing slash."""
    if not _ORIGIN.fullmatch(origin):
        raise ValueError(f"asset origin {origin!r} must look like 'https://cdn.example.com'")
    return origin.rstrip("/").lower()


def _scoped(segments: list[str], scope: str) -> str:
    """Put a complex selector under `scope`; a leading root, html or body becomes the scope."""
    combinator = " "
    rest = segments
    while rest and (rest[0].lower() in (":root", "html", "body") or rest[0] == scope):
        if len(rest) > 1 and rest[1] not in (" ", " > "):
            break
        combinator = rest[1] if len(rest) > 1 else " "
        rest = rest[2:]
    return f"{scope}{combinator}{''.join(rest)}" if rest else scope


def _reread(text: str, serialise: Callable[[list[Node]], str]) -> None:
    """Refuse `text` unless it parses back to itself and holds no forbidden sequence."""
    lowered = text.lower()
    for marker in _FORBIDDEN:
        if marker in lowered:
            raise _Drop(f"the result would contain {marker!r}")
    try:
        again = serialise(tinycss2.parse_component_value_list(text, skip_comments=True))
    except _Drop:
        again = None
    if again != text:
        raise _Drop("tokens run together when read back (a comment between them?)")


def _merges(left: str, right: str) -> bool:
    """Tell whether two serialised tokens would read back as something else side by side."""
    if left == " " or right == " ":
        return False
    return len(tinycss2.parse_component_value_list(left + right, skip_comments=True)) != 2


def _significant(tokens: Iterable[Node]) -> list[Node]:
    """Drop comments, whitespace at either end, and all but one of each run of whitespace."""
    kept: list[Node] = []
    for token in tokens:
        if token.type == "comment":
            continue
        if token.type == "whitespace" and (not kept or kept[-1].type == "whitespace"):
            continue
        kept.append(token)
    if kept and kept[-1].type == "whitespace":
        kept.pop()
    return kept


def _split(tokens: list[Node]) -> list[list[Node]]:
    """Split `tokens` on top-level commas."""
    parts: list[list[Node]] = [[]]
    for token in tokens:
        if token.type == "literal" and token.value == ",":
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def _ident(value: str) -> str:
    if not _IDENT.fullmatch(value):
        raise _Drop(f"identifier {_shown(value)!r} has characters outside A-Z, 0-9, '-', '_'")
    return value


def _string(value: str) -> str:
    bad = any(c in "\"'\\<>" or unicodedata.category(c) in _BAD_STRING_CATEGORIES for c in value)
    if bad or "@import" in value.lower():
        raise _Drop("a string holds quotes, backslashes, '<', '>' or control characters")
    return f'"{value}"'


def _ident_or_string(tokens: list[Node]) -> str:
    kept = _significant(tokens)
    if len(kept) == 1 and kept[0].type == "ident":
        return _ident(kept[0].value)
    if len(kept) == 1 and kept[0].type == "string":
        return _string(kept[0].value)
    raise _Drop("expected a name")


def _numeric(token: Node) -> str:
    text = str(token.representation)
    if token.type == "percentage":
        return f"{text}%"
    if token.type == "dimension":
        if not _UNIT.fullmatch(token.unit):
            raise _Drop(f"unit {_shown(token.unit)!r} is not allowed")
        return f"{text}{token.unit}"
    return text


def _unicode_range(token: Node) -> str:
    start: int = token.start
    end: int = token.end
    if not 0 <= start <= end <= 0x10FFFF:
        raise _Drop("unicode-range must lie within U+0-10FFFF")
    return f"U+{start:X}" if start == end else f"U+{start:X}-{end:X}"


def _attribute(block: Node) -> str:
    parts = [token for token in block.content if token.type != "whitespace"]
    if not parts or parts[0].type != "ident":
        raise _Drop("attribute selector needs an attribute name")
    name = _ident(parts[0].value)
    if len(parts) == 1:
        return f"[{name}]"
    operator = parts[1]
    if operator.type != "literal" or operator.value not in ("=", "~=", "|="):
        raise _Drop("attribute selectors may only use =, ~= or |=")
    if len(parts) not in (3, 4) or parts[2].type not in ("ident", "string"):
        raise _Drop("attribute selector needs one value")
    flag = ""
    if len(parts) == 4:
        if parts[3].type != "ident" or parts[3].lower_value not in ("i", "s"):
            raise _Drop("attribute selector flag must be i or s")
        flag = f" {parts[3].lower_value}"
    return f"[{name}{operator.value}{_string(parts[2].value)}{flag}]"


def _nth_part(token: Node) -> str:
    kind: str = token.type
    if kind == "ident" and _NTH_IDENT.fullmatch(token.value):
        return str(token.value)
    if kind == "number" or (kind == "dimension" and _NTH_UNIT.fullmatch(token.unit)):
        return f"{token.representation}{token.unit if kind == 'dimension' else ''}"
    if kind == "whitespace" or (kind == "literal" and token.value in ("+", "-")):
        return " " if kind == "whitespace" else str(token.value)
    raise _Drop(f"selector has {_describe(token)} in an :nth-*() argument")


def _keyframe_selector(prelude: list[Node]) -> str:
    stops: list[str] = []
    for part in _split(prelude):
        kept = _significant(part)
        if len(kept) == 1 and kept[0].type == "percentage":
            stops.append(_numeric(kept[0]))
        elif len(kept) == 1 and kept[0].type == "ident" and kept[0].lower_value in ("from", "to"):
            stops.append(str(kept[0].lower_value))
        else:
            raise _Drop("keyframe selectors are from, to or percentages")
    return ", ".join(stops)


def _declaration(name: str, value: str, important: bool) -> str:
    return f"{name}: {value}{' !important' if important else ''};"


def _declaration_block(header: str, declarations: list[str], depth: int) -> str:
    if not declarations:
        return ""
    pad = "  " * depth
    body = "".join(f"{pad}  {line}\n" for line in declarations)
    return f"{pad}{header} {{\n{body}{pad}}}\n"


def _group_block(header: str, children: list[str], depth: int) -> str:
    if not children:
        return ""
    pad = "  " * depth
    return f"{pad}{header} {{\n{''.join(children)}{pad}}}\n"


def _describe(token: Node) -> str:
    kind: str = token.type
    if kind == "literal":
        return f"{_shown(token.value)!r}"
    if kind == "function":
        return f"{_shown(token.lower_name)}()"
    if kind == "at-keyword":
        return f"@{_shown(token.lower_value)}"
    if kind == "error":
        return f"unreadable CSS ({token.kind})"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _shown(text: str) -> str:
    """Make a name from the source safe and short enough to quote in a reason."""
    printable = "".join(c if c.isprintable() else "?" for c in text)
    return printable if len(printable) <= 40 else f"{printable[:39]}…"
