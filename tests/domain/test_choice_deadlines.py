"""Choices past their deadline get the brand's default action: once, on a fixed clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.api.models import OrderIn, SkuIn
from app.storage import catalog
from app.storage import choices as choice_store
from app.storage import orders as order_store
from app.storage.database import Database
from app.storage.schema import choices, events, order_lines, orders
from tests.conftest import BrandKey

pytestmark = pytest.mark.anyio
POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
DEADLINE = dt.datetime(2026, 11, 9, 23, 59, 59, tzinfo=dt.UTC)
AFTER = DEADLINE + dt.timedelta(seconds=1)


async def waiting_order(
    db: Database,
    brand: BrandKey,
    number: str,
    sku: str = "LAMP",
    *,
    default_action: str = "keep",
    deadline: dt.datetime = DEADLINE,
) -> tuple[int, int]:
    """Place an order whose one line waits for `sku` and open its choice; return both ids."""
    payload = {
        "number": number,
        "placed_at": "2026-11-01T10:00:00Z",
        "currency": "USD",
        "customer": {"id": f"c-{number}", "phone": "+14155550123"},
        "lines": [
            {
                "ref": "1",
                "sku": sku,
                "title": "Oak lamp",
                "quantity": 1,
                "unit_price": 1000,
                "status": "backordered",
                "backorder_type": "standard",
            }
        ],
    }
    async with db.write() as conn:
        await catalog.put_sku(
            conn, brand.id, sku, SkuIn.model_validate_json(json.dumps({"on_hand": 0})), NOW
        )
        await order_store.upsert(
            conn, brand.id, [OrderIn.model_validate_json(json.dumps(payload))], NOW, lambda i: ""
        )
        line = (
            await conn.execute(
                select(order_lines.c.id, order_lines.c.order_id)
                .join(orders, orders.c.id == order_lines.c.order_id)
                .where(orders.c.brand_id == brand.id, orders.c.number == number)
            )
        ).one()
        offer = choice_store.Offer(line.order_id, line.id, sku, "at_risk")
        assert await choice_store.offer(conn, brand.id, [offer], deadline, default_action, NOW)
        choice_id = (
            await conn.execute(select(choices.c.id).where(choices.c.order_line_id == line.id))
        ).scalar_one()
    return line.order_id, choice_id


async def apply(db: Database, now: dt.datetime, limit: int = 500) -> int:
    async with db.write() as conn:
        return await choice_store.apply_deadlines(conn, now, limit)


async def state_of(db: Database, choice_id: int) -> Any:
    async with db.read() as conn:
        return (
            await conn.execute(
                select(
                    choices,
                    order_lines.c.status.label("line_status"),
                    order_lines.c.queue_position,
                    orders.c.version,
                )
                .join(order_lines, order_lines.c.id == choices.c.order_line_id)
                .join(orders, orders.c.id == choices.c.order_id)
                .where(choices.c.id == choice_id)
            )
        ).one()


async def defaulted_events(db: Database) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(events.c.data).where(events.c.type == "choice_defaulted").order_by(events.c.id)
        )
        return [row.data for row in rows]


async def test_a_keep_default_applies_once_after_the_deadline(db, brand):
    _, choice_id = await waiting_order(db, brand, "1001")
    before = await state_of(db, choice_id)
    assert await apply(db, DEADLINE) == 0
    assert (await state_of(db, choice_id)).state == "open"

    assert await apply(db, AFTER) == 1
    after = await state_of(db, choice_id)
    assert (after.state, after.decision, after.decided_via, after.decided_at) == (
        "defaulted",
        "keep",
        "default",
        AFTER,
    )
    assert after.line_status == "backordered"
    assert after.version == before.version + 1
    assert await defaulted_events(db) == [
        {
            "choice": choice_id,
            "line": "1",
            "sku": "LAMP",
            "decision": "keep",
            "default_action": "keep",
        }
    ]

    assert await apply(db, AFTER + dt.timedelta(days=1)) == 0
    assert len(await defaulted_events(db)) == 1
    assert (await state_of(db, choice_id)).version == after.version


async def test_a_cancel_default_cancels_the_line_and_the_queue_moves_up(db, brand):
    _, first = await waiting_order(db, brand, "1001", default_action="cancel")
    _, second = await waiting_order(db, brand, "1002", deadline=AFTER + dt.timedelta(days=3))
    assert (await state_of(db, second)).queue_position == 2

    assert await apply(db, AFTER) == 1
    cancelled = await state_of(db, first)
    assert (cancelled.state, cancelled.decision, cancelled.line_status) == (
        "defaulted",
        "refund",
        "cancelled",
    )
    assert (await state_of(db, second)).queue_position == 1
    (event,) = await defaulted_events(db)
    assert (event["decision"], event["default_action"]) == ("refund", "cancel")

    assert await apply(db, AFTER) == 0
    assert len(await defaulted_events(db)) == 1


async def test_a_choice_waiting_for_a_person_also_defaults(db, brand):
    _, choice_id = await waiting_order(db, brand, "1001")
    async with db.write() as conn:
        assert await choice_store.escalate(conn, brand.id, [choice_id], NOW) == 1
    assert (await state_of(db, choice_id)).state == "needs_person"
    assert await apply(db, AFTER) == 1
    assert (await state_of(db, choice_id)).state == "defaulted"


async def test_a_choice_whose_line_stopped_waiting_is_closed_without_news(db, brand):
    _, choice_id = await waiting_order(db, brand, "1001")
    async with db.write() as conn:
        await conn.execute(update(order_lines).values(status="in_stock"))
    assert await apply(db, AFTER) == 0
    closed = await state_of(db, choice_id)
    assert (closed.state, closed.decision) == ("closed", None)
    assert await defaulted_events(db) == []


async def test_decided_choices_are_left_alone_and_the_limit_holds(db, brand):
    ids = [(await waiting_order(db, brand, f"100{n}", f"SKU-{n}"))[1] for n in range(4)]
    order_id = (await state_of(db, ids[0])).order_id
    async with db.write() as conn:
        await choice_store.decide(conn, brand.id, order_id, ids[0], "keep", None, "page", NOW)
    assert await apply(db, AFTER, limit=2) == 2
    assert await apply(db, AFTER, limit=2) == 1
    assert await apply(db, AFTER, limit=2) == 0
    states = [(await state_of(db, i)).state for i in ids]
    assert states == ["made", "defaulted", "defaulted", "defaulted"]
    assert sorted(e["choice"] for e in await defaulted_events(db)) == ids[1:]


@POSTGRES
async def test_a_second_worker_skips_choices_another_is_defaulting(db, brand):
    ids = [(await waiting_order(db, brand, f"100{n}", f"SKU-{n}"))[1] for n in range(3)]
    locked = asyncio.Event()
    release = asyncio.Event()

    async def first_worker() -> int:
        async with db.write() as conn:
            taken = await choice_store.apply_deadlines(conn, AFTER)
            locked.set()
            await release.wait()
        return taken

    task = asyncio.create_task(first_worker())
    await asyncio.wait_for(locked.wait(), 10)
    # The rows are locked, not yet committed: the second worker neither waits nor takes them.
    assert await asyncio.wait_for(apply(db, AFTER), 5) == 0
    release.set()
    assert await task == 3
    assert await apply(db, AFTER) == 0
    assert sorted(e["choice"] for e in await defaulted_events(db)) == ids


@POSTGRES
async def test_concurrent_workers_default_each_choice_exactly_once(db, brand):
    ids = [(await waiting_order(db, brand, f"10{n:02d}", f"SKU-{n}"))[1] for n in range(12)]

    async def worker() -> int:
        total = 0
        while taken := await apply(db, AFTER, limit=2):
            total += taken
        return total

    counts = await asyncio.gather(worker(), worker(), worker())
    assert sum(counts) == len(ids)
    assert sorted(e["choice"] for e in await defaulted_events(db)) == ids
    async with db.read() as conn:
        states = (
            await conn.execute(select(choices.c.state, func.count()).group_by(choices.c.state))
        ).all()
    assert dict(states) == {"defaulted": len(ids)}
