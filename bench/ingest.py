"""Ingest benchmark: load orders through `POST /api/v1/orders/batch` on SQLite and PostgreSQL.

    python bench/ingest.py [--orders 100000] [--backend sqlite|postgresql|both] [--concurrency 1,2]

The orders are generated from a seed (1-4 lines, repeat customers, backorders of every type,
parcels split with partial quantities) and encoded as 1,000-order batch bodies before any
clock starts. For each backend and concurrency: a fresh database, `whereabouts brand create`
and `apikey create`, a real `whereabouts serve` subprocess, the batches posted with httpx
(wall time from the first request to the last response), then checks that everything landed:
sample orders read back with GET, a few batches re-posted (they must all be "unchanged"), and
the rows counted in the database.

Ceilings from the same run, so a reader sees what the database costs: the same bodies validated
in-process with the API's own `OrderBatchIn`, and posted to a bare Starlette endpoint under the
same uvicorn that only parses the JSON and answers a result list of the same shape.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import os
import random
import resource
import signal
import sqlite3
import sys
import tempfile
import time
import zoneinfo
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import phonenumbers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

if __package__ in (None, ""):  # run as a script (`make bench`): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.api.models import OrderBatchIn
from bench.common import (
    ROOT,
    BenchError,
    Profiler,
    Server,
    ServerGone,
    code_revision,
    cpu_seconds,
    cpu_seconds_of,
    executable,
    free_port,
    machine,
    machine_cpu_seconds,
    peak_rss_mib,
    percentile,
    postgres_version,
    run_command,
    throwaway_postgres,
    wait_until_quiet,
)

BATCH_PATH = "/api/v1/orders/batch"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUEST_TIMEOUT = 120.0  # one 1,000-order batch; far above any healthy answer
RETRIES = 8  # a 409 says "retry", a 500 "nothing was changed": a client tries again, then gives up
BACKOFF = 0.05  # seconds before the first retry, doubling each time (about 13 s in all)
REPOST_BATCHES = 3  # batches sent a second time to check that an unchanged order stays put
PACKAGES = ("starlette", "uvicorn", "h11", "sqlalchemy", "aiosqlite", "asyncpg", "pydantic")

# Data ----------------------------------------------------------------------------------------

# (code, noun, price range in cents, sizes)
CATEGORIES: tuple[tuple[str, str, tuple[int, int], tuple[str, ...]], ...] = (
    ("TEE", "tee", (1800, 4500), ("XS", "S", "M", "L", "XL", "XXL")),
    ("HOOD", "hoodie", (4800, 9800), ("S", "M", "L", "XL")),
    ("SOCK", "socks", (900, 1800), ("S", "M", "L")),
    ("CAP", "cap", (2200, 3800), ("OS",)),
    ("MUG", "mug", (1400, 3200), ("12OZ", "16OZ")),
    ("LAMP", "lamp", (5900, 24900), ("OS",)),
    ("TOTE", "tote bag", (2400, 8900), ("OS",)),
    ("JKT", "jacket", (9800, 29800), ("S", "M", "L", "XL")),
    ("BTL", "bottle", (1900, 4200), ("500ML", "750ML")),
    ("PLNT", "planter", (2900, 7900), ("S", "M", "L")),
    ("CNDL", "candle", (1600, 4800), ("OS",)),
    ("BLKT", "blanket", (6900, 18900), ("OS",)),
)
STYLES = (
    "Harbor", "Summit", "Canyon", "Meadow", "Drift", "Ember", "Juniper", "Alder", "Cove", "Ridge",
    "Willow", "Dune", "Fjord", "Maple", "Cedar", "Aspen", "Coral", "Slate", "Birch", "Tidal",
)  # fmt: skip
COLORS = (
    ("BLK", "black"), ("WHT", "white"), ("NVY", "navy"), ("OLV", "olive"), ("SND", "sand"),
    ("RST", "rust"), ("SKY", "sky blue"), ("CHR", "charcoal"), ("FOR", "forest"), ("BLU", "blue"),
)  # fmt: skip
FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Ken",
    "Radia", "Tim", "Sophie", "Linus", "Katherine", "Dennis", "Hedy", "Guido", "Shafi", "Leslie",
    "María", "José", "Chloé", "Zoë", "Mei", "Arjun", "Amara", "Kofi", "Noah", "Olivia",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "McCarthy",
    "Hamilton", "Thompson", "Perlman", "Berners-Lee", "Wilson", "Torvalds", "Johnson", "Ritchie",
    "Lamarr", "van Rossum", "Goldwasser", "Lamport", "García", "Núñez", "Dubois", "Chen", "Patel",
    "Okafor", "Mensah", "Smith", "O'Brien", "Nakamura",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
# (locale, timezone, currency, area codes, shipping destinations (region, city, postal code))
MARKETS: tuple[tuple[str, str, str, tuple[int, ...], tuple[tuple[str, str, str], ...]], ...] = (
    ("en-US", "America/Los_Angeles", "USD", (415, 510, 206, 503), (
        ("US-CA", "Oakland", "94607"), ("US-CA", "San Francisco", "94110"),
        ("US-WA", "Seattle", "98122"), ("US-OR", "Portland", "97214"),
    )),
    ("en-US", "America/New_York", "USD", (212, 646, 617, 305), (
        ("US-NY", "Brooklyn", "11215"), ("US-NY", "New York", "10027"),
        ("US-MA", "Boston", "02130"), ("US-FL", "Miami", "33133"),
    )),
    ("en-US", "America/Chicago", "USD", (312, 512, 214), (
        ("US-IL", "Chicago", "60614"), ("US-TX", "Austin", "78704"), ("US-TX", "Dallas", "75204"),
    )),
    ("es-US", "America/Denver", "USD", (303, 720), (("US-CO", "Denver", "80205"),)),
    ("en-CA", "America/Toronto", "CAD", (416, 647), (("CA-ON", "Toronto", "M5V 2T6"),)),
    ("fr-CA", "America/Toronto", "CAD", (514, 438), (("CA-QC", "Montréal", "H2X 1Y4"),)),
)  # fmt: skip
MARKET_WEIGHTS = (30, 30, 20, 8, 6, 6)
BACKORDER_TYPES = (
    ("standard", 40), ("preorder", 15), ("custom", 8), ("dropship", 15),
    ("manufacturer", 10), ("seasonal", 7), ("indefinite", 5),
)  # fmt: skip
CARRIERS = (
    ("ups", 35, ("ground", "2nd day air", "next day air"), "https://www.ups.com/track?tracknum="),
    ("usps", 35, ("ground advantage", "priority mail"), "https://tools.usps.com/go/TrackConfirmAction?tLabels="),
    ("fedex", 20, ("ground", "2day", "overnight"), "https://www.fedex.com/fedextrack/?trknbr="),
    ("dhl", 10, ("express",), "https://www.dhl.com/us-en/home/tracking.html?tracking-id="),
)  # fmt: skip
LINE_COUNTS = ((1, 20), (2, 30), (3, 30), (4, 20))  # mean 2.5
QUANTITIES = ((1, 75), (2, 17), (3, 6), (4, 2))
PARCEL_COUNTS = ((0, 17), (1, 42), (2, 28), (3, 13))  # about 1.2 once small orders are capped
EPOCH = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
SPAN = dt.timedelta(days=90)
AS_OF = EPOCH + SPAN + dt.timedelta(days=2)  # "today" for the parcels' progress


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    price: int
    image_url: str | None


@dataclass
class Totals:
    orders: int = 0
    lines: int = 0
    units: int = 0
    shipments: int = 0
    shipment_lines: int = 0
    customers: int = 0
    repeat_orders: int = 0
    partial_lines: int = 0
    line_statuses: Counter[str] = field(default_factory=Counter)
    backorder_types: Counter[str] = field(default_factory=Counter)
    parcels_per_order: Counter[int] = field(default_factory=Counter)


@dataclass
class Dataset:
    bodies: list[bytes]
    batch_sizes: list[int]
    totals: Totals
    samples: list[dict[str, Any]]
    skus: int
    seconds: float

    @property
    def megabytes(self) -> float:
        return sum(len(b) for b in self.bodies) / 1e6


def _weighted(rng: random.Random, table: Sequence[tuple[Any, ...]]) -> Any:
    return rng.choices([row[0] for row in table], weights=[row[1] for row in table])[0]


def make_catalog(rng: random.Random) -> list[Product]:
    """Build a few thousand SKUs: category x style families in some colours and every size."""
    products: list[Product] = []
    for code, noun, (low, high), sizes in CATEGORIES:
        for style in STYLES:
            price = rng.randrange(low, high, 100) - 1  # prices end in 99 cents
            for color_code, color in rng.sample(COLORS, rng.randint(2, 6)):
                for size in sizes:
                    sku = f"{code}-{style[:3].upper()}-{color_code}-{size}"
                    title = f"{style} {noun}, {color}" + ("" if size == "OS" else f", {size}")
                    image = None
                    if rng.random() < 0.8:
                        image = f"https://cdn.example.com/products/{sku.lower()}.jpg"
                    products.append(Product(sku, title, price, image))
    rng.shuffle(products)  # popularity rank follows this order
    return products


class Customers:
    """Customers with unique ids, emails and valid E.164 phones; about a third of orders repeat."""

    def __init__(self, rng: random.Random, repeat_share: float = 0.3) -> None:
        self.rng = rng
        self.repeat_share = repeat_share
        self.known: list[tuple[dict[str, Any], int]] = []
        self.phones: set[str] = set()

    def _phone(self, area_codes: Sequence[int]) -> str:
        while True:
            number = f"+1{self.rng.choice(area_codes)}{self.rng.randint(200, 999)}"
            number += f"{self.rng.randint(0, 9999):04d}"
            if number in self.phones:
                continue
            if phonenumbers.is_valid_number(phonenumbers.parse(number, None)):
                self.phones.add(number)
                return number

    def pick(self) -> tuple[dict[str, Any], int, bool]:
        """Return (customer payload, market index, is a repeat customer)."""
        rng = self.rng
        if self.known and rng.random() < self.repeat_share:
            known, market = self.known[rng.randrange(len(self.known))]
            return known, market, True
        serial = len(self.known) + 1
        market = rng.choices(range(len(MARKETS)), weights=MARKET_WEIGHTS)[0]
        locale, timezone, _, area_codes, _ = MARKETS[market]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
        customer: dict[str, Any] = {
            "email": f"{local}.{serial}@{rng.choice(EMAIL_DOMAINS)}",
            "name": f"{first} {last}",
        }
        if rng.random() < 0.85:  # the rest check out as guests
            customer["id"] = f"C{serial:07d}"
        if rng.random() < 0.75:
            customer["phone"] = self._phone(area_codes)
            customer["sms_consent"] = rng.random() < 0.6
        if rng.random() < 0.85:
            customer["locale"] = locale
            customer["timezone"] = timezone
        if rng.random() < 0.1:
            customer["email_consent"] = False
        self.known.append((customer, market))
        return customer, market, False


def _tracking_number(rng: random.Random, carrier: str) -> str:
    digits = "0123456789"
    if carrier == "ups":
        alnum = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
        return "1Z" + "".join(rng.choices(alnum, k=6)) + "".join(rng.choices(digits, k=10))
    if carrier == "usps":
        return "9400" + "".join(rng.choices(digits, k=18))
    if carrier == "fedex":
        return "".join(rng.choices(digits, k=12))
    return "".join(rng.choices(digits, k=10))


def _parcel(
    rng: random.Random, ref: str, placed: dt.datetime, contents: Counter[str]
) -> dict[str, Any]:
    carrier, _, services, track_url = rng.choices(CARRIERS, weights=[c[1] for c in CARRIERS])[0]
    number = _tracking_number(rng, carrier)
    age = AS_OF - placed
    promised = (placed + dt.timedelta(days=7)).date()
    shipped = placed + dt.timedelta(hours=rng.randint(6, 72))
    parcel: dict[str, Any] = {"ref": ref, "carrier": carrier, "tracking_number": number}
    if rng.random() < 0.7:
        parcel["service"] = rng.choice(services)
    if rng.random() < 0.6:
        parcel["tracking_url"] = track_url + number
    if age < dt.timedelta(days=1):
        status = "label_created"
    elif age < dt.timedelta(days=6):
        status = rng.choices(("in_transit", "out_for_delivery", "delivered"), (60, 10, 30))[0]
    else:
        status = rng.choices(
            ("delivered", "in_transit", "exception", "returned", "lost"), (94, 2, 2, 1.5, 0.5)
        )[0]
    parcel["status"] = status
    parcel["promised_date"] = promised.isoformat()
    if status != "label_created":
        parcel["shipped_at"] = shipped.isoformat().replace("+00:00", "Z")
        if rng.random() < 0.7:
            eta = promised + dt.timedelta(days=rng.choice((-1, 0, 0, 0, 1, 2, 3)))
            parcel["carrier_eta"] = eta.isoformat()
    if status == "delivered":
        delivered = shipped + dt.timedelta(hours=rng.randint(30, 140))
        parcel["delivered_at"] = delivered.isoformat().replace("+00:00", "Z")
    parcel["lines"] = [{"line": key, "quantity": qty} for key, qty in contents.items()]
    return parcel


def expected_statuses(order: dict[str, Any]) -> dict[str, str]:
    """Work out each line's stored status the way the README describes it."""
    shipped: Counter[str] = Counter()
    delivered: dict[str, bool] = {}
    for parcel in order.get("shipments", []):
        for item in parcel["lines"]:
            shipped[item["line"]] += item["quantity"]
            delivered[item["line"]] = delivered.get(item["line"], True) and (
                parcel["status"] == "delivered"
            )
    statuses = {}
    for line in order["lines"]:
        key = line.get("ref", line["sku"])
        requested = line.get("status", "in_stock")
        if requested not in {"cancelled", "substituted"} and shipped[key] >= line["quantity"]:
            requested = "delivered" if delivered[key] else "shipped"
        statuses[key] = requested
    return statuses


def make_order(
    rng: random.Random,
    index: int,
    count: int,
    catalog: Sequence[Product],
    popularity: Sequence[float],
    customers: Customers,
    totals: Totals,
) -> dict[str, Any]:
    """Build order number `index` of `count` and add it to the totals."""
    customer, market, repeat = customers.pick()
    _, timezone, currency, _, destinations = MARKETS[market]
    placed = EPOCH + SPAN * (index / count) + dt.timedelta(seconds=rng.randint(0, 600))
    local_placed = placed.astimezone(zoneinfo.ZoneInfo(timezone))
    region, city, postal = rng.choice(destinations)
    order: dict[str, Any] = {
        "number": f"WB-{1_000_000 + index}",
        "placed_at": local_placed.isoformat(timespec="seconds"),
        "currency": currency,
        "customer": customer,
        "shipping": {"region": region, "city": city, "postal_code": postal},
        "lines": [],
        "shipments": [],
    }
    with_refs = rng.random() < 0.7  # the rest let the SKU name the line
    picked: list[Product] = []
    wanted = _weighted(rng, LINE_COUNTS)
    while len(picked) < wanted:
        rank = bisect.bisect_left(popularity, rng.random() * popularity[-1])
        product = catalog[min(rank, len(catalog) - 1)]
        if product not in picked:
            picked.append(product)
    units: list[str] = []
    for position, product in enumerate(picked, start=1):
        line: dict[str, Any] = {
            "sku": product.sku,
            "title": product.title,
            "quantity": _weighted(rng, QUANTITIES),
            "unit_price": product.price,
        }
        if with_refs:
            line["ref"] = str(position)
        if product.image_url:
            line["image_url"] = product.image_url
        roll = rng.random()
        status = "in_stock"
        if roll < 0.09:
            status = line["status"] = "backordered"
            kind = _weighted(rng, BACKORDER_TYPES)
            if rng.random() < 0.85:  # the rest leave it to the default (standard)
                line["backorder_type"] = kind
            else:
                kind = "standard"
            totals.backorder_types[kind] += 1
            if kind == "dropship":
                promised = placed + dt.timedelta(days=rng.randint(10, 40))
                line["vendor_date"] = promised.date().isoformat()
        elif roll < 0.105:
            status = line["status"] = "cancelled"
        elif roll < 0.115:
            status = line["status"] = "substituted"
        elif rng.random() < 0.2:
            line["status"] = "in_stock"  # some brands say so explicitly
        if status == "in_stock":
            units += [line.get("ref", product.sku)] * line["quantity"]
        order["lines"].append(line)

    parcels = min(_weighted(rng, PARCEL_COUNTS), len(units))
    if parcels:
        rng.shuffle(units)
        if len(units) > parcels and rng.random() < 0.15:
            units.pop()  # one unit still waits in the warehouse
        contents: list[Counter[str]] = [Counter() for _ in range(parcels)]
        for position, key in enumerate(units):
            contents[position if position < parcels else rng.randrange(parcels)][key] += 1
        order["shipments"] = [
            _parcel(rng, f"P{n}", placed, box) for n, box in enumerate(contents, start=1)
        ]

    shipped: Counter[str] = Counter()
    for parcel in order["shipments"]:
        for item in parcel["lines"]:
            shipped[item["line"]] += item["quantity"]
    for line in order["lines"]:
        key = line.get("ref", line["sku"])
        if 0 < shipped[key] < line["quantity"]:
            totals.partial_lines += 1
    totals.orders += 1
    totals.repeat_orders += repeat
    totals.lines += len(order["lines"])
    totals.units += sum(line["quantity"] for line in order["lines"])
    totals.shipments += len(order["shipments"])
    totals.shipment_lines += sum(len(p["lines"]) for p in order["shipments"])
    totals.parcels_per_order[len(order["shipments"])] += 1
    totals.line_statuses.update(expected_statuses(order).values())
    if not order["shipments"] and rng.random() < 0.5:
        del order["shipments"]  # many brands leave an empty list out
    return order


def make_dataset(orders: int, batch_size: int, seed: int) -> Dataset:
    """Generate `orders` orders and encode them as batch bodies."""
    started = time.perf_counter()
    rng = random.Random(seed)
    catalog = make_catalog(rng)
    popularity = list(itertools.accumulate(1 / (rank + 1) ** 0.9 for rank in range(len(catalog))))
    customers = Customers(rng)
    totals = Totals()
    bodies: list[bytes] = []
    sizes: list[int] = []
    samples: list[dict[str, Any]] = []
    features: set[str] = set()
    chunk: list[dict[str, Any]] = []
    for index in range(orders):
        order = make_order(rng, index, orders, catalog, popularity, customers, totals)
        for feature in _features(order, index, orders):
            if feature not in features:
                features.add(feature)
                samples.append(order)
                break
        chunk.append(order)
        if len(chunk) == batch_size or index == orders - 1:
            bodies.append(json.dumps({"orders": chunk}, separators=(",", ":")).encode())
            sizes.append(len(chunk))
            chunk = []
    totals.customers = len(customers.known)
    return Dataset(bodies, sizes, totals, samples, len(catalog), time.perf_counter() - started)


def _features(order: dict[str, Any], index: int, count: int) -> Iterator[str]:
    """Name what makes an order worth reading back (the first order of each kind is)."""
    if index in (0, count // 2, count - 1):
        yield f"order {index}"
    parcels = order.get("shipments", [])
    if len(parcels) == 3:
        yield "three parcels"
    quantities = {_line_key(line): line["quantity"] for line in order["lines"]}
    if any(item["quantity"] < quantities[item["line"]] for p in parcels for item in p["lines"]):
        yield "partial quantity"
    if any(line.get("backorder_type") == "dropship" for line in order["lines"]):
        yield "dropship backorder"
    if "ref" not in order["lines"][0] and parcels:
        yield "lines named by SKU"
    if not parcels:
        yield "no parcels"


# The ceiling: the same HTTP stack without the application ------------------------------------


def ceiling_app() -> Starlette:
    """Build a bare Starlette app that parses a batch body and answers results of the same shape.

    Served by the same uvicorn as the service, it is what the API costs without validation,
    storage and database: `python -m uvicorn bench.ingest:ceiling_app --factory`.
    """

    async def batch(request: Request) -> Response:
        orders = json.loads(await request.body())["orders"]
        results = [
            {
                "number": order["number"],
                "result": "created",
                "version": 1,
                "tracking_url": "http://127.0.0.1:8000/t/" + "x" * 32,
            }
            for order in orders
        ]
        return Response(json.dumps({"results": results}), media_type="application/json")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(routes=[Route(BATCH_PATH, batch, methods=["POST"]), Route("/healthz", health)])


# Loading -------------------------------------------------------------------------------------


@dataclass
class Load:
    seconds: float
    latencies: list[float]
    outcomes: Counter[str]
    retries: Counter[int]  # by status: 409 asks for a retry, 500 says nothing was changed
    answers: Counter[str]  # each distinct error answer, to report what went wrong
    client_cpu: float
    machine_cpu: float


async def post_batches(
    base_url: str, key: str | None, bodies: Sequence[bytes], concurrency: int, deadline: float
) -> Load:
    """Post every body with `concurrency` requests in flight; time first request to last answer.

    Like a careful client, retry a batch answered 409 (a conflict with a concurrent writer) or 5xx
    (nothing was changed) a few times, and count those retries.
    """
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    latencies = [0.0] * len(bodies)
    outcomes: Counter[str] = Counter()
    retries: Counter[int] = Counter()
    answers: Counter[str] = Counter()
    todo = iter(range(len(bodies)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT, limits=limits
    ) as client:

        async def worker() -> None:
            for index in todo:
                for attempt in range(1, RETRIES + 2):
                    if time.monotonic() > deadline:
                        raise BenchError("out of time (see --max-seconds)")
                    started = time.perf_counter()
                    try:
                        response = await client.post(BATCH_PATH, content=bodies[index])
                    except httpx.TransportError as exc:
                        raise ServerGone(
                            f"batch {index}: {type(exc).__name__} after "
                            f"{time.perf_counter() - started:.1f} s: {exc}"
                        ) from None
                    latencies[index] = time.perf_counter() - started
                    if response.status_code == 200:
                        break
                    answers[f"HTTP {response.status_code}: {response.text[:300]}"] += 1
                    if response.status_code != 409 and response.status_code < 500:
                        break
                    if attempt <= RETRIES:
                        retries[response.status_code] += 1
                        # Back off so the concurrent writer it collided with can commit.
                        await asyncio.sleep(BACKOFF * 2 ** (attempt - 1))
                if response.status_code != 200:
                    raise BenchError(
                        f"batch {index}: HTTP {response.status_code}: {response.text[:1000]}"
                    )
                outcomes.update(r["result"] for r in response.json()["results"])

        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        machine_before = machine_cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        machine = machine_cpu_seconds() - machine_before
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    return Load(seconds, latencies, outcomes, retries, answers, client_cpu, machine)


def validate_in_process(bodies: Sequence[bytes]) -> float:
    """Validate every body with the API's own model; return the seconds it took."""
    started = time.perf_counter()
    for body in bodies:
        OrderBatchIn.model_validate_json(body)
    return time.perf_counter() - started


# Checking ------------------------------------------------------------------------------------


def _line_key(line: dict[str, Any]) -> str:
    return str(line.get("ref", line["sku"]))


def check_order(sent: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Compare an order as sent with the API's view of it; return the differences."""
    problems = []
    statuses = expected_statuses(sent)
    got_lines = {line["ref"]: line for line in got["lines"]}
    if list(got_lines) != [_line_key(line) for line in sent["lines"]]:
        problems.append(f"lines {list(got_lines)} != {[_line_key(x) for x in sent['lines']]}")
    for line in sent["lines"]:
        stored = got_lines.get(_line_key(line))
        if stored is None:
            continue
        wanted_type = line.get("backorder_type")
        if line.get("status") == "backordered" and wanted_type is None:
            wanted_type = "standard"
        for name, want, have in (
            ("quantity", line["quantity"], stored["quantity"]),
            ("status", statuses[_line_key(line)], stored["status"]),
            ("backorder_type", wanted_type, stored["backorder_type"]),
            ("vendor_date", line.get("vendor_date"), stored["vendor_date"]),
        ):
            if want != have:
                problems.append(f"line {_line_key(line)} {name}: sent {want!r}, got {have!r}")
    got_parcels = {
        p["ref"]: {item["line"]: item["quantity"] for item in p["lines"]} for p in got["shipments"]
    }
    sent_parcels = {
        p["ref"]: {item["line"]: item["quantity"] for item in p["lines"]}
        for p in sent.get("shipments", [])
    }
    if got_parcels != sent_parcels:
        problems.append(f"parcels {got_parcels} != {sent_parcels}")
    if got["customer"] is None or got["customer"]["email"] != sent["customer"]["email"]:
        problems.append(f"customer {got['customer']} != {sent['customer']}")
    return problems


async def read_back(
    base_url: str, key: str, samples: Sequence[dict[str, Any]]
) -> tuple[list[str], float]:
    """GET each sample order and compare; return the differences and the mean latency."""
    problems: list[str] = []
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT
    ) as client:
        for order in samples:
            response = await client.get(f"/api/v1/orders/{order['number']}")
            if response.status_code != 200:
                problems.append(f"GET {order['number']}: HTTP {response.status_code}")
                continue
            problems += [f"{order['number']}: {p}" for p in check_order(order, response.json())]
    return problems, (time.perf_counter() - started) / max(1, len(samples))


COUNTED = {
    "orders": "SELECT count(*) FROM orders",
    "order_lines": "SELECT count(*) FROM order_lines",
    "shipments": "SELECT count(*) FROM shipments",
    "shipment_lines": "SELECT count(*) FROM shipment_lines",
    "customers": "SELECT count(*) FROM customers",
    # Other events (ETAs, say) may follow an order's creation; this one is exactly one per order.
    "order_created events": "SELECT count(*) FROM events WHERE type = 'order_created'",
}


def expected_rows(totals: Totals) -> dict[str, int]:
    return {
        "orders": totals.orders,
        "order_lines": totals.lines,
        "shipments": totals.shipments,
        "shipment_lines": totals.shipment_lines,
        "customers": totals.customers,
        "order_created events": totals.orders,  # the re-posted batches add none
    }


async def count_rows(database_url: str) -> dict[str, int]:
    """Count the rows of the loaded tables, straight from the database."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return {name: conn.execute(sql).fetchone()[0] for name, sql in COUNTED.items()}
        finally:
            conn.close()
    pg = await asyncpg.connect(database_url)
    try:
        return {name: int(await pg.fetchval(sql)) for name, sql in COUNTED.items()}
    finally:
        await pg.close()


# Runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    backend: str
    concurrency: int
    orders: int
    lines: int
    shipments: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = float("nan")
    database_cpu: float = float("nan")
    client_cpu: float = float("nan")
    other_cpu: float = float("nan")  # what the rest of the machine used meanwhile
    peak_rss_mib: float = float("nan")
    retries: dict[int, int] = field(default_factory=dict)
    workers: int = 1
    code: str = ""  # the commit the server ran, in case the tree moved during the benchmark
    failure: str = ""

    @property
    def orders_per_second(self) -> float:
        return self.orders / self.seconds if not self.failure else float("nan")

    def trend(self) -> str:
        """Compare the first and last tenth of the batches: does a fuller database slow it?"""
        tenth = max(1, len(self.latencies) // 10)
        first = sum(self.latencies[:tenth]) / tenth * 1000
        last = sum(self.latencies[-tenth:]) / tenth * 1000
        return f"mean batch {first:.0f} ms in the first tenth of batches, {last:.0f} ms in the last"

    def row(self) -> list[str]:
        def cpu(value: float) -> str:
            return "-" if value != value else f"{value:.1f} s ({value / self.seconds:.0%})"

        head = [
            self.name,
            self.backend,
            str(self.workers) if self.name == "whereabouts" else "-",
            str(self.concurrency) if self.concurrency else "-",
        ]
        if self.failure:
            return [*head, "failed", *["-"] * (len(HEADER) - len(head) - 1)]
        latency = "-"
        if self.latencies:
            latency = (
                f"{percentile(self.latencies, 0.5) * 1000:.0f} / "
                f"{percentile(self.latencies, 0.95) * 1000:.0f} / "
                f"{max(self.latencies) * 1000:.0f}"
            )
        retried = ", ".join(f"{n} x {status}" for status, n in sorted(self.retries.items()))
        # PostgreSQL's share counts too; when it is unknown (NaN) so is the sum.
        work = self.server_cpu + (self.database_cpu if self.backend == "postgresql" else 0.0)
        return [
            *head,
            f"{self.seconds:.1f}",
            f"{self.orders_per_second:,.0f}",
            "-" if work != work else f"{self.orders / work:,.0f}",
            f"{self.lines / self.seconds:,.0f}",
            f"{self.shipments / self.seconds:,.0f}",
            latency,
            cpu(self.server_cpu),
            cpu(self.database_cpu),
            cpu(self.other_cpu),
            "-" if self.peak_rss_mib != self.peak_rss_mib else f"{self.peak_rss_mib:.0f}",
            retried or "0",
        ]


HEADER = [
    "run",
    "backend",
    "workers",
    "in flight",
    "wall s",
    "orders/s",
    "orders per CPU s (server + PostgreSQL)",
    "lines/s",
    "shipments/s",
    "batch ms p50 / p95 / max",
    "server CPU",
    "PostgreSQL CPU",
    "other CPU on the machine",
    "server peak RSS MiB",
    "retried batches",
]


def markdown_table(runs: Sequence[Run]) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(run.row() for run in runs)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def write_json(path: Path, described: dict[str, str], data: Dataset, runs: Sequence[Run]) -> None:
    """Keep the figures for later comparison (bench/results/ is ignored by git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": described,
        "code": code_revision(),
        "argv": sys.argv,
        "totals": {
            f.name: dict(v) if isinstance(v := getattr(data.totals, f.name), Counter) else v
            for f in dataclasses.fields(data.totals)
        },
        "runs": [{**dataclasses.asdict(r), "orders_per_second": r.orders_per_second} for r in runs],
    }
    path.write_text(json.dumps(document, indent=2, default=str))


def _log(message: str) -> None:
    print(message, flush=True)


def condensed_log(server: Server, lines: int = 5) -> str:
    """Summarise what the server logged: its most frequent lines, each cut short."""
    logged = Counter(
        line[:240]
        for line in server.log_tail(100_000).splitlines()
        if line.strip() and (not line.startswith("INFO") or "Shutting down" in line)
    )
    return "\n".join(f"    server log: {n} x {line}" for line, n in logged.most_common(lines))


async def load_service(
    backend: str,
    database_url: str,
    data: Dataset,
    concurrency: int,
    workdir: Path,
    deadline: float,
    *,
    workers: int = 1,
    profile_dir: Path | None = None,
) -> Run:
    """Load the dataset into a fresh database through a real `whereabouts serve`."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "info",  # no access log; shows a shutdown from outside in the log
        "WEB_CONCURRENCY": str(workers),
    }
    cli = executable("whereabouts")
    run_command([cli, "brand", "create", "bench", "Bench Outfitters"], env)
    key = run_command([cli, "apikey", "create", "bench", "--name", "bench"], env).split()[0]
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"serve-{backend}-{concurrency}.log"
    code = code_revision()
    with Server([cli, "serve"], env, base_url + "/healthz", log_path) as server:
        server_cpu = cpu_seconds(server.pid)
        database_cpu = cpu_seconds_of("postgres") if backend == "postgresql" else float("nan")
        try:
            with contextlib.ExitStack() as stack:
                if profile_dir is not None:
                    profile = profile_dir / f"py-spy-{backend}-{concurrency}.txt"
                    stack.enter_context(Profiler(server.pid, profile))
                    _log(f"    profiling the server into {profile}")
                load = await post_batches(base_url, key, data.bodies, concurrency, deadline)
        except BenchError as exc:
            raise BenchError(f"{exc}\n    {server.status()}\n{condensed_log(server)}") from None
        server_cpu = cpu_seconds(server.pid) - server_cpu
        other_cpu = max(0.0, load.machine_cpu - server_cpu - load.client_cpu)
        if backend == "postgresql":
            database_cpu = cpu_seconds_of("postgres") - database_cpu
            if database_cpu < 0:  # backends that exited took their CPU time with them
                database_cpu = float("nan")
            if database_cpu == database_cpu:
                other_cpu = max(0.0, other_cpu - database_cpu)
        rss = peak_rss_mib(server.pid)
        for answer, times in load.answers.most_common(3):
            _log(f"    answered {times} x {answer}")
        created = load.outcomes["created"]
        if created != data.totals.orders or sum(load.outcomes.values()) != created:
            raise BenchError(f"expected {data.totals.orders} created, got {dict(load.outcomes)}")

        problems, get_seconds = await read_back(base_url, key, data.samples)
        again = data.bodies[:REPOST_BATCHES]
        repost = await post_batches(base_url, key, again, 1, deadline)
        if set(repost.outcomes) != {"unchanged"}:
            problems.append(f"re-posted batches gave {dict(repost.outcomes)}, want all unchanged")
        if condensed_log(server):
            _log(condensed_log(server))
    counts = await count_rows(database_url)
    wanted = expected_rows(data.totals)
    if counts != wanted:
        problems.append(f"rows {counts} != expected {wanted}")
    size = ""
    if backend == "sqlite":
        path = Path(database_url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal")]
        size = f", file {sum(f.stat().st_size for f in files if f.exists()) / 1e6:.0f} MB"
    _log(
        f"    checked: {len(data.samples)} orders read back ({get_seconds * 1000:.0f} ms each), "
        f"{sum(repost.outcomes.values())} re-posted orders unchanged at "
        f"{sum(repost.outcomes.values()) / repost.seconds:,.0f}/s, rows {counts}{size}"
    )
    if problems:
        raise BenchError("the load did not check out:\n  " + "\n  ".join(problems))
    return Run(
        name="whereabouts",
        backend=backend,
        concurrency=concurrency,
        orders=data.totals.orders,
        lines=data.totals.lines,
        shipments=data.totals.shipments,
        seconds=load.seconds,
        latencies=load.latencies,
        server_cpu=server_cpu,
        database_cpu=database_cpu,
        client_cpu=load.client_cpu,
        other_cpu=other_cpu,
        peak_rss_mib=rss,
        retries=dict(load.retries),
        workers=workers,
        code=code,
    )


async def load_ceiling(data: Dataset, concurrency: int, workdir: Path, deadline: float) -> Run:
    """Post the dataset to the bare Starlette endpoint under the same uvicorn."""
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "bench.ingest:ceiling_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
        "--app-dir", str(ROOT),
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"ceiling-{concurrency}.log"
    with Server(argv, os.environ, base_url + "/healthz", log_path) as server:
        server_cpu = cpu_seconds(server.pid)
        load = await post_batches(base_url, None, data.bodies, concurrency, deadline)
        server_cpu = cpu_seconds(server.pid) - server_cpu
        rss = peak_rss_mib(server.pid)
    other_cpu = max(0.0, load.machine_cpu - server_cpu - load.client_cpu)
    return Run(
        name="ceiling: bare Starlette, json.loads",
        backend="-",
        concurrency=concurrency,
        orders=data.totals.orders,
        lines=data.totals.lines,
        shipments=data.totals.shipments,
        seconds=load.seconds,
        latencies=load.latencies,
        server_cpu=server_cpu,
        client_cpu=load.client_cpu,
        other_cpu=other_cpu,
        peak_rss_mib=rss,
    )


def describe(data: Dataset, batch_size: int) -> str:
    t = data.totals
    parcels = ", ".join(f"{k}: {v:,}" for k, v in sorted(t.parcels_per_order.items()))
    statuses = ", ".join(f"{k} {v:,}" for k, v in t.line_statuses.most_common())
    kinds = ", ".join(f"{k} {v:,}" for k, v in t.backorder_types.most_common())
    return (
        f"{t.orders:,} orders in {len(data.bodies)} batches of up to {batch_size:,} "
        f"({data.megabytes:.0f} MB of JSON, generated in {data.seconds:.1f} s)\n"
        f"  {t.lines:,} lines ({t.lines / t.orders:.2f}/order, {t.units:,} units), "
        f"{t.shipments:,} shipments ({t.shipments / t.orders:.2f}/order; orders by parcels "
        f"{parcels}), {t.shipment_lines:,} parcel lines, {t.partial_lines:,} lines split "
        f"or partly shipped\n"
        f"  {t.customers:,} customers ({t.repeat_orders:,} repeat orders), {data.skus:,} SKUs\n"
        f"  line statuses: {statuses}\n"
        f"  backorder types: {kinds}"
    )


async def load_fresh(
    backend: str,
    args: argparse.Namespace,
    data: Dataset,
    concurrency: int,
    workdir: Path,
    deadline: float,
) -> Run:
    """Load into a new empty database of the backend."""
    options: dict[str, Any] = {"workers": args.workers, "profile_dir": args.py_spy}
    if backend == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(dir=workdir)}/ingest-{concurrency}.db"
        return await load_service(backend, url, data, concurrency, workdir, deadline, **options)
    async with throwaway_postgres(args.postgres_url) as url:
        return await load_service(backend, url, data, concurrency, workdir, deadline, **options)


async def _settle(args: argparse.Namespace, deadline: float) -> None:
    budget = min(args.quiet_wait, (deadline - time.monotonic()) / 4)
    if budget <= 0:
        return
    load = await wait_until_quiet(budget)
    if load > 0.3:
        _log(f"  (the machine stays busy: {load:.1f} cores in use by others; measuring anyway)")


async def main_async(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.max_seconds
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    described = machine(PACKAGES)
    if "postgresql" in backends:
        described["postgresql"] = await postgres_version(args.postgres_url)
    _log(
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n"
        f"code: {code_revision()}\n"
        "machine: " + "; ".join(f"{k} {v}" for k, v in described.items())
    )
    data = make_dataset(args.orders, args.batch_size, args.seed)
    _log(describe(data, args.batch_size))

    runs: list[Run] = []
    await _settle(args, deadline)
    seconds = validate_in_process(data.bodies)
    runs.append(
        Run(
            "ceiling: OrderBatchIn.model_validate_json in-process",
            "-",
            0,
            data.totals.orders,
            data.totals.lines,
            data.totals.shipments,
            seconds,
        )
    )
    _log(f"  {runs[-1].name}: {runs[-1].orders_per_second:,.0f} orders/s")
    with tempfile.TemporaryDirectory(prefix="wa-bench-") as tmp:
        workdir = Path(tmp)
        for concurrency in args.concurrency:
            await _settle(args, deadline)
            runs.append(await load_ceiling(data, concurrency, workdir, deadline))
            _log(f"  {runs[-1].name} x{concurrency}: {runs[-1].orders_per_second:,.0f} orders/s")
        for backend in backends:
            for concurrency in args.concurrency:
                await _settle(args, deadline)
                _log(f"  {backend}, {concurrency} in flight: loading ...")
                try:
                    try:
                        run = await load_fresh(backend, args, data, concurrency, workdir, deadline)
                    except ServerGone as exc:
                        _log(f"  {backend}, {concurrency} in flight: the server went away ({exc})")
                        _log(f"  {backend}, {concurrency} in flight: loading again ...")
                        run = await load_fresh(backend, args, data, concurrency, workdir, deadline)
                except BenchError as exc:
                    _log(f"  {backend}, {concurrency} in flight: FAILED: {exc}")
                    run = Run("whereabouts", backend, concurrency, 0, 0, 0, float("nan"))
                    run.workers, run.failure = args.workers, str(exc).splitlines()[0]
                    runs.append(run)
                    continue
                runs.append(run)
                _log(
                    f"  {backend}, {concurrency} in flight: {run.orders_per_second:,.0f} orders/s, "
                    f"{run.lines / run.seconds:,.0f} lines/s ({run.seconds:.1f} s; "
                    f"{run.trend()}; others on the machine used {run.other_cpu:.0f} CPU s)"
                )
    _log("\n" + markdown_table(runs))
    noisy = [r for r in runs if r.other_cpu == r.other_cpu and r.other_cpu / r.seconds > 0.3]
    for run in noisy:
        _log(
            f"NOISY: {run.name} {run.backend} x{run.concurrency}: other work used "
            f"{run.other_cpu / run.seconds:.1f} cores meanwhile; its figures are pessimistic"
        )
    codes = {run.code for run in runs if run.code}
    if len(codes) > 1:
        _log(f"WARNING: the code changed during the benchmark ({', '.join(sorted(codes))})")
    for run in runs:
        if run.failure:
            _log(f"FAILED: {run.backend}, {run.concurrency} in flight: {run.failure}")
    sqlite_runs = [
        r for r in runs if r.name == "whereabouts" and r.backend == "sqlite" and not r.failure
    ]
    if sqlite_runs:
        best = max(r.orders_per_second for r in sqlite_runs)
        verdict = "meets" if best >= args.target else "misses"
        _log(f"\nSQLite best: {best:,.0f} orders/s, {verdict} the target of {args.target:,}/s")
    if args.json:
        write_json(Path(args.json), described, data, runs)
    return 1 if any(run.failure for run in runs) else 0


def _concurrency(raw: str) -> list[int]:
    values = [int(part) for part in raw.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("give in-flight request counts like 1,2")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000, help="orders to load (100000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="orders per request (1000)")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="both", help="(both)"
    )
    parser.add_argument(
        "--concurrency", type=_concurrency, default=[1, 2], help="requests in flight (1,2)"
    )
    parser.add_argument("--seed", type=int, default=20261101, help="data generator seed")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WHEREABOUTS_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="an admin URL; a throwaway database is created there and dropped afterwards",
    )
    parser.add_argument("--target", type=int, default=5000, help="SQLite orders/s to meet (5000)")
    parser.add_argument(
        "--max-seconds", type=float, default=1200, help="give up after this long (1200)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each measurement, wait up to this long for other work on the machine to "
        "calm down (60; 0 to skip)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="WEB_CONCURRENCY of the service under test (1)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy during each load (pip install py-spy); the figures "
        "then include its overhead",
    )
    return parser


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Stop cleanly (servers stopped, throwaway databases dropped) on Ctrl-C or a plain kill, even
    # when started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return asyncio.run(main_async(args))
    except BenchError as exc:
        print(f"bench/ingest.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
