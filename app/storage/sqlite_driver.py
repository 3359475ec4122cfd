"""SQLAlchemy's aiosqlite adapter, with each statement done in one trip to the connection's thread.

aiosqlite runs a connection on a thread of its own; every call the event loop makes on it is a
hand-off there and back (a queue put, a thread wake-up, a self-pipe write, a loop wake-up). The
stock adapter makes four for a statement: create a cursor, execute, fetch the rows, close. On a
machine where waking a thread is slow those trips cost more than SQLite's own work: a read
transaction with one `SELECT` took about 1 ms, 0.5 ms with this (bench/sqlite_hops.py).

Here a statement is one call on the thread: open a cursor, execute, fetch every row (as the
stock adapter does anyway: it never streams), note the description, row count and last row id,
close. Nothing else changes: the same `sqlite3` connection, the same errors, the same
transactions. Server-side cursors (`stream()`) keep the stock behaviour.

A ROLLBACK is skipped when the connection is known to be outside a transaction: the pool rolls
back every connection it gets back, even right after a COMMIT. "Known" means that the last call
through this adapter was a COMMIT or ROLLBACK that succeeded, or a statement after which SQLite
itself said no transaction was open; anything else (a failed call, a first use) rolls back.
Statements run on the driver's connection directly (`app.storage.dialect.fetch_rows`) must not
open or end transactions: they would go unseen here.

    engine = create_async_engine("sqlite+aiosqlite:///app.db", module=sqlite_driver.dbapi())
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

# description, rowcount, lastrowid, rows, and whether no transaction is open afterwards
_Outcome = tuple[Any, int, int | None, list[Any] | None, bool]


class _Statement:
    """Stands in for an aiosqlite cursor: one statement, run and read in one call on the thread."""

    __slots__ = (
        "_adapter",
        "_connection",
        "_rows",
        "arraysize",
        "description",
        "lastrowid",
        "rowcount",
    )

    def __init__(self, connection: aiosqlite.Connection, adapter: _Connection) -> None:
        self._connection = connection
        self._adapter = adapter
        self._rows: list[Any] | None = None
        self.arraysize = 1
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def execute(self, operation: str, parameters: Any = ()) -> None:
        self._take(await self._run(functools.partial(_execute, operation, parameters)))

    async def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._take(await self._run(functools.partial(_executemany, operation, seq_of_parameters)))

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows or [], None
        return rows

    def close(self) -> None:
        self._rows = None

    async def _run(self, work: Any) -> _Outcome:
        connection = self._connection
        self._adapter._idle = False  # until SQLite says otherwise
        # `_execute` is aiosqlite's hand-off: it runs the call on the connection's thread.
        hand_off: Any = connection._execute
        outcome: _Outcome = await hand_off(work, connection._conn)
        return outcome

    def _take(self, outcome: _Outcome) -> None:
        self.description, self.rowcount, self.lastrowid, self._rows, idle = outcome
        self._adapter._idle = idle


def _execute(operation: str, parameters: Any, conn: sqlite3.Connection) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, not conn.in_transaction
    finally:
        cursor.close()


def _executemany(operation: str, seq: Sequence[Any], conn: sqlite3.Connection) -> _Outcome:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq)
        return cursor.description, cursor.rowcount, cursor.lastrowid, None, not conn.in_transaction
    finally:
        cursor.close()


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's cursor adapter over `_Statement`: nothing to open or close on the thread."""

    __slots__ = ()
    _awaitable_cursor_close = False

    def _make_new_cursor(self, connection: Any) -> Any:
        return _Statement(connection, self._adapt_connection)  # type: ignore[arg-type]

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor


class _Connection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's connection adapter with `_Cursor`, skipping a ROLLBACK with nothing to undo."""

    __slots__ = ("_idle",)
    _cursor_cls = _Cursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._idle = False  # not known yet

    def commit(self) -> None:
        self._idle = False
        super().commit()
        self._idle = True

    def rollback(self) -> None:
        if self._idle:
            return
        super().rollback()
        self._idle = True


class _Dbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        stock = super().connect(*arg, **kw)
        return _Connection(self, stock._connection)


@functools.cache
def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The adapted DBAPI module to pass as `create_async_engine(..., module=...)`."""
    return _Dbapi(aiosqlite, sqlite3)
