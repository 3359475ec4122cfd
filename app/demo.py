"""`whereabouts demo`: a fresh SQLite database with one brand whose orders show every case."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from app.api.keys import create_key
from app.api.models import CheckpointIn, OrderIn, SkuIn, SupplyIn
from app.brands import create_brand
from app.services import Services, utc_now
from app.settings import SETTINGS, Settings
from app.storage import catalog, parcels
from app.storage import orders as store
from app.storage.database import Database
from app.storage.migrate import migrate
from app.storage.schema import webhook_endpoints
from app.web.devhooks import PATH as DEV_WEBHOOKS
from messaging.simulate import DEMO_AUTH_TOKEN
from messaging.webhooks import WEBHOOK_TYPES, new_secret

M = TypeVar("M", bound=BaseModel)
DEMO_DATABASE = "sqlite:///var/demo.db"


def _customer(n: int) -> dict[str, Any]:
    return {
        "id": f"demo-{n}",
        "email": f"shopper{n}@example.com",
        "phone": f"+1415555{n:04d}",
        "locale": "en-US",
        "timezone": "America/Los_Angeles",
        "sms_consent": True,
    }


def _line(ref: str, sku: str, title: str, qty: int, price: int, **extra: Any) -> dict[str, Any]:
    return {"ref": ref, "sku": sku, "title": title, "quantity": qty, "unit_price": price, **extra}


def _waiting(kind: str, **extra: Any) -> dict[str, Any]:
    return {"status": "backordered", "backorder_type": kind, **extra}


def demo_orders(today: dt.date) -> list[dict[str, Any]]:
    """Describe the demo's orders, dated around `today`."""

    def placed(days_ago: int) -> str:
        return f"{today - dt.timedelta(days=days_ago)}T16:30:00Z"

    def day(offset: int) -> str:
        return (today + dt.timedelta(days=offset)).isoformat()

    return [
        {
            "number": "D-1001",
            "placed_at": placed(6),
            "currency": "USD",
            "customer": _customer(1),
            "shipping": {"region": "US-CA", "city": "Oakland", "postal_code": "94607"},
            "lines": [
                _line("1", "MUG-BLUE", "Stoneware mug, blue", 2, 1800),
                _line("2", "TEE-ORG-M", "Organic tee, size M", 1, 3200),
                _line("3", "LAMP-OAK", "Oak desk lamp", 1, 12900, **_waiting("standard")),
            ],
            "shipments": [
                {
                    "ref": "P1",
                    "carrier": "ups",
                    "tracking_number": "1Z999AA10123456784",
                    "status": "delivered",
                    "promised_date": day(-2),
                    "shipped_at": placed(5),
                    "delivered_at": placed(2),
                    "lines": [{"line": "1", "quantity": 2}],
                },
                {
                    "ref": "P2",
                    "carrier": "usps",
                    "tracking_number": "9400111899223856928499",
                    "status": "in_transit",
                    "promised_date": day(2),
                    "carrier_eta": day(1),
                    "shipped_at": placed(1),
                    "lines": [{"line": "2", "quantity": 1}],
                },
            ],
        },
        {
            "number": "D-1002",
            "placed_at": placed(3),
            "currency": "USD",
            "customer": _customer(2),
            "shipping": {"region": "US-NY", "city": "Brooklyn", "postal_code": "11201"},
            "lines": [
                _line("1", "CONSOLE-X", "Handheld console X", 1, 29900, **_waiting("preorder"))
            ],
        },
        {
            "number": "D-1003",
            "placed_at": placed(2),
            "currency": "USD",
            "customer": _customer(3),
            "shipping": {"region": "US-TX", "city": "Austin", "postal_code": "78701"},
            "lines": [
                _line(
                    "1", "SOFA-CUSTOM", "Linen sofa, made to order", 1, 189900, **_waiting("custom")
                )
            ],
        },
        {
            "number": "D-1004",
            "placed_at": placed(4),
            "currency": "USD",
            "customer": _customer(4),
            "shipping": {"region": "US-WA", "city": "Seattle", "postal_code": "98101"},
            "lines": [
                _line(
                    "1",
                    "KAYAK-2",
                    "Touring kayak",
                    1,
                    99900,
                    **_waiting("dropship", vendor_date=day(9)),
                )
            ],
        },
        {
            "number": "D-1005",
            "placed_at": placed(10),
            "currency": "USD",
            "customer": _customer(5),
            "shipping": {"region": "US-IL", "city": "Chicago", "postal_code": "60601"},
            "lines": [
                _line("1", "MUG-BLUE", "Stoneware mug, blue", 1, 1800),
                _line(
                    "2", "ESPRESSO-PRO", "Espresso machine", 1, 64900, **_waiting("manufacturer")
                ),
            ],
        },
        {
            "number": "D-1006",
            "placed_at": placed(8),
            "currency": "USD",
            "customer": _customer(6),
            "shipping": {"region": "US-CO", "city": "Denver", "postal_code": "80202"},
            "lines": [_line("1", "SKI-WAX", "Ski wax kit", 3, 1500, **_waiting("seasonal"))],
        },
        {
            "number": "D-1007",
            "placed_at": placed(12),
            "currency": "USD",
            "customer": _customer(7),
            "shipping": {"region": "US-MA", "city": "Boston", "postal_code": "02108"},
            "lines": [
                _line(
                    "1", "VINYL-RARE", "Reissue vinyl box set", 1, 15900, **_waiting("indefinite")
                )
            ],
        },
        {
            "number": "D-1008",
            "placed_at": placed(7),
            "currency": "USD",
            "customer": _customer(8),
            "shipping": {"region": "US-FL", "city": "Miami", "postal_code": "33101"},
            "lines": [_line("1", "TEE-ORG-M", "Organic tee, size M", 2, 3200)],
            "shipments": [
                {
                    "ref": "P1",
                    "carrier": "fedex",
                    "tracking_number": "449044304137821",
                    "status": "in_transit",
                    "promised_date": day(-1),
                    "carrier_eta": day(2),
                    "shipped_at": placed(5),
                    "lines": [{"line": "1", "quantity": 2}],
                }
            ],
        },
        {
            "number": "D-1009",
            "placed_at": placed(14),
            "currency": "USD",
            "customer": _customer(9),
            "shipping": {"region": "US-OR", "city": "Portland", "postal_code": "97201"},
            "lines": [_line("1", "MUG-BLUE", "Stoneware mug, blue", 4, 1800)],
            "shipments": [
                {
                    "ref": "P1",
                    "carrier": "ups",
                    "tracking_number": "1Z999AA10123456799",
                    "status": "delivered",
                    "promised_date": day(-9),
                    "shipped_at": placed(13),
                    "delivered_at": placed(10),
                    "lines": [{"line": "1", "quantity": 4}],
                }
            ],
        },
        {
            # The carrier stopped scanning it (a scan 5 days ago, load_demo adds it): the worker's
            # first sweep tells the shopper it is late (app.storage.late_parcels).
            "number": "D-1010",
            "placed_at": placed(8),
            "currency": "USD",
            "customer": _customer(10),
            "shipping": {"region": "US-WA", "city": "Seattle", "postal_code": "98101"},
            "lines": [_line("1", "MUG-BLUE", "Stoneware mug, blue", 1, 1800)],
            "shipments": [
                {
                    "ref": "P1",
                    "carrier": "usps",
                    "tracking_number": "9400111899223856920010",
                    "status": "in_transit",
                    "promised_date": day(2),
                    "shipped_at": placed(7),
                    "lines": [{"line": "1", "quantity": 1}],
                }
            ],
        },
    ]


def demo_stock(today: dt.date) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Describe the demo's SKUs and their inbound supply."""

    def day(offset: int) -> str:
        return (today + dt.timedelta(days=offset)).isoformat()

    return {
        "MUG-BLUE": ({"title": "Stoneware mug, blue", "on_hand": 40}, []),
        "TEE-ORG-M": ({"title": "Organic tee, size M", "on_hand": 12}, []),
        "LAMP-OAK": (
            {"title": "Oak desk lamp", "on_hand": 0},
            [{"ref": "PO-7731", "quantity": 20, "expected_date": day(12), "confidence": 0.9}],
        ),
        "CONSOLE-X": (
            {"title": "Handheld console X", "on_hand": 0, "release_date": day(20)},
            [{"ref": "PO-5001", "quantity": 50, "expected_date": day(15)}],
        ),
        "SOFA-CUSTOM": (
            {"title": "Linen sofa, made to order", "on_hand": 0, "production_lead_days": 28},
            [],
        ),
        "KAYAK-2": (
            {"title": "Touring kayak", "on_hand": 0},
            [{"ref": "VENDOR-88", "kind": "vendor", "quantity": 5, "expected_date": day(9)}],
        ),
        "ESPRESSO-PRO": (
            {
                "title": "Espresso machine",
                "on_hand": 0,
                "alternatives": [
                    {
                        "sku": "ESPRESSO-LITE",
                        "title": "Compact espresso machine",
                        "unit_price": 44900,
                    },
                    {"sku": "MOKA-POT-6", "title": "Stovetop moka pot, 6 cups", "unit_price": 5900},
                ],
            },
            [{"ref": "PO-9120", "quantity": 10, "expected_date": day(26), "confidence": 0.5}],
        ),
        "SKI-WAX": (
            {"title": "Ski wax kit", "on_hand": 0, "season_start": day(15)},
            [{"ref": "PO-6100", "quantity": 30, "expected_date": day(6)}],
        ),
        "VINYL-RARE": ({"title": "Reissue vinyl box set", "on_hand": 0}, []),
    }


@dataclasses.dataclass(frozen=True)
class DemoLoaded:
    api_key: str
    tracking_urls: dict[str, str]


async def load_demo(settings: Settings, now: dt.datetime) -> DemoLoaded:
    """Migrate a fresh database and fill it with the demo brand."""
    db = Database(settings.database_url)
    try:
        await migrate(db)
        services = Services(settings=settings, db=db, clock=utc_now)
        async with db.write() as conn:
            brand_id = await create_brand(
                conn,
                "demo",
                "Northwind Home",
                now,
                timezone="America/Los_Angeles",
                support_email="help@northwind.example",
                support_url="https://northwind.example/help",
                # The demo shows each message at once, whatever the hour.
                coalesce_minutes=0,
                quiet_hours_start="00:00",
                quiet_hours_end="00:00",
            )
            key = await create_key(conn, brand_id, "demo", now)
            # The brand's systems, played by the dev receiver: every webhook, signed.
            await conn.execute(
                webhook_endpoints.insert().values(
                    brand_id=brand_id,
                    url=settings.public_url + DEV_WEBHOOKS,
                    description="demo receiver",
                    events=list(WEBHOOK_TYPES),
                    secret=new_secret(),
                    created_at=now,
                    updated_at=now,
                )
            )
            for sku, (attributes, supplies) in demo_stock(now.date()).items():
                await catalog.put_sku(conn, brand_id, sku, _parse(SkuIn, attributes), now)
                for supply in supplies:
                    await catalog.add_supply(conn, brand_id, sku, _parse(SupplyIn, supply), now)
            payloads = [_parse(OrderIn, o) for o in demo_orders(now.date())]
            results = await store.upsert(conn, brand_id, payloads, now, lambda i: f"orders[{i}].")
            scans = [
                ("D-1001", 5, "Departed regional facility", "Sacramento", "CA"),
                ("D-1010", 5 * 24, "Arrived at regional facility", "Denver", "CO"),
            ]
            for number, hours_ago, description, city, region in scans:
                await parcels.add_checkpoint(
                    conn,
                    brand_id,
                    number,
                    "P2" if number == "D-1001" else "P1",
                    _parse(
                        CheckpointIn,
                        {
                            "occurred_at": (now - dt.timedelta(hours=hours_ago)).isoformat(),
                            "status": "in_transit",
                            "description": description,
                            "city": city,
                            "region": region,
                            "country": "US",
                        },
                    ),
                    now,
                )
        urls = {r.number: services.tracking_url(r.token) for r in results}
        return DemoLoaded(key.secret, urls)
    finally:
        await db.close()


def _parse(model: type[M], value: dict[str, Any]) -> M:
    # Through JSON, exactly as the API would receive it.
    return model.model_validate_json(json.dumps(value))


def _explicit(provider: str, credential: str) -> str:
    return "dev" if provider == "auto" and not credential else provider


def run_demo(settings: Settings) -> Settings:
    """Load the demo into a fresh database, print how to reach it, and return its settings."""
    default_url = next(s.default for s in SETTINGS if s.name == "DATABASE_URL")
    if settings.database_url == default_url:
        settings = dataclasses.replace(settings, database_url=DEMO_DATABASE)
    if not settings.database_url.startswith("sqlite:///"):
        raise SystemExit("the demo builds a fresh SQLite database; unset DATABASE_URL")
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    # The demo sends its messages from the web process, to the dev inbox unless configured
    # (saying `dev` outright: here it is meant, not a server that lost its keys), and serves
    # the inbox. Its brand's webhook endpoint is the dev receiver on this very server, a
    # loopback address. Replies simulated with `make reply` are signed with the demo's
    # well-known token.
    settings = dataclasses.replace(
        settings,
        run_worker=True,
        dev_inbox=True,
        webhook_allow_private=True,
        email_provider=_explicit(settings.email_provider, settings.sendgrid_api_key),
        sms_provider=_explicit(settings.sms_provider, settings.twilio_account_sid),
        twilio_auth_token=settings.twilio_auth_token or DEMO_AUTH_TOKEN,
    )
    loaded = asyncio.run(load_demo(settings, utc_now()))
    print("Whereabouts demo: brand 'demo' (Northwind Home)")
    print(f"  API key: {loaded.api_key}")
    print(f"  API:     {settings.public_url}/api/v1/openapi.json")
    print(f"  Dev inbox: {settings.public_url}/dev/inbox")
    print(f"  Webhooks the brand received: {settings.public_url}{DEV_WEBHOOKS}.json")
    print("  Tracking pages:")
    for number, url in loaded.tracking_urls.items():
        print(f"    {number}  {url}")
    return settings
