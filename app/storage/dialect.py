"""The few statements whose SQL differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
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
