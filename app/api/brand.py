"""The brand's own settings: read them, change some (ETA policy changes re-date every line)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from app.api.endpoint import Call, Reply
from app.api.models import BrandOut, BrandPatch, BrandSettings
from app.api.problems import InvalidFields
from app.storage import changes as changes_feed
from app.storage import etas, events
from app.storage.schema import brands

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


def _out(row: Any) -> BrandOut:
    values = {name: getattr(row, name) for name in (*BrandSettings.model_fields, "slug")}
    return BrandOut.model_validate(values)


async def get_brand(call: Call) -> Reply:
    row = (await call.conn.execute(select(brands).where(brands.c.id == call.brand.id))).one()
    return Reply(_out(row))


async def update_brand(call: Call) -> Reply:
    body: BrandPatch = call.body
    row = (await call.conn.execute(select(brands).where(brands.c.id == call.brand.id))).one()
    wanted: dict[str, Any] = {
        name: str(value) if name.endswith("_url") and value is not None else value
        for name in body.model_fields_set
        for value in [getattr(body, name)]
    }
    low = wanted.get("transit_days_min", row.transit_days_min)
    high = wanted.get("transit_days_max", row.transit_days_max)
    errors = []
    if low > high:
        errors.append({"path": "transit_days_min", "message": "must not exceed transit_days_max"})
    for region, (low_r, high_r) in (wanted.get("transit_by_region") or {}).items():
        if low_r > high_r:
            errors.append(
                {"path": f"transit_by_region.{region}", "message": "[min, max] with min <= max"}
            )
    if errors:
        raise InvalidFields(errors)
    changes = {name: value for name, value in wanted.items() if getattr(row, name) != value}
    if changes:
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
    return Reply(_out(row))
