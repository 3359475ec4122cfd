"""The database handle: concurrent reads, one write path, the same code on SQLite and PostgreSQL.

On SQLite every write transaction goes through one in-process lock and starts with
`BEGIN IMMEDIATE`, so a writer takes the file's write lock before it reads anything and other
processes wait on `busy_timeout` instead of failing with "database is locked" half way through.
WAL lets readers go on while one writer works. On PostgreSQL writes are ordinary transactions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.storage import changes, sqlite_driver


class DatabaseError(Exception):
    """The database URL cannot be used."""


def async_url(url: str) -> URL:
    """Turn a user-facing database URL into the async driver URL SQLAlchemy needs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    raise DatabaseError(f"unsupported database backend: {backend}")


class Database:
    """One engine, a read path and a write path."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._write_lock = asyncio.Lock()
        self.on_commit: list[Callable[[dict[int, int]], None]] = []
        kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": pool_size}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
            kwargs["module"] = sqlite_driver.dbapi()  # one thread hand-off a statement
        else:
            # asyncpg prepares every statement; a generic plan chosen before a table has
            # statistics can scan a whole brand's orders to find a batch's numbers.
            kwargs["connect_args"] = {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms)

    @property
    def dialect(self) -> str:
        """Name the SQL dialect in use: "sqlite" or "postgresql"."""
        return self.url.get_backend_name()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Yield a connection for reads; statements share one snapshot until it closes."""
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """Yield a connection inside a write transaction, committed when the block succeeds.

        Orders the transaction changed (see `app.storage.changes`) are announced to other
        processes just before the commit and to `on_commit` callbacks right after it.
        """
        if not self.is_sqlite:
            async with self.engine.connect() as conn:
                changes.discard(conn)
                async with conn.begin():
                    yield conn
                    changed = await changes.flush(conn)
        else:
            async with self._write_lock, self.engine.connect() as conn:
                changes.discard(conn)
                conn = await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                async with conn.begin():
                    yield conn
                    changed = await changes.flush(conn)
        if changed:
            for callback in self.on_commit:
                callback(changed)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit (deferred for
        # reads, IMMEDIATE for writes).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))
