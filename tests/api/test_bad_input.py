"""Bad input for every write endpoint: the exact problem, the field paths, and nothing changed.

Every case here must leave the database as it was, so the cases share one seeded database per
backend (a module-scoped world) and each compares a full snapshot before and after its request.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.api.keys import create_key
from app.brands import create_brand
from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from tests.api.helpers import (
    API,
    assert_problem,
    line,
    order,
    order_version,
    parcel,
    small_order,
    snapshot,
)

pytestmark = pytest.mark.anyio

DELETE = object()


def edit(payload: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `payload` with dotted paths ("lines.0.quantity") set or DELETE'd."""
    payload = copy.deepcopy(payload)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target: Any = payload
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) else last
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
    return payload


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: Any  # JSON-able, or bytes sent as they are
    status: int = 422
    code: str | tuple[str, ...] = "invalid-fields"
    paths: list[str | tuple[str, ...]] | None = None
    brand: str = "acme"
    headers: dict[str, str] = field(default_factory=dict)


def new_order(**changes: Any) -> dict[str, Any]:
    return edit(order("2001"), changes)


def upsert(body: Any, **kw: Any) -> Case:
    return Case("POST", "/orders", body, **kw)


def batch(body: Any, **kw: Any) -> Case:
    return Case("POST", "/orders/batch", body, **kw)


def ship(body: Any, number: str = "1001", **kw: Any) -> Case:
    return Case("POST", f"/orders/{number}/shipments", body, **kw)


def patch(body: Any, number: str = "1001", ref: str = "P1", **kw: Any) -> Case:
    return Case("PATCH", f"/orders/{number}/shipments/{ref}", body, **kw)


SCAN = {"occurred_at": "2026-11-02T10:00:00Z", "status": "in_transit", "description": "Departed"}


def scan(body: Any, number: str = "1001", ref: str = "P1", **kw: Any) -> Case:
    return Case("POST", f"/orders/{number}/shipments/{ref}/checkpoints", body, **kw)


SKU = {"title": "Blue mug", "on_hand": 3}


def put_sku(body: Any, sku: str = "MUG-BLUE", **kw: Any) -> Case:
    return Case("PUT", f"/skus/{sku}", body, **kw)


SUPPLY = {"ref": "PO-2", "quantity": 10, "expected_date": "2026-12-01"}


def supply(body: Any, sku: str = "MUG-BLUE", **kw: Any) -> Case:
    return Case("POST", f"/skus/{sku}/supply", body, **kw)


def q(path: str) -> tuple[str, ...]:
    """Accept a path or any path below it (for errors that may point at a sub-field)."""
    return (path, *(f"{path}.{sub}" for sub in ("quantity", "line", "ref", "status")))


CASES: dict[str, Case] = {
    # POST /orders -----------------------------------------------------------------------
    "order-malformed-json": upsert(b'{"number": "2001",', status=400, code="invalid-json"),
    "order-empty-body": upsert(b"", status=400, code="invalid-json"),
    "order-body-is-a-list": upsert([new_order()], paths=["(body)"]),
    "order-quantity-as-string": upsert(
        new_order(**{"lines.0.quantity": "2"}), paths=["lines[0].quantity"]
    ),
    "order-unit-price-float": upsert(
        new_order(**{"lines.0.unit_price": 1.5}), paths=["lines[0].unit_price"]
    ),
    "order-sms-consent-string": upsert(
        new_order(**{"customer.sms_consent": "yes"}), paths=["customer.sms_consent"]
    ),
    "order-number-as-int": upsert(new_order(number=2001), paths=["number"]),
    "order-missing-number": upsert(new_order(number=DELETE), paths=["number"]),
    "order-missing-placed-at": upsert(new_order(placed_at=DELETE), paths=["placed_at"]),
    "order-missing-lines": upsert(new_order(lines=DELETE), paths=["lines"]),
    "order-no-lines": upsert(new_order(lines=[]), paths=["lines"]),
    "order-missing-line-sku-and-title": upsert(
        new_order(**{"lines.1.sku": DELETE, "lines.1.title": DELETE}),
        paths=["lines[1].sku", "lines[1].title"],
    ),
    "order-unknown-top-level-field": upsert(new_order(gift_wrap=True), paths=["gift_wrap"]),
    "order-unknown-customer-field": upsert(
        new_order(**{"customer.tier": "gold"}), paths=["customer.tier"]
    ),
    "order-unknown-line-field": upsert(
        new_order(**{"lines.1.color": "red"}), paths=["lines[1].color"]
    ),
    "order-unknown-shipping-field": upsert(
        new_order(**{"shipping.street": "1 Main"}), paths=["shipping.street"]
    ),
    "order-title-301-chars": upsert(
        new_order(**{"lines.0.title": "t" * 301}), paths=["lines[0].title"]
    ),
    "order-number-65-chars": upsert(new_order(number="N" * 65), paths=["number"]),
    "order-line-ref-65-chars": upsert(
        new_order(**{"lines.0.ref": "r" * 65}), paths=["lines[0].ref"]
    ),
    "order-number-with-space": upsert(new_order(number="20 01"), paths=["number"]),
    "order-quantity-zero": upsert(
        new_order(**{"lines.0.quantity": 0}), paths=["lines[0].quantity"]
    ),
    "order-quantity-negative": upsert(
        new_order(**{"lines.1.quantity": -1}), paths=["lines[1].quantity"]
    ),
    "order-unit-price-negative": upsert(
        new_order(**{"lines.0.unit_price": -1}), paths=["lines[0].unit_price"]
    ),
    "order-phone-national": upsert(
        new_order(**{"customer.phone": "4155550123"}), paths=["customer.phone"]
    ),
    "order-phone-with-spaces": upsert(
        new_order(**{"customer.phone": "+1 415 555 0123"}), paths=["customer.phone"]
    ),
    "order-phone-bad-country": upsert(
        new_order(**{"customer.phone": "+999123"}), paths=["customer.phone"]
    ),
    "order-phone-too-short": upsert(
        new_order(**{"customer.phone": "+1415555012"}), paths=["customer.phone"]
    ),
    "order-email-no-at": upsert(
        new_order(**{"customer.email": "not-an-email"}), paths=["customer.email"]
    ),
    "order-email-no-domain-dot": upsert(
        new_order(**{"customer.email": "ada@example"}), paths=["customer.email"]
    ),
    "order-customer-unreachable": upsert(new_order(customer={"name": "Ada"}), paths=["customer"]),
    "order-placed-at-naive": upsert(
        new_order(placed_at="2026-11-01T10:00:00"), paths=["placed_at"]
    ),
    "order-placed-at-before-year-one-in-utc": upsert(
        new_order(placed_at="0001-01-01T00:00:00+01:00"), paths=["placed_at"]
    ),
    "order-placed-at-after-year-9999-in-utc": upsert(
        new_order(placed_at="9999-12-31T23:00:00-05:00"), paths=["placed_at"]
    ),
    "order-placed-at-date-only": upsert(new_order(placed_at="2026-11-01"), paths=["placed_at"]),
    "order-currency-unknown": upsert(new_order(currency="XYZ"), paths=["currency"]),
    "order-currency-lowercase": upsert(new_order(currency="usd"), paths=["currency"]),
    "order-locale-unknown": upsert(
        new_order(**{"customer.locale": "xx-YY"}), paths=["customer.locale"]
    ),
    "order-timezone-unknown": upsert(
        new_order(**{"customer.timezone": "Mars/Olympus_Mons"}), paths=["customer.timezone"]
    ),
    "order-region-not-iso": upsert(
        new_order(**{"shipping.region": "California"}), paths=["shipping.region"]
    ),
    "order-line-status-shipped": upsert(
        new_order(**{"lines.0.status": "shipped"}), paths=["lines[0].status"]
    ),
    "order-backorder-type-unknown": upsert(
        new_order(**{"lines.1.backorder_type": "someday"}), paths=["lines[1].backorder_type"]
    ),
    "order-image-url-not-url": upsert(
        new_order(**{"lines.0.image_url": "mug.png"}), paths=["lines[0].image_url"]
    ),
    "order-vendor-date-invalid": upsert(
        new_order(**{"lines.0.vendor_date": "2026-02-30"}), paths=["lines[0].vendor_date"]
    ),
    "order-duplicate-line-refs": upsert(new_order(**{"lines.1.ref": "1"}), paths=["lines[1].ref"]),
    "order-duplicate-sku-without-refs": upsert(
        new_order(
            lines=[line("x", "MUG-BLUE") | {"ref": None}, line("y", "MUG-BLUE") | {"ref": None}]
        ),
        paths=[("lines[1].sku", "lines[1].ref")],
    ),
    "order-parcel-unknown-line": upsert(
        new_order(shipments=[parcel("P1", ("9", 1))]), paths=["shipments[0].lines[0].line"]
    ),
    "order-parcel-naive-shipped-at": upsert(
        new_order(shipments=[parcel("P1", ("1", 1), shipped_at="2026-11-02T10:00:00")]),
        paths=["shipments[0].shipped_at"],
    ),
    "order-parcel-unknown-field": upsert(
        new_order(shipments=[parcel("P1", ("1", 1), weight=3)]), paths=["shipments[0].weight"]
    ),
    "order-parcel-quantity-zero": upsert(
        new_order(shipments=[parcel("P1", ("1", 0))]), paths=["shipments[0].lines[0].quantity"]
    ),
    "order-parcels-exceed-line": upsert(
        new_order(shipments=[parcel("P1", ("1", 2)), parcel("P2", ("1", 1))]),
        status=409,
        code="quantity-exceeded",
        paths=[("shipments[0].lines[0].line", "shipments[1].lines[0].line")],
    ),
    "order-parcel-holds-cancelled-line": upsert(
        new_order(**{"lines.1.status": "cancelled"}, shipments=[parcel("P1", ("2", 1))]),
        status=409,
        code="quantity-exceeded",
        paths=["shipments[0].lines[0].line"],
    ),
    "order-duplicate-parcel-refs": upsert(
        new_order(shipments=[parcel("P1", ("1", 1)), parcel("P1", ("1", 1))]),
        paths=["shipments[1].ref"],
    ),
    "order-parcel-names-a-line-twice": upsert(
        new_order(shipments=[parcel("P1", ("1", 1), ("1", 1))]),
        paths=["shipments[0].lines[1].line"],
    ),
    "order-update-below-shipped-quantity": upsert(
        edit(order("1001"), {"lines.0.quantity": 1}),
        status=409,
        code="quantity-exceeded",
        paths=[q("lines[0]")],
    ),
    "order-update-drops-shipped-line": upsert(
        edit(order("1001"), {"lines.0": DELETE}), status=409, code=("conflict", "quantity-exceeded")
    ),
    # POST /orders/batch -----------------------------------------------------------------
    "batch-malformed-json": batch(b'{"orders": [', status=400, code="invalid-json"),
    "batch-missing-orders": batch({}, paths=["orders"]),
    "batch-empty": batch({"orders": []}, paths=["orders"]),
    "batch-unknown-field": batch(
        {"orders": [small_order("B1")], "dry_run": True}, paths=["dry_run"]
    ),
    "batch-1001-orders": batch(
        {"orders": [small_order(f"B{i}") for i in range(1001)]}, paths=["orders"]
    ),
    "batch-duplicate-numbers": batch(
        {"orders": [small_order("B1"), small_order("B1")]}, paths=["orders[1].number"]
    ),
    "batch-phone-in-fourth-order": batch(
        {
            "orders": [small_order(f"B{i}") for i in range(3)]
            + [small_order("B3", customer={"phone": "+1 415 555 0123"})]
        },
        paths=["orders[3].customer.phone"],
    ),
    "batch-quantity-string": batch(
        {"orders": [small_order("B0"), edit(small_order("B1"), {"lines.0.quantity": "2"})]},
        paths=["orders[1].lines[0].quantity"],
    ),
    "batch-unknown-nested-field": batch(
        {"orders": [edit(small_order("B0"), {"customer.vip": True})]},
        paths=["orders[0].customer.vip"],
    ),
    "batch-duplicate-line-refs": batch(
        {"orders": [small_order("B0"), new_order(**{"lines.1.ref": "1"})]},
        paths=["orders[1].lines[1].ref"],
    ),
    "batch-parcel-unknown-line": batch(
        {"orders": [small_order("B0"), new_order(shipments=[parcel("P1", ("9", 1))])]},
        paths=["orders[1].shipments[0].lines[0].line"],
    ),
    "batch-second-order-exceeds-so-none-land": batch(
        {"orders": [small_order("B0"), new_order(shipments=[parcel("P1", ("1", 3))])]},
        status=409,
        code="quantity-exceeded",
        paths=["orders[1].shipments[0].lines[0].line"],
    ),
    "batch-second-order-drops-shipped-line": batch(
        {"orders": [small_order("B0"), edit(order("1001"), {"lines.0": DELETE})]},
        status=409,
        code=("conflict", "quantity-exceeded"),
    ),
    # POST /orders/{number}/shipments ----------------------------------------------------
    "ship-malformed-json": ship(b"{'ref': 'P2'}", status=400, code="invalid-json"),
    "ship-quantity-as-string": ship(
        edit(parcel("P2", ("2", 1)), {"lines.0.quantity": "1"}), paths=["lines[0].quantity"]
    ),
    "ship-quantity-zero": ship(parcel("P2", ("2", 0)), paths=["lines[0].quantity"]),
    "ship-quantity-negative": ship(parcel("P2", ("2", -1)), paths=["lines[0].quantity"]),
    "ship-missing-carrier": ship(
        edit(parcel("P2", ("2", 1)), {"carrier": DELETE}), paths=["carrier"]
    ),
    "ship-missing-lines": ship(edit(parcel("P2"), {"lines": DELETE}), paths=["lines"]),
    "ship-no-lines": ship(parcel("P2", lines=[]), paths=["lines"]),
    "ship-unknown-field": ship(parcel("P2", ("2", 1), insurance=True), paths=["insurance"]),
    "ship-unknown-line-field": ship(
        edit(parcel("P2", ("2", 1)), {"lines.0.sku": "LAMP-OAK"}), paths=["lines[0].sku"]
    ),
    "ship-ref-65-chars": ship(parcel("R" * 65, ("2", 1)), paths=["ref"]),
    "ship-carrier-65-chars": ship(parcel("P2", ("2", 1), carrier="c" * 65), paths=["carrier"]),
    "ship-shipped-at-naive": ship(
        parcel("P2", ("2", 1), shipped_at="2026-11-02T10:00:00"), paths=["shipped_at"]
    ),
    "ship-status-unknown": ship(parcel("P2", ("2", 1), status="teleported"), paths=["status"]),
    "ship-promised-date-garbage": ship(
        parcel("P2", ("2", 1), promised_date="soon"), paths=["promised_date"]
    ),
    "ship-tracking-url-not-url": ship(
        parcel("P2", ("2", 1), tracking_url="ups tracking"), paths=["tracking_url"]
    ),
    "ship-unknown-line": ship(parcel("P2", ("9", 1)), paths=["lines[0].line"]),
    "ship-beyond-quantity-after-first-parcel": ship(
        parcel("P2", ("2", 1), ("1", 1)),
        status=409,
        code="quantity-exceeded",
        paths=["lines[1].line"],
    ),
    "ship-more-than-the-line-holds": ship(
        parcel("P2", ("2", 2)), status=409, code="quantity-exceeded", paths=["lines[0].line"]
    ),
    "ship-cancelled-line": ship(
        parcel("P1", ("2", 1)),
        number="1002",
        status=409,
        code="quantity-exceeded",
        paths=["lines[0].line"],
    ),
    "ship-duplicate-ref": ship(parcel("P1", ("2", 1)), status=409, code="conflict"),
    "ship-names-a-line-twice": ship(parcel("P2", ("2", 1), ("2", 1)), paths=["lines[1].line"]),
    "ship-unknown-order": ship(parcel("P2", ("2", 1)), number="NOPE", status=404, code="not-found"),
    "ship-other-brands-order": ship(
        parcel("P2", ("1", 1)), number="G-1", status=404, code="not-found"
    ),
    # PATCH /orders/{number}/shipments/{ref} ---------------------------------------------
    "patch-malformed-json": patch(b'{"status": }', status=400, code="invalid-json"),
    "patch-body-is-a-string": patch("delivered", paths=["(body)"]),
    "patch-status-unknown": patch({"status": "vanished"}, paths=["status"]),
    "patch-status-null": patch({"status": None}, paths=["status"]),
    "patch-field-not-patchable": patch({"carrier": "fedex"}, paths=["carrier"]),
    "patch-lines-not-patchable": patch({"lines": [{"line": "1", "quantity": 1}]}, paths=["lines"]),
    "patch-delivered-at-naive": patch(
        {"delivered_at": "2026-11-04T12:00:00"}, paths=["delivered_at"]
    ),
    "patch-carrier-eta-us-format": patch({"carrier_eta": "11/05/2026"}, paths=["carrier_eta"]),
    "patch-carrier-eta-number": patch({"carrier_eta": 20261105}, paths=["carrier_eta"]),
    "patch-tracking-url-not-url": patch({"tracking_url": "nope"}, paths=["tracking_url"]),
    "patch-unknown-shipment": patch({"status": "lost"}, ref="NOPE", status=404, code="not-found"),
    "patch-unknown-order": patch({"status": "lost"}, number="NOPE", status=404, code="not-found"),
    "patch-other-brands-shipment": patch(
        {"status": "lost"}, number="G-1", ref="GP1", status=404, code="not-found"
    ),
    # POST /orders/{number}/shipments/{ref}/checkpoints ----------------------------------
    "scan-malformed-json": scan(b'{"status": "lost"', status=400, code="invalid-json"),
    "scan-missing-description": scan(edit(SCAN, {"description": DELETE}), paths=["description"]),
    "scan-missing-everything": scan({}, paths=["occurred_at", "status", "description"]),
    "scan-occurred-at-naive": scan(
        edit(SCAN, {"occurred_at": "2026-11-02T10:00:00"}), paths=["occurred_at"]
    ),
    "scan-occurred-at-out-of-range": scan(
        edit(SCAN, {"occurred_at": "9999-12-31T23:59:59-12:00"}), paths=["occurred_at"]
    ),
    "scan-status-unknown": scan(edit(SCAN, {"status": "teleported"}), paths=["status"]),
    "scan-country-three-letters": scan(edit(SCAN, {"country": "USA"}), paths=["country"]),
    "scan-description-501-chars": scan(
        edit(SCAN, {"description": "d" * 501}), paths=["description"]
    ),
    "scan-unknown-field": scan(edit(SCAN, {"lat": 37.8}), paths=["lat"]),
    "scan-unknown-shipment": scan(SCAN, ref="NOPE", status=404, code="not-found"),
    "scan-unknown-order": scan(SCAN, number="NOPE", status=404, code="not-found"),
    "scan-other-brands-shipment": scan(SCAN, number="G-1", ref="GP1", status=404, code="not-found"),
    # PUT /skus/{sku} --------------------------------------------------------------------
    "sku-malformed-json": put_sku(b"{on_hand: 3}", status=400, code="invalid-json"),
    "sku-on-hand-as-string": put_sku(edit(SKU, {"on_hand": "5"}), paths=["on_hand"]),
    "sku-on-hand-float": put_sku(edit(SKU, {"on_hand": 2.5}), paths=["on_hand"]),
    "sku-on-hand-negative": put_sku(edit(SKU, {"on_hand": -1}), paths=["on_hand"]),
    "sku-missing-on-hand": put_sku(edit(SKU, {"on_hand": DELETE}), paths=["on_hand"]),
    "sku-title-301-chars": put_sku(edit(SKU, {"title": "t" * 301}), paths=["title"]),
    "sku-release-date-invalid": put_sku(
        edit(SKU, {"release_date": "2026-13-01"}), paths=["release_date"]
    ),
    "sku-lead-days-over-ten-years": put_sku(
        edit(SKU, {"production_lead_days": 3651}), paths=["production_lead_days"]
    ),
    "sku-unknown-field": put_sku(edit(SKU, {"price": 1800}), paths=["price"]),
    "sku-path-65-chars": put_sku(
        SKU, sku="S" * 65, status=400, code="invalid-parameter", paths=["sku"]
    ),
    "sku-path-with-space": put_sku(
        SKU, sku="MUG%20BLUE", status=400, code="invalid-parameter", paths=["sku"]
    ),
    # POST /skus/{sku}/supply ------------------------------------------------------------
    "supply-malformed-json": supply(b'{"ref": "PO-2", }', status=400, code="invalid-json"),
    "supply-quantity-as-string": supply(edit(SUPPLY, {"quantity": "10"}), paths=["quantity"]),
    "supply-quantity-zero": supply(edit(SUPPLY, {"quantity": 0}), paths=["quantity"]),
    "supply-quantity-negative": supply(edit(SUPPLY, {"quantity": -5}), paths=["quantity"]),
    "supply-missing-expected-date": supply(
        edit(SUPPLY, {"expected_date": DELETE}), paths=["expected_date"]
    ),
    "supply-expected-date-datetime": supply(
        edit(SUPPLY, {"expected_date": "2026-12-01T10:00:00"}), paths=["expected_date"]
    ),
    "supply-ref-65-chars": supply(edit(SUPPLY, {"ref": "R" * 65}), paths=["ref"]),
    "supply-kind-unknown": supply(edit(SUPPLY, {"kind": "wishful"}), paths=["kind"]),
    "supply-confidence-over-one": supply(edit(SUPPLY, {"confidence": 1.5}), paths=["confidence"]),
    "supply-confidence-nan": supply(
        b'{"ref": "PO-2", "quantity": 10, "expected_date": "2026-12-01", "confidence": NaN}',
        paths=["confidence"],
    ),
    "supply-unknown-field": supply(edit(SUPPLY, {"vendor": "ACME"}), paths=["vendor"]),
    "supply-unknown-sku": supply(SUPPLY, sku="NOPE", status=404, code="unknown-sku"),
    "supply-other-brands-sku": supply(SUPPLY, sku="G-SKU", status=404, code="unknown-sku"),
    "supply-duplicate-ref": supply(edit(SUPPLY, {"ref": "PO-1"}), status=409, code="conflict"),
    # DELETE /skus/{sku}/supply/{ref} ----------------------------------------------------
    "unsupply-unknown-ref": Case(
        "DELETE", "/skus/MUG-BLUE/supply/NOPE", None, status=404, code="not-found"
    ),
    "unsupply-unknown-sku": Case(
        "DELETE", "/skus/NOPE/supply/PO-1", None, status=404, code="unknown-sku"
    ),
    "unsupply-other-brands-supply": Case(
        "DELETE", "/skus/G-SKU/supply/GPO-1", None, status=404, code="unknown-sku"
    ),
    "unsupply-other-brands-ref-on-own-sku": Case(
        "DELETE", "/skus/MUG-BLUE/supply/GPO-1", None, status=404, code="not-found"
    ),
}


# The shared world --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def shared_url(
    request: pytest.FixtureRequest, sqlite_template, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("bad_input") / "whereabouts.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("postgres")
    name = await server.create()
    try:
        yield server.url(name)
    finally:
        await server.drop(name)


@dataclass
class World:
    client: httpx.AsyncClient
    db: Database
    headers: dict[str, dict[str, str]]
    brand_ids: dict[str, int]


async def _brand(db: Database, slug: str) -> tuple[int, dict[str, str]]:
    now = dt.datetime.now(dt.UTC)
    async with db.write() as conn:
        brand_id = await create_brand(conn, slug, slug.title(), now)
        key = await create_key(conn, brand_id, "test", now)
    return brand_id, {"Authorization": f"Bearer {key.secret}"}


async def _seed(client: httpx.AsyncClient, acme: dict[str, str], globex: dict[str, str]) -> None:
    async def ok(method: str, path: str, body: Any, headers: dict[str, str]) -> None:
        response = await client.request(method, API + path, json=body, headers=headers)
        assert response.status_code in (200, 201), response.text

    await ok("POST", "/orders", order("1001"), acme)
    await ok("POST", "/orders/1001/shipments", parcel("P1", ("1", 2)), acme)
    await ok("POST", "/orders", edit(order("1002"), {"lines.1.status": "cancelled"}), acme)
    await ok("PUT", "/skus/MUG-BLUE", SKU, acme)
    await ok("POST", "/skus/MUG-BLUE/supply", {**SUPPLY, "ref": "PO-1"}, acme)
    await ok("POST", "/orders", order("G-1"), globex)
    await ok("POST", "/orders/G-1/shipments", parcel("GP1", ("1", 1)), globex)
    await ok("PUT", "/skus/G-SKU", SKU, globex)
    await ok("POST", "/skus/G-SKU/supply", {**SUPPLY, "ref": "GPO-1"}, globex)


@pytest.fixture(scope="module")
async def world(shared_url: str) -> AsyncIterator[World]:
    settings = Settings.from_env(
        {"DATABASE_URL": shared_url, "PUBLIC_URL": "https://track.example.test"}
    )
    db = Database(settings.database_url)
    app = create_app(settings)
    try:
        async with LifespanManager(app) as manager:
            # A crash must show up as the 500 a brand would get, not as a test-side exception.
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                acme_id, acme = await _brand(db, "acme")
                globex_id, globex = await _brand(db, "globex")
                await _seed(client, acme, globex)
                yield World(
                    client,
                    db,
                    {"acme": acme, "globex": globex},
                    {"acme": acme_id, "globex": globex_id},
                )
    finally:
        await db.close()


@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in CASES.items()])
async def test_bad_input_is_refused_and_changes_nothing(world: World, case: Case) -> None:
    headers = dict(world.headers[case.brand]) | case.headers
    if isinstance(case.body, bytes):
        content = case.body
    elif case.body is None:
        content = None
    else:
        content = json.dumps(case.body).encode()
    if content is not None:
        headers["Content-Type"] = "application/json"
    versions = {
        n: await order_version(world.db, world.brand_ids["acme"], n) for n in ("1001", "1002")
    }
    before = await snapshot(world.db)

    response = await world.client.request(
        case.method, API + case.path, content=content, headers=headers
    )

    body = assert_problem(response, case.status, case.code, case.paths)
    if case.status in (400, 404) and case.paths is None:
        assert "errors" not in body, body
    assert await snapshot(world.db) == before
    assert {
        n: await order_version(world.db, world.brand_ids["acme"], n) for n in versions
    } == versions
