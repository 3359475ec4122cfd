"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def _insert(conn: AsyncConnection, table: Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(conn: AsyncConnection, table: Table, conflict: Sequence[str]) -> Any:
    """INSERT … ON CONFLICT (conflict) DO NOTHING."""
    return _insert(conn, table).on_conflict_do_nothing(index_elements=list(conflict))


def upsert(
    conn: AsyncConnection, table: Table, conflict: Sequence[str], update: Sequence[str]
) -> Any:
    """INSERT … ON CONFLICT (conflict) DO UPDATE SET each of `update` to the new value."""
    stmt = _insert(conn, table)
    return stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={name: stmt.excluded[name] for name in update}
    )


async def insert_with_ids(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> list[int]:
    """Bulk-insert rows under ids taken up front; return the ids in the rows' order.

    Asking the database for ids in one round trip and inserting with a plain executemany keeps
    a 1,000-row insert one statement, where INSERT … RETURNING in parameter order would fall
    back to a statement per row. On SQLite the caller holds the only write lock, so the next
    ids are simply the ones after the largest; on PostgreSQL they come from the id sequence.
    """
    if not rows:
        return []
    count = len(rows)
    if conn.dialect.name == "postgresql":
        sequence = f"{table.name}_id_seq"
        result = await conn.execute(
            text("SELECT nextval(CAST(:seq AS regclass)) FROM generate_series(1, :n)"),
            {"seq": sequence, "n": count},
        )
        ids = [int(value) for value in result.scalars()]
    else:
        top = (await conn.execute(select(func.coalesce(func.max(table.c.id), 0)))).scalar_one()
        ids = list(range(int(top) + 1, int(top) + 1 + count))
    await conn.execute(
        table.insert(), [{**row, "id": id_} for row, id_ in zip(rows, ids, strict=True)]
    )
    return ids


class Params:
    """Positional parameters for `exec_driver_sql`, in the driver's own style (? or $n)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.numbered = conn.dialect.paramstyle == "numeric_dollar"
        self.values: list[Any] = []

    def add(self, value: Any, cast: str = "") -> str:
        """Bind a value; return its placeholder, with a PostgreSQL cast (`::date`) if given."""
        self.values.append(value)
        return f"${len(self.values)}{cast}" if self.numbered else "?"

    def any_of(self, column: str, values: Sequence[Any], pg_type: str) -> str:
        """Return `column` IN the values: one array parameter on PostgreSQL, a list on SQLite."""
        if self.numbered:
            return f"{column} = ANY({self.add(list(values), f'::{pg_type}[]')})"
        return f"{column} IN ({', '.join(self.add(value) for value in values)})"


async def fetch_rows(conn: AsyncConnection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Run a query on the driver's own connection and return the driver's rows.

    For reads of many rows, where SQLAlchemy's Row around each costs more than the read. The
    query joins the transaction `conn` is in, which must have run a statement already (the
    asyncpg adapter begins its transaction at the first one). Rows are tuples on SQLite and
    Records on PostgreSQL; both index by position.
    """
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if conn.dialect.name == "postgresql":
        return list(await driver.fetch(sql, *params))
    # One call on aiosqlite's thread: execute, fetch and close together.
    return list(await driver.execute_fetchall(sql, params))


def bind_processor(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any]:
    """Return the function SQLAlchemy would apply to a Python value bound to `column`."""
    dialect = conn.dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def result_processor(conn: AsyncConnection, column: Column[Any]) -> Callable[[Any], Any]:
    """Return the function SQLAlchemy would apply to a driver value read from `column`."""
    dialect = conn.dialect
    process = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


async def lock_keys(conn: AsyncConnection, brand_id: int, keys: Sequence[str]) -> None:
    """Serialise writers of the same keys (order numbers, customer ids) until commit.

    SQLite already runs one writer at a time. On PostgreSQL a transaction-scoped advisory lock
    per (brand, key), taken in sorted order so two writers cannot deadlock, also covers keys that
    do not exist yet, so two requests creating the same row do not race.
    """
    if conn.dialect.name != "postgresql" or not keys:
        return
    await conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(CAST(:brand AS integer), hashtext(k))"
            " FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"
        ),
        {"brand": brand_id, "keys": sorted(set(keys))},
    )
