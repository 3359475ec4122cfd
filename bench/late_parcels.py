"""The late-parcel sweep (app.storage.late_parcels) on a big table, beside a ceiling.

    python bench/late_parcels.py [--parcels 100000] [--backend sqlite|postgresql|both]
                                 [--postgres-url URL] [--rounds 5] [--json FILE]

A fresh, migrated database gets one brand and `--parcels` orders of one parcel each, written
straight with SQL (the sweep reads nothing else): 70 % delivered, 22 % in transit, 3 % out for
delivery, 5 % with a label only; promised dates spread over the 20 days around today, a carrier
date on one in five; three carrier scans each, the newest up to 8 days old. Orders have no
customer, so the shoppers' messages are not filed (that cost is the outbox's, measured by
bench/dispatch.py); the events and the brand's webhook planning are.

Then, with the clock at noon UTC:
- the first sweep, which tells every parcel late now (in runs of `late_parcels.BATCH`, one
  transaction each, as a worker does);
- a steady sweep, with nothing left to tell: what every worker pays every 10 minutes,
  `--rounds` times, median;
- the ceiling, measured around each steady sweep: one indexed query reading the ids of the
  brand's undelivered parcels, the least any sweep must read.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from app.brands import create_brand
from app.domain.parcels import UNDELIVERED
from app.storage import late_parcels
from app.storage.database import Database
from app.storage.migrate import migrate
from app.storage.schema import checkpoints, events, orders, shipments
from bench.common import code_revision, machine, postgres_version, throwaway_postgres

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
CHUNK = 2_000
STATUSES = (
    ["delivered"] * 70 + ["in_transit"] * 22 + ["out_for_delivery"] * 3 + ["label_created"] * 5
)


async def load(db: Database, parcels: int, seed: int) -> int:
    """Write the brand, its orders, parcels and scans; return the brand's id."""
    rng = random.Random(seed)
    today = NOW.date()
    async with db.write() as conn:
        brand_id = await create_brand(conn, "bench", "Bench", NOW)
    for start in range(0, parcels, CHUNK):
        numbers = range(start, min(start + CHUNK, parcels))
        async with db.write() as conn:
            ids = (
                (
                    await conn.execute(
                        orders.insert().returning(orders.c.id),
                        [
                            {
                                "brand_id": brand_id,
                                "number": f"B-{n}",
                                "placed_at": NOW - dt.timedelta(days=12),
                                "currency": "USD",
                                "tracking_token": secrets.token_urlsafe(32),
                                "created_at": NOW,
                                "updated_at": NOW,
                            }
                            for n in numbers
                        ],
                    )
                )
                .scalars()
                .all()
            )
            rows = []
            for order_id in ids:
                status = rng.choice(STATUSES)
                promised = today + dt.timedelta(days=rng.randint(-10, 10))
                carrier = (
                    promised + dt.timedelta(days=rng.randint(-2, 4)) if rng.random() < 0.2 else None
                )
                rows.append(
                    {
                        "order_id": order_id,
                        "brand_id": brand_id,
                        "ref": "P1",
                        "carrier": "ups",
                        "tracking_number": f"1Z{order_id:012d}",
                        "status": status,
                        "promised_date": promised,
                        "carrier_eta": carrier,
                        "shipped_at": NOW - dt.timedelta(days=11),
                        "delivered_at": NOW - dt.timedelta(days=1)
                        if status == "delivered"
                        else None,
                        "created_at": NOW - dt.timedelta(days=11),
                        "updated_at": NOW,
                    }
                )
            parcel_ids = (
                (await conn.execute(shipments.insert().returning(shipments.c.id), rows))
                .scalars()
                .all()
            )
            scans = []
            for parcel_id in parcel_ids:
                newest = NOW - dt.timedelta(hours=rng.uniform(1, 8 * 24))
                for k in range(3):
                    scans.append(
                        {
                            "shipment_id": parcel_id,
                            "occurred_at": newest - dt.timedelta(days=k),
                            "status": "in_transit",
                            "description": "Scanned",
                            "created_at": NOW,
                        }
                    )
            await conn.execute(checkpoints.insert(), scans)
    return brand_id


async def sweep(db: Database) -> tuple[float, int]:
    """Run the sweep as a worker does; return (seconds, parcels told)."""
    started = time.perf_counter()
    told_all = 0
    told = late_parcels.BATCH
    while told == late_parcels.BATCH:
        async with db.write() as conn:
            told = await late_parcels.tell_late_parcels(conn, NOW)
        told_all += told
    return time.perf_counter() - started, told_all


async def ceiling(db: Database, brand_id: int) -> float:
    started = time.perf_counter()
    async with db.read() as conn:
        await conn.execute(
            select(shipments.c.id).where(
                shipments.c.brand_id == brand_id, shipments.c.status.in_(sorted(UNDELIVERED))
            )
        )
    return time.perf_counter() - started


async def measure(url: str, parcels: int, rounds: int, seed: int) -> dict[str, Any]:
    db = Database(url)
    try:
        await migrate(db)
        started = time.perf_counter()
        brand_id = await load(db, parcels, seed)
        loaded = time.perf_counter() - started
        first, told = await sweep(db)
        async with db.read() as conn:
            recorded = (
                await conn.execute(
                    select(func.count()).select_from(events).where(events.c.type == "shipment_late")
                )
            ).scalar_one()
            undelivered = (
                await conn.execute(
                    select(func.count())
                    .select_from(shipments)
                    .where(shipments.c.status.in_(sorted(UNDELIVERED)))
                )
            ).scalar_one()
        assert recorded == told, (recorded, told)
        steady, bare = [], []
        for _ in range(rounds):
            bare.append(await ceiling(db, brand_id))
            seconds, again = await sweep(db)
            assert again == 0, again  # everything was told: nothing twice
            steady.append(seconds)
            bare.append(await ceiling(db, brand_id))
        return {
            "parcels": parcels,
            "undelivered": undelivered,
            "load_seconds": round(loaded, 1),
            "first_sweep_ms": round(first * 1000, 1),
            "told": told,
            "first_sweep_ms_per_told": round(first * 1000 / max(told, 1), 3),
            "steady_sweep_ms": round(statistics.median(steady) * 1000, 1),
            "steady_sweeps_ms": [round(s * 1000, 1) for s in steady],
            "ceiling_ms": round(statistics.median(bare) * 1000, 1),
            "steady_vs_ceiling": round(statistics.median(steady) / statistics.median(bare), 1),
        }
    finally:
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261120)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"code": code_revision(), "machine": machine()}
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/late.db"
            results["sqlite"] = await measure(url, args.parcels, args.rounds, args.seed)
            print("sqlite", json.dumps(results["sqlite"]), flush=True)
    if args.backend in ("postgresql", "both"):
        results["postgresql_version"] = await postgres_version(args.postgres_url)
        async with throwaway_postgres(args.postgres_url, "wa_late") as url:
            results["postgresql"] = await measure(url, args.parcels, args.rounds, args.seed)
            print("postgresql", json.dumps(results["postgresql"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
