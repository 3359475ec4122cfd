"""Built-in themes: a manifest of tokens, a stylesheet, optional template overrides.

`themes/<name>/theme.json` declares the tokens; `themes/<name>/style.css` adds the theme's own
rules on top of the base stylesheet; `themes/<name>/templates/` holds templates that take
precedence over `templates/` and may extend the default ones as `{% extends "default:…" %}`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    StrictUndefined,
    select_autoescape,
)

from app.themes.contrast import ColorError, parse_color

ROOT = Path(__file__).resolve().parent.parent.parent
THEMES_DIR = ROOT / "themes"
TEMPLATES_DIR = ROOT / "templates"

COLOR_TOKENS = (
    "background",
    "surface",
    "text",
    "muted_text",
    "accent",
    "button_text",
    "link",
    "success",
    "warning",
    "danger",
    "border",
)
TOKENS = (*COLOR_TOKENS, "font_stack", "radius", "logo")
# (foreground, background, minimum ratio): WCAG AA for normal text.
CONTRAST_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("text", "background", 4.5),
    ("text", "surface", 4.5),
    ("muted_text", "background", 4.5),
    ("muted_text", "surface", 4.5),
    ("link", "background", 4.5),
    ("link", "surface", 4.5),
    ("button_text", "accent", 4.5),
    ("success", "surface", 4.5),
    ("warning", "surface", 4.5),
    ("danger", "surface", 4.5),
)
_FONT_STACK = re.compile(r'^[A-Za-z0-9 ,\-"\']{1,200}$')
_RADIUS = re.compile(r"^(?:[0-9]|[12][0-9]|3[0-2])px$")
_ANY = re.compile(r"^$")
_SHAPES = {"font_stack": _FONT_STACK, "radius": _RADIUS}
_SHAPE_HELP = {
    "font_stack": "font names, commas, spaces and quotes only",
    "radius": "a length from 0px to 32px",
}


class ThemeError(ValueError):
    """A theme or a brand's token override is not acceptable."""


@dataclass(frozen=True)
class Theme:
    name: str
    title: str
    tokens: Mapping[str, str]
    stylesheet: str
    templates: Path | None
    fingerprint: str


def load_themes(directory: Path = THEMES_DIR) -> dict[str, Theme]:
    """Read every theme under `directory`."""
    themes: dict[str, Theme] = {}
    for manifest in sorted(directory.glob("*/theme.json")):
        folder = manifest.parent
        data = json.loads(manifest.read_text())
        tokens = data["tokens"]
        missing = set(TOKENS) - set(tokens)
        if missing:
            raise ThemeError(f"theme {folder.name}: missing tokens {sorted(missing)}")
        stylesheet_path = folder / "style.css"
        stylesheet = stylesheet_path.read_text() if stylesheet_path.exists() else ""
        templates = folder / "templates"
        digest = hashlib.sha256(manifest.read_bytes() + stylesheet.encode())
        if templates.is_dir():
            for template in sorted(templates.rglob("*.html")):
                digest.update(template.read_bytes())
        themes[folder.name] = Theme(
            name=folder.name,
            title=data.get("name", folder.name),
            tokens=dict(tokens),
            stylesheet=stylesheet,
            templates=templates if templates.is_dir() else None,
            fingerprint=digest.hexdigest()[:12],
        )
    if "default" not in themes:
        raise ThemeError("the default theme is missing")
    return themes


def check_token_values(overrides: Mapping[str, Any]) -> list[dict[str, str]]:
    """Validate a brand's token overrides (contrast is checked separately); list the errors."""
    errors: list[dict[str, str]] = []
    for name, value in overrides.items():
        path = f"theme_tokens.{name}"
        if name not in TOKENS:
            errors.append({"path": path, "message": f"unknown token; known: {', '.join(TOKENS)}"})
        elif not isinstance(value, str):
            errors.append({"path": path, "message": "must be a string"})
        elif name in COLOR_TOKENS:
            try:
                parse_color(value)
            except ColorError as exc:
                errors.append({"path": path, "message": str(exc)})
        elif name in _SHAPES and not _SHAPES[name].match(value):
            errors.append({"path": path, "message": _SHAPE_HELP[name]})
        elif name == "logo" and value and not value.startswith("https://"):
            errors.append({"path": path, "message": "an https:// image URL"})
    return errors


def css_tokens(tokens: Mapping[str, str]) -> str:
    """Write tokens as CSS custom properties; colours in canonical #rrggbb form only."""
    lines = []
    for name in TOKENS:
        value = tokens.get(name)
        if value is None or name == "logo":
            continue
        if name in COLOR_TOKENS:
            value = parse_color(value).hex
        elif not _SHAPES.get(name, _ANY).match(value):
            continue
        lines.append(f"  --wa-{name.replace('_', '-')}: {value};")
    return ":root {\n" + "\n".join(lines) + "\n}\n"


def environment(theme: Theme) -> Environment:
    """Build the Jinja environment for a theme: its templates first, then the defaults."""
    defaults = FileSystemLoader(TEMPLATES_DIR)
    loaders: list[BaseLoader] = []
    if theme.templates is not None:
        loaders.append(FileSystemLoader(theme.templates))
    loaders += [defaults, PrefixLoader({"default": defaults}, delimiter=":")]
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship with the code: no need to look at the files on every render.
        auto_reload=False,
    )
    env.policies["ext.i18n.trimmed"] = True
    # Newstyle gettext: templates pass variables to _() and the translation is formatted with
    # them after escaping. Each render brings its own catalog's callables (see app.i18n).
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    return env
