"""Brand CSS sanitising: known attacks, ordinary brand CSS, scoping, limits, and fuzzing."""

import re
from collections.abc import Iterable
from typing import Any

import pytest
import tinycss2
from hypothesis import given, settings
from hypothesis import strategies as st

from app.themes.css import (
    ALLOWED_FUNCTIONS,
    ALLOWED_PROPERTIES,
    FONT_FACE_DESCRIPTORS,
    MAX_SOURCE_BYTES,
    POSITION_VALUES,
    CssRejected,
    SanitizedCss,
    sanitize_css,
)

ASSETS = ("https://cdn.brand.example",)
FORBIDDEN = ("</style", "<!--", "-->", "<", "@import")


def clean(source: str, scope: str | None = None) -> str:
    return sanitize_css(source, asset_origins=ASSETS, scope=scope).css


def rule(selector: str, *declarations: str) -> str:
    """Render one style rule the way the sanitizer does."""
    return f"{selector} {{\n" + "".join(f"  {d}\n" for d in declarations) + "}\n"


RED = rule(".a", "color: red;")

# Each attack sits next to `color: red` (or a `.a { color: red }` rule): the attack must go and
# the safe part must stay, byte for byte.
ATTACKS = [
    # script in values
    pytest.param(".a { width: expression(alert(1)); color: red }", RED, id="expression"),
    pytest.param(r".a { width: expr\65ssion(alert(1)); color: red }", RED, id="escaped-expression"),
    pytest.param(".a { width: e/**/xpression(alert(1)); color: red }", RED, id="comment-split"),
    pytest.param(".a { background: url(javascript:alert(1)); color: red }", RED, id="js-url"),
    pytest.param('.a { background: url("javascript:alert(1)"); color: red }', RED, id="js-quoted"),
    pytest.param(
        '.a { background-image: url("java\\0061script:alert(1)"); color: red }',
        RED,
        id="js-url-escaped",
    ),
    pytest.param(r".a { background: \75 rl(javascript:alert(1)); color: red }", RED, id="\\75rl"),
    pytest.param(r".a { background: u\rl(javascript:alert(1)); color: red }", RED, id="u\\rl"),
    pytest.param(r".a { background: \55 RL(/assets/../x); color: red }", RED, id="\\55RL-dots"),
    pytest.param(".a { background: url(vbscript:msgbox(1)); color: red }", RED, id="vbscript"),
    pytest.param(".a { background: url(data:image/png;base64,AAAA); color: red }", RED, id="data"),
    pytest.param(
        '.a { background: url("data:image/svg+xml,<svg onload=alert(1)>"); color: red }',
        RED,
        id="data-svg",
    ),
    # URLs that leave the brand's assets
    pytest.param(".a { background:url(//evil.example/x); color: red }", RED, id="protocol-rel"),
    pytest.param(
        ".a { background: url(http://cdn.brand.example/x.png); color: red }", RED, id="http"
    ),
    pytest.param(
        ".a { background: url(https://cdn.brand.example.evil.example/x.png); color: red }",
        RED,
        id="lookalike-host",
    ),
    pytest.param(
        ".a { background: url(https://cdn.brand.example@evil.example/x.png); color: red }",
        RED,
        id="userinfo",
    ),
    pytest.param(".a { background: url(/api/orders); color: red }", RED, id="same-origin-api"),
    pytest.param(".a { background: url(/assets/../api/x); color: red }", RED, id="dot-dot"),
    pytest.param(".a { background: url(/assets/%2e%2e/api/x); color: red }", RED, id="dot-dot-%"),
    pytest.param(".a { background: url(x.png); color: red }", RED, id="relative-path"),
    pytest.param(
        '.a { background: image-set("/assets/a.png" 1x); color: red }', RED, id="image-set"
    ),
    # @import and other at-rules
    pytest.param('@import "https://evil.example/x.css";\n.a { color: red }', RED, id="@import"),
    pytest.param("@import url(x.css) screen;\n.a { color: red }", RED, id="@import-url"),
    pytest.param('@IMPORT "x.css";\n.a { color: red }', RED, id="@IMPORT"),
    pytest.param('@\\69mport "x.css";\n.a { color: red }', RED, id="@\\69mport"),
    pytest.param('@charset "utf-8";\n.a { color: red }', RED, id="@charset"),
    pytest.param("@namespace svg url(http://www.w3.org/2000/svg);\n.a { color: red }", RED),
    pytest.param("@page { margin: 0 }\n.a { color: red }", RED, id="@page"),
    pytest.param("@layer x;\n@layer base { .b { color: blue } }\n.a { color: red }", RED),
    pytest.param('@property --x { syntax: "<color>"; inherits: false }\n.a { color: red }', RED),
    pytest.param("@document url(http://x) { .b { color: blue } }\n.a { color: red }", RED),
    pytest.param("@-moz-document url-prefix() { .b { color: blue } }\n.a { color: red }", RED),
    pytest.param(
        '@supports (display: grid) { @import "x.css"; }\n.a { color: red }', RED, id="supports"
    ),
    # breaking out of <style>
    pytest.param(
        "</style><script>alert(1)</script>\n.b { color: blue }\n.a { color: red }",
        RED,
        id="</style>",
    ),
    pytest.param("<!-- .a { color: red } -->", RED, id="cdo-cdc"),
    pytest.param(".a { color: red; <!-- }", RED, id="cdo-in-block"),
    pytest.param('.a { content: "</style><script>alert(1)</script>"; color: red }', RED),
    pytest.param(r'.a { content: "\3c /style>"; color: red }', RED, id="escaped-<"),
    pytest.param(r".a\3c { color: blue }" + "\n.a { color: red }", RED, id="escaped-<-selector"),
    pytest.param('.a { content: "@import"; color: red }', RED, id="@import-string"),
    pytest.param(r'.a { content: "\\"; color: red }', RED, id="backslash-string"),
    pytest.param('.a { content: "\u202egnp.exe"; color: red }', RED, id="bidi-override"),
    # behaviours and bindings
    pytest.param(".a { -moz-binding: url(https://evil.example/x.xml#x); color: red }", RED),
    pytest.param(".a { behavior: url(x.htc); color: red }", RED, id="behavior"),
    pytest.param(r".a { b\65havior: url(x.htc); color: red }", RED, id="escaped-behavior"),
    pytest.param(".a { filter: url(#x); color: red }", RED, id="filter-url"),
    pytest.param(
        ".a { filter: progid:DXImageTransform.Microsoft.Alpha(opacity=50); color: red }", RED
    ),
    pytest.param(".a { cursor: url(/assets/c.cur), auto; color: red }", RED, id="cursor-url"),
    pytest.param(".a { content: url(/assets/x.png); color: red }", RED, id="content-url"),
    pytest.param(".a { content: attr(data-secret); color: red }", RED, id="attr"),
    # overlays
    pytest.param(".a { position: fixed; color: red }", RED, id="fixed"),
    pytest.param(".a { position: absolute; color: red }", RED, id="absolute"),
    pytest.param(".a { position: var(--p); color: red }", RED, id="position-var"),
    # custom properties as carriers
    pytest.param(".a { --bg: url(https://cdn.brand.example/x.png); color: red }", RED),
    pytest.param(".a { --x: </style><script>alert(1)</script>; color: red }", RED),
    pytest.param('.a { --x: "</style>"; color: red }', RED, id="custom-string"),
    pytest.param(".a { --x: { color: blue }; color: red }", RED, id="custom-block"),
    pytest.param(".a { --x: @import; color: red }", RED, id="custom-at-keyword"),
    pytest.param(r".a { --\3c x: 1px; color: red }", RED, id="custom-escaped-name"),
    # unicode-range tricks
    pytest.param("u+a { color: blue }\n.a { color: red }", RED, id="unicode-range-selector"),
    pytest.param(".a { color: U+26; unicode-range: U+0-7F }\n.a { color: red }", RED),
    # reading attributes out through URLs
    pytest.param(
        'input[value^="a"] { background: url(https://cdn.brand.example/a) }\n.a { color: red }',
        RED,
        id="attr-prefix-exfil",
    ),
    pytest.param('.b[href*="token"] { color: blue }\n.a { color: red }', RED, id="attr-substr"),
    # parser confusion
    pytest.param(".a { color: red\0 }\n.a { color: red }", RED, id="nul-value"),
    pytest.param(".b\0 { color: blue }\n.a { color: red }", RED, id="nul-selector"),
    pytest.param(".a { color: red", RED, id="unclosed-block"),
    pytest.param(".a { color: red }}\n.b { color: blue }", RED, id="extra-brace"),
    pytest.param(".a { color: red !ie; *zoom: 1 }\n.a { color: red }", RED, id="ie-hacks"),
    pytest.param(".a { &:hover { color: blue } color: red }", RED, id="nesting"),
    pytest.param(".a { @media print { color: blue } color: red }", RED, id="nested-at-rule"),
    pytest.param(
        ".a { width: " + "calc(" * 12 + "1px" + ")" * 12 + "; color: red }", RED, id="deep-calc"
    ),
    pytest.param("a/**/b { color: blue }\n.a { color: red }", RED, id="comment-in-selector"),
    pytest.param(".a { color: #12; color: red }", RED, id="short-hash"),
]


# CSS itself ignores these, so the sanitizer drops them without a word.
SILENT = {"<!-- .a { color: red } -->", ".a { color: red"}


@pytest.mark.parametrize(("source", "expected"), ATTACKS)
def test_attack_is_removed_and_the_rest_kept(source: str, expected: str) -> None:
    result = sanitize_css(source, asset_origins=ASSETS)

    assert result.css == expected
    assert bool(result.removed) is (source not in SILENT)
    assert_safe(result.css)


def test_nested_media_drops_only_the_bad_rule() -> None:
    source = """@media screen {
  @media (min-width: 600px) {
    .ok { color: red }
    .bad { behavior: url(x.htc) }
    @import "x.css";
  }
}"""

    result = sanitize_css(source, asset_origins=ASSETS)

    assert result.css == (
        "@media screen {\n"
        "  @media (min-width: 600px) {\n"
        "    .ok {\n"
        "      color: red;\n"
        "    }\n"
        "  }\n"
        "}\n"
    )
    assert result.removed == [
        "line 4: property 'behavior' is not allowed",
        "line 5: @import is not allowed",
    ]


def test_media_nested_too_deeply_is_dropped() -> None:
    source = "@media screen {" * 12 + ".a { color: red }" + "}" * 12

    result = sanitize_css(source, asset_origins=ASSETS)

    assert result.css == ""
    assert result.removed == ["line 1: @media is nested too deeply"]


def test_media_range_with_less_than_is_dropped() -> None:
    result = sanitize_css("@media (width < 600px) { .a { color: red } }", asset_origins=ASSETS)

    assert result.css == ""
    assert result.removed == ["line 1: @media: '<' is not allowed in a value"]


def test_font_face_with_a_foreign_src_is_dropped_whole() -> None:
    source = """@font-face {
  font-family: "Evil";
  src: local("Evil"), url(https://evil.example/f.woff2) format("woff2");
}"""

    result = sanitize_css(source, asset_origins=ASSETS)

    assert result.css == ""
    assert result.removed == [
        "line 3: src: url() must point under /assets/ or an asset origin",
        "line 1: @font-face needs a font-family and an allowed src",
    ]


def test_font_face_with_a_data_src_is_dropped_whole() -> None:
    source = "@font-face { font-family: x; src: url(data:font/woff2;base64,AAAA) }"
    assert clean(source) == ""


def test_font_face_unicode_range_beyond_unicode_is_dropped() -> None:
    source = "@font-face { font-family: x; src: url(/assets/x.woff2); unicode-range: U+0-FFFFFF }"
    assert clean(source) == rule("@font-face", "font-family: x;", 'src: url("/assets/x.woff2");')


def test_removed_reasons_name_the_line() -> None:
    source = """.a { color: red }
.b {
  color: blue;
  behavior: url(x.htc);
  background: url(https://evil.example/x.png);
}
@import "x.css";
.c { position: fixed }
"""

    result = sanitize_css(source, asset_origins=ASSETS)

    assert result.removed == [
        "line 4: property 'behavior' is not allowed",
        "line 5: background: url() must point under /assets/ or an asset origin",
        "line 7: @import is not allowed",
        "line 8: position may only be static, relative or sticky",
    ]


BRAND_CSS = """\
/* Acme tracking page */
@font-face {
  font-family: "Acme Sans";
  src: url(https://cdn.brand.example/fonts/acme.woff2) format("woff2"),
       url('/assets/fonts/acme.woff') format("woff");
  font-weight: 400 700;
  font-display: swap;
  unicode-range: U+0000-00FF, U+0131;
}
:root { --acme-blue: #0b5cad; --acme-radius: 12px; --Acme-Gap: 1.5rem }
body{font-family:"Acme Sans",system-ui,-apple-system,sans-serif;color:#1a1a1a;line-height:1.5}
.header {
  background: #fff url(https://cdn.brand.example/img/header.png) no-repeat right center / contain;
  border-bottom: 1px solid rgba(0, 0, 0, .1);
  padding: 16px 24px;
}
.header > .logo img { max-height: 48px; width: auto }
a:hover, a:focus-visible { text-decoration: underline; outline: 2px solid var(--acme-blue) }
.parcel:not(.delivered) .status::before { content: "\\2022"; margin-right: .5em }
.timeline li:nth-child(2n+1) { background-color: hsl(210 40% 98%) }
.button[data-variant="primary" i] {
  background-image: linear-gradient(to bottom, #1a6fd1 0%, var(--acme-blue) 100%);
  border-radius: var(--acme-radius) !important;
  box-shadow: 0 1px 2px rgb(0 0 0 / 20%), inset 0 -1px 0 rgba(0,0,0,.15);
  transition: background-color .2s ease-in-out, transform 150ms cubic-bezier(.4, 0, .2, 1);
}
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 16px }
.sticky-summary { position: sticky; top: 0; z-index: 2 }
@media (max-width: 600px) and (prefers-reduced-motion: no-preference) {
  .header { padding: 12px }
  .button { animation: pulse 2s infinite }
}
@supports (display: grid) and selector(:has(> img)) {
  .card:has(> img) { grid-template-rows: auto 1fr }
}
@keyframes pulse {
  from { transform: scale(1) } 50% { transform: scale(1.05) } to { transform: scale(1) }
}
"""

BRAND_CSS_CLEAN = """\
@font-face {
  font-family: "Acme Sans";
  src: url("https://cdn.brand.example/fonts/acme.woff2") format("woff2"), \
url("/assets/fonts/acme.woff") format("woff");
  font-weight: 400 700;
  font-display: swap;
  unicode-range: U+0-FF, U+131;
}
:root {
  --acme-blue: #0b5cad;
  --acme-radius: 12px;
  --Acme-Gap: 1.5rem;
}
body {
  font-family: "Acme Sans",system-ui,-apple-system,sans-serif;
  color: #1a1a1a;
  line-height: 1.5;
}
.header {
  background: #fff url("https://cdn.brand.example/img/header.png") no-repeat right center / contain;
  border-bottom: 1px solid rgba(0, 0, 0, .1);
  padding: 16px 24px;
}
.header > .logo img {
  max-height: 48px;
  width: auto;
}
a:hover, a:focus-visible {
  text-decoration: underline;
  outline: 2px solid var(--acme-blue);
}
.parcel:not(.delivered) .status::before {
  content: "\u2022";
  margin-right: .5em;
}
.timeline li:nth-child(2n+1) {
  background-color: hsl(210 40% 98%);
}
.button[data-variant="primary" i] {
  background-image: linear-gradient(to bottom, #1a6fd1 0%, var(--acme-blue) 100%);
  border-radius: var(--acme-radius) !important;
  box-shadow: 0 1px 2px rgb(0 0 0 / 20%), inset 0 -1px 0 rgba(0,0,0,.15);
  transition: background-color .2s ease-in-out, transform 150ms cubic-bezier(.4, 0, .2, 1);
}
.grid {
  display: grid;
  grid-template-columns: repeat(auto-fit, minmax(240px, 1fr));
  gap: 16px;
}
.sticky-summary {
  position: sticky;
  top: 0;
  z-index: 2;
}
@media (max-width: 600px) and (prefers-reduced-motion: no-preference) {
  .header {
    padding: 12px;
  }
  .button {
    animation: pulse 2s infinite;
  }
}
@supports (display: grid) and selector(:has(> img)) {
  .card:has(> img) {
    grid-template-rows: auto 1fr;
  }
}
@keyframes pulse {
  from {
    transform: scale(1);
  }
  50% {
    transform: scale(1.05);
  }
  to {
    transform: scale(1);
  }
}
"""


def test_ordinary_brand_css_passes_in_canonical_form() -> None:
    result = sanitize_css(BRAND_CSS, asset_origins=ASSETS)

    assert result.removed == []
    assert result.css == BRAND_CSS_CLEAN


def test_ordinary_brand_css_is_a_fixed_point() -> None:
    assert sanitize_css(BRAND_CSS_CLEAN, asset_origins=ASSETS) == SanitizedCss(BRAND_CSS_CLEAN, [])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a { margin: 0/**/auto }", rule("a", "margin: 0 auto;")),
        ("a { COLOR: Red }", rule("a", "color: Red;")),
        (r"a { c\olor: red }", rule("a", "color: red;")),
        ("a{color:red;;color:blue}", rule("a", "color: red;", "color: blue;")),
        ("a { color: red !important }", rule("a", "color: red !important;")),
        ("a>b+c~d { color: red }", rule("a > b + c ~ d", "color: red;")),
        ("a  ,\n  b\t.c { color: red }", rule("a, b .c", "color: red;")),
        ("a { position: Relative }", rule("a", "position: Relative;")),
        ("a { }", ""),
        ("a { background: url(HTTPS://CDN.Brand.Example/x.png) }", None),
        (
            "a { background: url(https://cdn.brand.example) }",
            rule("a", 'background: url("https://cdn.brand.example");'),
        ),
        (
            'a { grid-template-areas: "head head" "side main" }',
            rule("a", 'grid-template-areas: "head head" "side main";'),
        ),
        (
            "a { grid-template-columns: [full-start] minmax(1rem, 1fr) [full-end] }",
            rule("a", "grid-template-columns: [full-start] minmax(1rem, 1fr) [full-end];"),
        ),
        (".a:nth-child(-n+3) { color: red }", rule(".a:nth-child(-n+3)", "color: red;")),
        (".a::after { content: '\u203a' }", rule(".a::after", 'content: "\u203a";')),
    ],
)
def test_ordinary_details(source: str, expected: str | None) -> None:
    if expected is None:
        expected = rule("a", 'background: url("HTTPS://CDN.Brand.Example/x.png");')
    assert clean(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (".card { color: red }", ".wa-page .card"),
        ("body { color: red }", ".wa-page"),
        (":root { color: red }", ".wa-page"),
        ("html body .x { color: red }", ".wa-page .x"),
        ("html > body > .x { color: red }", ".wa-page > .x"),
        ("BODY .x, .y { color: red }", ".wa-page .x, .wa-page .y"),
        (".wa-page { color: red }", ".wa-page"),
        (".wa-page > h1 { color: red }", ".wa-page > h1"),
        (".wa-page ~ footer { color: red }", ".wa-page .wa-page ~ footer"),
        (":root ~ footer { color: red }", ".wa-page :root ~ footer"),
        ("body + .x { color: red }", ".wa-page body + .x"),
        ("* { color: red }", ".wa-page *"),
        ("::selection { color: red }", ".wa-page ::selection"),
    ],
)
def test_scope_confines_every_selector(source: str, expected: str) -> None:
    assert clean(source, scope=".wa-page") == rule(expected, "color: red;")


def test_scope_applies_inside_media_but_not_to_keyframes() -> None:
    source = "@media print { a { color: red } } @keyframes k { to { color: red } }"

    assert clean(source, scope="#wa") == (
        "@media print {\n  #wa a {\n    color: red;\n  }\n}\n"
        "@keyframes k {\n  to {\n    color: red;\n  }\n}\n"
    )


def test_input_at_the_size_limit_is_accepted() -> None:
    unit = ".a { color: red }\n"
    source = unit * (MAX_SOURCE_BYTES // len(unit))
    source += " " * (MAX_SOURCE_BYTES - len(source))

    result = sanitize_css(source, asset_origins=ASSETS)

    assert result.css == RED * (MAX_SOURCE_BYTES // len(unit))
    assert result.removed == []


def test_input_over_the_size_limit_is_rejected() -> None:
    with pytest.raises(CssRejected, match="custom CSS is 51201 bytes; the limit is 51200 bytes"):
        sanitize_css("a" * (MAX_SOURCE_BYTES + 1), asset_origins=ASSETS)


def test_the_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(CssRejected, match="custom CSS is 51202 bytes"):
        sanitize_css("é" * (MAX_SOURCE_BYTES // 2 + 1), asset_origins=ASSETS)


@pytest.mark.parametrize(
    "origin",
    [
        "http://cdn.brand.example",
        "https://cdn.brand.example/fonts",
        "https://user@cdn.brand.example",
        "//cdn.brand.example",
        "",
    ],
)
def test_a_malformed_asset_origin_is_a_caller_error(origin: str) -> None:
    with pytest.raises(ValueError, match="asset origin"):
        sanitize_css("a { color: red }", asset_origins=[origin])


@pytest.mark.parametrize("scope", ["", "div", ".a .b", ".a{", "</style>"])
def test_a_malformed_scope_is_a_caller_error(scope: str) -> None:
    with pytest.raises(ValueError, match="scope"):
        sanitize_css("a { color: red }", asset_origins=ASSETS, scope=scope)


def test_asset_origins_accept_what_the_api_accepts() -> None:
    source = "a { background: url(https://CDN.brand.example:8443/a.png) }"

    result = sanitize_css(source, asset_origins=["https://cdn.brand.example:8443/"])

    assert result.css == rule("a", 'background: url("https://CDN.brand.example:8443/a.png");')


def test_without_asset_origins_only_assets_paths_load() -> None:
    source = "a { background: url(/assets/a.png) } b { background: url(https://x.example/a) }"

    result = sanitize_css(source, asset_origins=[])

    assert result.css == rule("a", 'background: url("/assets/a.png");')


# The output, read the way a browser reads it, holds only what the allowlist names.

_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t\n]?|\\(.)", re.DOTALL)
_OTHER_FUNCTIONS = {"url", "local", "format", "tech", "selector", "not", "is", "where", "has"}
_OTHER_FUNCTIONS |= {"nth-child", "nth-last-child", "nth-of-type", "nth-last-of-type"}
_OTHER_FUNCTIONS |= {"lang", "dir"}


def _decode_escapes(css: str) -> str:
    def decode(match: re.Match[str]) -> str:
        if match[1]:
            return chr(min(int(match[1], 16), 0x10FFFF))
        return match[2]

    return _ESCAPE.sub(decode, css)


def _allowed_url(url: str) -> bool:
    if url.startswith("/assets/"):
        return ".." not in url
    return url.lower().startswith(tuple(f"{origin}/" for origin in ASSETS)) or url in ASSETS


def _check_tokens(tokens: Iterable[Any], *, urls: bool) -> None:
    for token in tokens:
        assert token.type not in ("error", "at-keyword", "{} block", "comment")
        if token.type == "url":
            assert urls
            assert _allowed_url(token.value)
        elif token.type == "function":
            assert token.lower_name in ALLOWED_FUNCTIONS | _OTHER_FUNCTIONS
            if token.lower_name == "url":
                [argument] = [t for t in token.arguments if t.type != "whitespace"]
                assert urls
                assert _allowed_url(argument.value)
            _check_tokens(token.arguments, urls=urls)
        elif token.type in ("() block", "[] block"):
            _check_tokens(token.content, urls=urls)


def _check_declarations(content: list[Any], allowed: frozenset[str]) -> None:
    for item in tinycss2.parse_blocks_contents(content, skip_comments=True, skip_whitespace=True):
        assert item.type == "declaration"
        custom = item.name.startswith("--")
        assert custom or item.lower_name in allowed
        _check_tokens(item.value, urls=not custom)
        if item.lower_name == "position":
            assert tinycss2.serialize(item.value).strip().lower() in POSITION_VALUES


def _check_rules(nodes: Iterable[Any]) -> None:
    for node in nodes:
        assert node.type in ("qualified-rule", "at-rule")
        _check_tokens(node.prelude, urls=False)
        if node.type == "qualified-rule":
            _check_declarations(node.content, ALLOWED_PROPERTIES)
            continue
        name = node.lower_at_keyword
        assert name in ("media", "supports", "font-face", "keyframes")
        if name == "font-face":
            _check_declarations(node.content, FONT_FACE_DESCRIPTORS)
            continue
        content = tinycss2.parse_rule_list(node.content, skip_comments=True, skip_whitespace=True)
        if name == "keyframes":
            for frame in content:
                _check_declarations(frame.content, ALLOWED_PROPERTIES)
        else:
            _check_rules(content)


def assert_safe(css: str) -> None:
    """Fail unless `css` is inert inside <style> and names only allowlisted things."""
    assert "\\" not in css  # no escapes at all, so decoding below is belt and braces
    decoded = _decode_escapes(css).lower()
    for marker in FORBIDDEN:
        assert marker not in decoded
    assert "/*" not in css
    _check_rules(tinycss2.parse_stylesheet(css, skip_comments=False, skip_whitespace=True))


def test_the_attack_corpus_is_large_enough() -> None:
    assert len(ATTACKS) >= 40


# Fuzzing

FRAGMENTS = [
    "@import", "@\\69mport", "@IMPORT", "@media", "@supports", "@font-face", "@keyframes",
    "@page", "@charset", "url(", "\\75 rl(", "u\\rl(", "javascript:", "java\\0061script:",
    "data:", "//evil.example/", "https://cdn.brand.example/a.png", "/assets/a.png",
    "/assets/../x", "expression(", "e/**/xpression(", "</style>", "</STYLE", "<!--", "-->",
    "\\3c", "\\2d\\2d>", "<", ">", "{", "}", "(", ")", "[", "]", ";", ":", ",", '"', "'",
    "\\", "/*", "*/", "\0", "\n", " ", "!important", "color", "background", "position",
    "fixed", "content", "src", "font-family", "--x", "var(--x)", "behavior", "-moz-binding",
    "b\\65havior", "#fff", "#12", "red", "1px", "50%", "0", "e", "n", "-", "+", "~", "*",
    ".a", "#b", "u+a", "U+0-7F", "@", "&", "=", "^=", "calc(", "rgb(", ":root", "body",
    "html", ":has(", ":not(", ":nth-child(", "2n+1", "\\", "\\0", "\u202e", "é",
]  # fmt: skip
ALPHABET = [*"{}();:,.#@!<>/\\*'\"-+~[]=^$|&% \n\t0123456789abcdeilmnoprstuxURL", "\0"]
SELECTORS = [
    ".a", "a:hover", "body", ":root", "u+a", "a > b", ".a, .b", "#x", '[data-x="y"]', "*",
    "</style>", "li:nth-child(2n+1)", ".wa-page ~ p", "a/**/b", ".b\\3c",
]  # fmt: skip
PROPERTIES = [
    "color", "background", "background-image", "position", "content", "--x", "--Y",
    "behavior", "-moz-binding", "width", "font-family", "b\\65havior", "c\\olor", "src",
    "unicode-range", "filter", "cursor", "*zoom",
]  # fmt: skip
VALUES = [
    "red", "#fff", "1px", "0", "auto", "fixed", "relative", "url(/assets/a.png)",
    "url(https://cdn.brand.example/a.png)", "url(//evil.example/x)", 'url("javascript:x")',
    "\\75 rl(javascript:x)", "expression(x)", "e/**/xpression(x)", "var(--x)", '"text"',
    '"</style>"', "calc(1px + 2px)", "rgb(0 0 0 / 50%)", "U+0-7F", "!ie", "{}", ",", "/",
    "</style>", "-->", "<!--", "@import", "attr(x)", "linear-gradient(red, blue)",
]  # fmt: skip
WRAPPERS = [
    "", "@media screen and (max-width: 600px)", "@supports (display: grid)", "@font-face",
    "@keyframes k", "@import", "@\\69mport", "@page", "@media (width < 1px)",
]  # fmt: skip

soup = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
characters = st.text(alphabet=st.sampled_from(ALPHABET), max_size=200)
declarations = st.builds(
    lambda name, value, important: f"{name}: {value}{' !important' if important else ''}",
    st.sampled_from(PROPERTIES),
    st.lists(st.sampled_from(VALUES), max_size=4).map(" ".join),
    st.booleans(),
)
rules = st.builds(
    lambda selector, body: f"{selector} {{ {'; '.join(body)} }}",
    st.sampled_from(SELECTORS),
    st.lists(declarations, max_size=4),
)
blocks = st.builds(
    lambda wrapper, inner: f"{wrapper} {{ {' '.join(inner)} }}" if wrapper else " ".join(inner),
    st.sampled_from(WRAPPERS),
    st.lists(rules | declarations, max_size=3),
)
stylesheets = st.lists(blocks, max_size=5).map("\n".join)

# Mostly valid brand CSS with an attack here and there, so that plenty survives sanitising.
GOOD_SELECTORS = [
    ".a", "a:hover", "body", ":root", "a > b", ".a, .b", "#x", '[data-x="y" i]', "*",
    "li:nth-child(2n+1)", ".c:not(.d, .e)", "html body .e", ".wa-page > h1", ".f:has(> img)",
]  # fmt: skip
GOOD_PROPERTIES = [
    "color", "background", "background-image", "position", "content", "--x", "--Y", "width",
    "font-family", "margin", "transition", "grid-template-columns", "border", "font",
]  # fmt: skip
GOOD_VALUES = [
    "red", "#fff", "1px", "0", "auto", "relative", "sticky", "url(/assets/a.png)",
    "url('https://cdn.brand.example/a b.png')", "var(--x)", '"text"', "calc(1px + 2px)",
    "rgb(0 0 0 / 50%)", "linear-gradient(to right, red 0%, blue 100%)", "1rem/1.5", "[a]",
    "sans-serif", ",", "2fr", "repeat(2, minmax(0, 1fr))", "U+0-7F", "-1.5e3px", "+.5",
]  # fmt: skip
good_declarations = st.builds(
    lambda name, value, important: f"{name}: {value}{' !important' if important else ''}",
    st.sampled_from(GOOD_PROPERTIES) | st.sampled_from(PROPERTIES),
    st.lists(st.sampled_from(GOOD_VALUES) | st.sampled_from(VALUES), max_size=4).map(" ".join),
    st.booleans(),
)
good_rules = st.builds(
    lambda selector, body: f"{selector} {{ {'; '.join(body)} }}",
    st.sampled_from(GOOD_SELECTORS) | st.sampled_from(SELECTORS),
    st.lists(good_declarations, min_size=1, max_size=4),
)
media_blocks = st.builds(
    lambda condition, inner: f"{condition} {{ {' '.join(inner)} }}",
    st.sampled_from(["@media print", "@media (min-width: 40em)", "@supports (display: grid)"]),
    st.lists(good_rules, max_size=3),
)
keyframe_blocks = st.builds(
    lambda frames: f"@keyframes k {{ {' '.join(frames)} }}",
    st.lists(
        st.builds(
            lambda stop, body: f"{stop} {{ {'; '.join(body)} }}",
            st.sampled_from(["from", "to", "50%", "0%, 100%", "bad"]),
            st.lists(good_declarations, max_size=2),
        ),
        max_size=3,
    ),
)
font_face_blocks = st.builds(
    lambda src, extra: f"@font-face {{ font-family: x; src: {src}; {extra} }}",
    st.sampled_from(["url(/assets/f.woff2)", 'local("X"), url(/assets/f.woff) format("woff")']),
    st.sampled_from(["", "font-display: swap", "unicode-range: U+0-7F, U+4??", "color: red"]),
)
brand_stylesheets = st.lists(
    st.one_of(good_rules, media_blocks, keyframe_blocks, font_face_blocks, blocks), max_size=6
).map("\n".join)
any_css = st.one_of(soup, characters, stylesheets, brand_stylesheets)
scopes = st.sampled_from([None, ".wa-page"])


@settings(max_examples=300, deadline=None)
@given(any_css, scopes)
def test_fuzzed_output_is_safe_and_a_fixed_point(source: str, scope: str | None) -> None:
    result = sanitize_css(source, asset_origins=ASSETS, scope=scope)

    assert_safe(result.css)
    assert sanitize_css(result.css, asset_origins=ASSETS, scope=scope) == SanitizedCss(
        result.css, []
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(source: str) -> None:
    result = sanitize_css(source, asset_origins=ASSETS)

    assert_safe(result.css)
    assert all(reason.startswith("line ") for reason in result.removed)


@pytest.mark.parametrize("source", [entry.values[0] for entry in ATTACKS])
def test_attack_outputs_are_fixed_points(source: str) -> None:
    css = clean(source, scope=".wa-page")
    assert sanitize_css(css, asset_origins=ASSETS, scope=".wa-page") == SanitizedCss(css, [])
