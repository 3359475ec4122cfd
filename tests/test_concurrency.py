"""Many writers at once: no "database is locked", nothing lost, event cursors never skip."""

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import func, select

from app.storage import events
from app.storage.schema import events as events_table
from app.storage.schema import orders
from tests.factories import order_payload

pytestmark = pytest.mark.anyio


async def test_fifty_concurrent_writers_through_the_api(client, brand, db):
    async def write(n):
        return await client.post(
            "/api/v1/orders", json=order_payload(f"C-{n}"), headers=brand.headers
        )

    responses = await asyncio.gather(*(write(n) for n in range(50)))
    assert [r.status_code for r in responses] == [201] * 50
    async with db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(orders))).scalar_one()
    assert count == 50


async def test_fifty_concurrent_updates_of_one_order_count_every_version(client, brand):
    await client.post("/api/v1/orders", json=order_payload("HOT"), headers=brand.headers)

    async def scan(n):
        return await client.post(
            "/api/v1/orders/HOT/shipments",
            json={
                "ref": f"P{n}",
                "carrier": "ups",
                "tracking_number": f"1Z{n:08d}",
                "lines": [{"line": "1", "quantity": 1}],
            },
            headers=brand.headers,
        )

    responses = await asyncio.gather(*(scan(n) for n in range(50)))
    # Line 1 holds two units: exactly two parcels fit, the other 48 are refused cleanly.
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 2 + [409] * 48
    assert {r.json()["type"] for r in responses if r.status_code == 409} == {
        "/problems/quantity-exceeded"
    }
    order = (await client.get("/api/v1/orders/HOT", headers=brand.headers)).json()
    assert order["version"] == 3
    assert order["lines"][0]["status"] == "shipped"


WRITER = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    from app.storage.database import Database
    from app.storage import events

    async def main(url, worker):
        db = Database(url)
        async def one(n):
            async with db.write() as conn:
                probe = events.NewEvent(None, "probe", {"w": worker, "n": n})
                await events.record(conn, 1, [probe], dt.datetime.now(dt.UTC))
        await asyncio.gather(*(one(n) for n in range(10)))
        await db.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_five_processes_writing_one_sqlite_file(database_url, brand, db):
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, database_url, str(w), stderr=subprocess.PIPE
        )
        for w in range(5)
    ]
    for proc in procs:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err
    async with db.read() as conn:
        count = (
            await conn.execute(
                select(func.count()).select_from(events_table).where(events_table.c.type == "probe")
            )
        ).scalar_one()
    assert count == 50


async def test_event_committed_late_is_not_skipped_by_a_cursor(db, brand):
    """A writer that started first but commits last must still appear after the reader's cursor."""
    now = dt.datetime.now(dt.UTC)
    if db.is_sqlite:
        # Writers are serialised on SQLite: the late writer simply waits its turn.
        slow_started = asyncio.Event()
        release = asyncio.Event()

        async def slow():
            async with db.write() as conn:
                slow_started.set()
                await release.wait()
                await events.record(conn, brand.id, [events.NewEvent(None, "slow", {})], now)

        task = asyncio.create_task(slow())
        await slow_started.wait()
        release.set()
        await task
        async with db.write() as conn:
            await events.record(conn, brand.id, [events.NewEvent(None, "fast", {})], now)
        async with db.read() as conn:
            page = await events.read_page(conn, brand.id, (0, 0), 10)
        assert [e.type for e in page] == ["slow", "fast"]
        return

    async with db.engine.connect() as slow_conn:
        slow_tx = await slow_conn.begin()
        # Take a sequence value (and a transaction id) first, but do not commit yet.
        await events.record(slow_conn, brand.id, [events.NewEvent(None, "slow", {})], now)
        async with db.write() as conn:
            await events.record(conn, brand.id, [events.NewEvent(None, "fast", {})], now)
        async with db.read() as conn:
            first = await events.read_page(conn, brand.id, (0, 0), 10)
        # The fast event is held back while an older transaction is still open.
        assert first == []
        await slow_tx.commit()
    async with db.read() as conn:
        second = await events.read_page(conn, brand.id, (0, 0), 10)
    assert sorted(e.type for e in second) == ["fast", "slow"]
    cursor = (second[-1].txid, second[-1].id)
    async with db.read() as conn:
        assert await events.read_page(conn, brand.id, cursor, 10) == []


async def test_the_same_new_order_sent_twice_at_once_is_created_once(client, brand, db):
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/orders", json=order_payload("TWIN"), headers=brand.headers)
            for _ in range(10)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert {r.json()["version"] for r in responses} == {1}
    async with db.read() as conn:
        created = (
            await conn.execute(
                select(func.count())
                .select_from(events_table)
                .where(events_table.c.type == "order_created")
            )
        ).scalar_one()
    assert created == 1


async def test_two_batches_naming_the_same_new_customers_create_each_once(client, brand, db):
    from app.storage.schema import customers

    def batch(prefix):
        orders = []
        for n in range(20):
            order = order_payload(f"{prefix}-{n}")
            order["customer"] = {"id": f"C{n}", "email": f"c{n}@example.com"}
            orders.append(order)
        # Opposite orders in the two batches, the way deadlocks happen.
        return {"orders": orders if prefix == "A" else orders[::-1]}

    responses = await asyncio.gather(
        *(client.post("/api/v1/orders/batch", json=batch(p), headers=brand.headers) for p in "AB")
    )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    async with db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(customers))).scalar_one()
    assert count == 20
