"""Bad input on the stock, supply and brand endpoints: a problem+json answer and nothing changed.

LAMP has PO-1 (5 units, 2 received, so 3 still expected) and order 1001 waits on it; another
brand has SKU SECRET with supply S-1.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.storage import schema
from tests.api.helpers import assert_problem, snapshot
from tests.eta.helpers import Api, backordered, sqlite_only

pytestmark = pytest.mark.anyio

Case = tuple[str, str, Any, int, str, list[str] | None]


@pytest.fixture
async def stocked(api, client, other_brand):
    await api.sku("LAMP")
    await api.supply("LAMP", "PO-1", 5, "2026-11-20")
    await api.receive("LAMP", "PO-1", 2)
    await api.place("1001", [backordered("1", "LAMP", 4)])
    other = Api(client, other_brand)
    await other.sku("SECRET", on_hand=3)
    await other.supply("SECRET", "S-1", 2, "2026-11-20")
    return api


async def everything(db) -> dict[str, Any]:
    """Every data row, plus the brands' settings."""
    state = await snapshot(db)
    async with db.read() as conn:
        rows = await conn.execute(select(schema.brands).order_by(schema.brands.c.id))
        state["brands"] = [tuple(row) for row in rows]
    return state


async def check_refused(api: Api, db, cases: list[Case]) -> None:
    before = await everything(db)
    for method, path, body, status, code, paths in cases:
        response = await api.call(method, path, body, status=None)
        try:
            assert_problem(response, status, code, paths)
        except AssertionError as exc:
            raise AssertionError(f"{method} {path} {body!r}: {exc}") from None
        assert await everything(db) == before, f"{method} {path} {body!r} changed data"


NEW = {"ref": "PO-9", "expected_date": "2026-12-01"}


@sqlite_only
async def test_bad_quantities_are_refused(stocked, db):
    await check_refused(
        stocked,
        db,
        [
            (
                "POST",
                "/skus/LAMP/supply",
                {**NEW, "quantity": 0},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            (
                "POST",
                "/skus/LAMP/supply",
                {**NEW, "quantity": -3},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            (
                "POST",
                "/skus/LAMP/supply",
                {**NEW, "quantity": 1.5},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            (
                "POST",
                "/skus/LAMP/supply/PO-1/receive",
                {"quantity": 0},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            (
                "POST",
                "/skus/LAMP/supply/PO-1/receive",
                {"quantity": -1},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            ("POST", "/skus/LAMP/supply/PO-1/receive", {}, 422, "invalid-fields", ["quantity"]),
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"quantity": 0},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            ("PUT", "/skus/LAMP", {"on_hand": -1}, 422, "invalid-fields", ["on_hand"]),
            ("PATCH", "/skus/LAMP", {"on_hand": -1}, 422, "invalid-fields", ["on_hand"]),
        ],
    )


async def test_more_than_the_row_holds_is_a_conflict(stocked, db):
    before = await everything(db)
    response = await stocked.call(
        "POST", "/skus/LAMP/supply/PO-1/receive", {"quantity": 4}, status=None
    )
    body = assert_problem(response, 409, "quantity-exceeded", ["quantity"])
    assert body["errors"] == [{"path": "quantity", "message": "at most 3"}]
    assert await everything(db) == before

    # Two units were received already: the row cannot shrink below them.
    response = await stocked.call("PATCH", "/skus/LAMP/supply/PO-1", {"quantity": 1}, status=None)
    assert_problem(response, 409, "quantity-exceeded", ["quantity"])
    assert await everything(db) == before

    # Down to exactly what was received is fine.
    response = await stocked.call("PATCH", "/skus/LAMP/supply/PO-1", {"quantity": 2})
    assert response.json()["quantity"] == 2


@sqlite_only
async def test_null_for_a_field_that_cannot_be_cleared_is_refused(stocked, db):
    await check_refused(
        stocked,
        db,
        [
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"quantity": None},
                422,
                "invalid-fields",
                ["quantity"],
            ),
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"expected_date": None},
                422,
                "invalid-fields",
                ["expected_date"],
            ),
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"confidence": None},
                422,
                "invalid-fields",
                ["confidence"],
            ),
            ("PATCH", "/skus/LAMP/supply/PO-1", {"kind": None}, 422, "invalid-fields", ["kind"]),
            ("PATCH", "/skus/LAMP", {"on_hand": None}, 422, "invalid-fields", ["on_hand"]),
            ("PATCH", "/brand", {"handling_days": None}, 422, "invalid-fields", ["handling_days"]),
            ("PATCH", "/brand", {"timezone": None}, 422, "invalid-fields", ["timezone"]),
        ],
    )


@sqlite_only
async def test_other_bad_fields_are_refused(stocked, db):
    await check_refused(
        stocked,
        db,
        [
            (
                "POST",
                "/skus/LAMP/supply",
                {**NEW, "quantity": 1, "confidence": 1.5},
                422,
                "invalid-fields",
                ["confidence"],
            ),
            (
                "POST",
                "/skus/LAMP/supply",
                {**NEW, "quantity": 1, "kind": "airmail"},
                422,
                "invalid-fields",
                ["kind"],
            ),
            (
                "POST",
                "/skus/LAMP/supply",
                {"ref": "PO-1", "quantity": 1, "expected_date": "2026-12-01"},
                409,
                "conflict",
                None,
            ),
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"received_quantity": 5},
                422,
                "invalid-fields",
                ["received_quantity"],
            ),
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"confidence": -0.1},
                422,
                "invalid-fields",
                ["confidence"],
            ),
            (
                "PATCH",
                "/skus/LAMP/supply/bad%20ref",
                {"quantity": 5},
                400,
                "invalid-parameter",
                ["ref"],
            ),
        ],
    )


@pytest.mark.parametrize("bad_day", ["1999-12-31", "2100-01-01", "2026-02-30", "soon"])
@sqlite_only
async def test_dates_out_of_range_are_refused(stocked, db, bad_day):
    await check_refused(
        stocked,
        db,
        [
            (
                "POST",
                "/skus/LAMP/supply",
                {**NEW, "quantity": 1, "expected_date": bad_day},
                422,
                "invalid-fields",
                ["expected_date"],
            ),
            (
                "PATCH",
                "/skus/LAMP/supply/PO-1",
                {"expected_date": bad_day},
                422,
                "invalid-fields",
                ["expected_date"],
            ),
            (
                "PATCH",
                "/skus/LAMP",
                {"release_date": bad_day},
                422,
                "invalid-fields",
                ["release_date"],
            ),
            (
                "PUT",
                "/skus/LAMP",
                {"on_hand": 0, "season_start": bad_day},
                422,
                "invalid-fields",
                ["season_start"],
            ),
        ],
    )


async def test_unknown_and_foreign_skus_and_refs_are_not_found(stocked, db):
    supply = {"ref": "PO-9", "quantity": 1, "expected_date": "2026-12-01"}
    cases: list[Case] = []
    for sku in ("NOPE", "SECRET"):  # SECRET is the other brand's
        cases += [
            ("GET", f"/skus/{sku}", None, 404, "unknown-sku", None),
            ("PATCH", f"/skus/{sku}", {"on_hand": 9}, 404, "unknown-sku", None),
            ("GET", f"/skus/{sku}/supply", None, 404, "unknown-sku", None),
            ("POST", f"/skus/{sku}/supply", supply, 404, "unknown-sku", None),
            ("PATCH", f"/skus/{sku}/supply/S-1", {"quantity": 9}, 404, "unknown-sku", None),
            ("POST", f"/skus/{sku}/supply/S-1/receive", {"quantity": 1}, 404, "unknown-sku", None),
            ("DELETE", f"/skus/{sku}/supply/S-1", None, 404, "unknown-sku", None),
        ]
    for ref in ("PO-X", "S-1"):  # S-1 is the other brand's
        cases += [
            ("PATCH", f"/skus/LAMP/supply/{ref}", {"quantity": 9}, 404, "not-found", None),
            ("POST", f"/skus/LAMP/supply/{ref}/receive", {"quantity": 1}, 404, "not-found", None),
            ("DELETE", f"/skus/LAMP/supply/{ref}", None, 404, "not-found", None),
        ]
    await check_refused(stocked, db, cases)


@sqlite_only
async def test_bad_brand_settings_are_refused_with_their_path(stocked, db):
    await check_refused(
        stocked,
        db,
        [
            (
                "PATCH",
                "/brand",
                {"transit_days_min": 7, "transit_days_max": 6},
                422,
                "invalid-fields",
                ["transit_days_min"],
            ),
            (
                "PATCH",
                "/brand",
                {"transit_days_min": 6},
                422,
                "invalid-fields",
                [("transit_days_min", "transit_days_max")],
            ),
            (
                "PATCH",
                "/brand",
                {"transit_by_region": {"US-HI": [9, 4]}},
                422,
                "invalid-fields",
                ["transit_by_region.US-HI"],
            ),
            (
                "PATCH",
                "/brand",
                {"transit_by_region": {"US-HI": [4]}},
                422,
                "invalid-fields",
                ["transit_by_region.US-HI"],
            ),
            (
                "PATCH",
                "/brand",
                {"timezone": "Mars/Olympus_Mons"},
                422,
                "invalid-fields",
                ["timezone"],
            ),
            ("PATCH", "/brand", {"handling_days": -1}, 422, "invalid-fields", ["handling_days"]),
            (
                "PATCH",
                "/brand",
                {"fulfillment_window_days": 0},
                422,
                "invalid-fields",
                ["fulfillment_window_days"],
            ),
            (
                "PATCH",
                "/brand",
                {"eta_change_threshold_days": 0},
                422,
                "invalid-fields",
                ["eta_change_threshold_days"],
            ),
            (
                "PATCH",
                "/brand",
                {"choice_default_action": "refund"},
                422,
                "invalid-fields",
                ["choice_default_action"],
            ),
            ("PATCH", "/brand", {"slug": "evil"}, 422, "invalid-fields", ["slug"]),
            # One bad field refuses the whole change, good fields included.
            (
                "PATCH",
                "/brand",
                {"handling_days": 4, "timezone": "Nowhere/Town"},
                422,
                "invalid-fields",
                ["timezone"],
            ),
        ],
    )
