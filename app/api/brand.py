"""The brand's own settings: read them, change some.

ETA policy changes re-date every waiting line; look changes (theme, tokens, custom CSS) are
checked (known theme, WCAG AA contrast, CSS through the sanitizer) and bump the theme version
so cached pages and stylesheets are replaced.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from app.api.endpoint import Call, Reply
from app.api.models import BrandOut, BrandPatch, BrandSettings
from app.api.problems import InvalidFields
from app.storage import changes as changes_feed
from app.storage import etas, events
from app.storage.schema import brands
from app.themes.contrast import ColorError, check_theme_contrast
from app.themes.css import CssRejected, sanitize_css
from app.themes.registry import CONTRAST_PAIRS, check_token_values, load_themes

# Settings the ETA engine reads: changing one re-dates the brand's waiting lines.
ETA_POLICY = frozenset(
    {
        "timezone",
        "fulfillment_window_days",
        "handling_days",
        "transit_days_min",
        "transit_days_max",
        "transit_by_region",
        "eta_change_threshold_days",
        "confidence_widening_days",
        "preorders_own_queue",
        "choice_deadline_days",
        "choice_default_action",
    }
)
LOOK = frozenset({"theme", "theme_tokens", "custom_css", "asset_origins", "logo_url"})
THEMES = load_themes()


def _out(row: Any, removed: list[str] | None = None) -> BrandOut:
    values = {name: getattr(row, name) for name in (*BrandSettings.model_fields, "slug")}
    return BrandOut.model_validate({**values, "custom_css_removed": removed or []})


async def get_brand(call: Call) -> Reply:
    row = (await call.conn.execute(select(brands).where(brands.c.id == call.brand.id))).one()
    return Reply(_out(row))


def _check_transit(wanted: dict[str, Any], row: Any) -> list[dict[str, str]]:
    errors = []
    low = wanted.get("transit_days_min", row.transit_days_min)
    high = wanted.get("transit_days_max", row.transit_days_max)
    if low > high:
        errors.append({"path": "transit_days_min", "message": "must not exceed transit_days_max"})
    for region, (low_r, high_r) in (wanted.get("transit_by_region") or {}).items():
        if low_r > high_r:
            errors.append(
                {"path": f"transit_by_region.{region}", "message": "[min, max] with min <= max"}
            )
    return errors


def _check_look(wanted: dict[str, Any], row: Any) -> tuple[list[dict[str, str]], list[str]]:
    """Check theme, tokens and CSS; sanitize the CSS in `wanted`; return errors and removals."""
    errors: list[dict[str, str]] = []
    removed: list[str] = []
    theme_name = wanted.get("theme", row.theme)
    theme = THEMES.get(theme_name)
    if theme is None:
        errors.append({"path": "theme", "message": f"one of: {', '.join(sorted(THEMES))}"})
        return errors, removed
    overrides = wanted.get("theme_tokens", row.theme_tokens or {})
    token_errors = check_token_values(overrides)
    errors += token_errors
    if not token_errors:
        try:
            problems = check_theme_contrast({**theme.tokens, **overrides}, CONTRAST_PAIRS)
        except ColorError as exc:
            errors.append({"path": f"theme_tokens.{exc.token or ''}", "message": str(exc)})
        else:
            errors += [
                {"path": f"theme_tokens.{p.foreground}", "message": p.message} for p in problems
            ]
    # Narrower asset origins apply to the CSS already kept, too.
    css = wanted.get("custom_css", row.custom_css if "asset_origins" in wanted else None)
    if css:
        origins = wanted.get("asset_origins", row.asset_origins or [])
        try:
            cleaned = sanitize_css(css, asset_origins=origins)
        except CssRejected as exc:
            errors.append({"path": "custom_css", "message": str(exc)})
        else:
            wanted["custom_css"] = cleaned.css
            removed = cleaned.removed
    return errors, removed


async def update_brand(call: Call) -> Reply:
    body: BrandPatch = call.body
    row = (await call.conn.execute(select(brands).where(brands.c.id == call.brand.id))).one()
    wanted: dict[str, Any] = {
        name: str(value) if name.endswith("_url") and value is not None else value
        for name in body.model_fields_set
        for value in [getattr(body, name)]
    }
    errors = _check_transit(wanted, row)
    removed: list[str] = []
    if LOOK & wanted.keys():
        look_errors, removed = _check_look(wanted, row)
        errors += look_errors
    if errors:
        raise InvalidFields(errors)
    changes = {name: value for name, value in wanted.items() if getattr(row, name) != value}
    if changes:
        # Pages show the brand: any change makes cached pages and their validators stale.
        changes["theme_version"] = row.theme_version + 1
        await call.conn.execute(
            update(brands)
            .where(brands.c.id == call.brand.id)
            .values(**changes, updated_at=call.now)
        )
        await events.record(
            call.conn,
            call.brand.id,
            [events.NewEvent(None, "brand_updated", {"changes": sorted(changes)})],
            call.now,
        )
        # Every page of the brand may look different now.
        changes_feed.note_everything(call.conn)
        if ETA_POLICY & changes.keys():
            await etas.recompute(call.conn, call.brand.id, None, call.now)
    row = (await call.conn.execute(select(brands).where(brands.c.id == call.brand.id))).one()
    return Reply(_out(row, removed))
