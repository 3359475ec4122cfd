import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.storage.schema import metadata

pytestmark = pytest.mark.anyio


async def test_migrations_build_exactly_the_declared_schema(db):
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    async with db.read() as conn:
        differences = await conn.run_sync(diff)
    # Server defaults that only PostgreSQL sets (the events' transaction id) are not compared.
    assert differences == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_is_set_up_for_concurrency(db):
    async with db.read() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 10000


async def test_tables_and_indexes_exist(db):
    def names(sync_conn):
        inspector = inspect(sync_conn)
        return {
            table: {ix["name"] for ix in inspector.get_indexes(table)}
            for table in inspector.get_table_names()
        }

    async with db.read() as conn:
        tables = await conn.run_sync(names)
    assert "ix_order_lines_brand_id_sku_status" in tables["order_lines"]
    assert "ix_events_brand_id_txid_id" in tables["events"]
    assert {
        "brands",
        "orders",
        "order_lines",
        "shipments",
        "shipment_lines",
        "checkpoints",
        "skus",
        "inbound_supply",
        "events",
        "choices",
        "customers",
        "api_keys",
        "idempotency_keys",
    } <= set(tables)
