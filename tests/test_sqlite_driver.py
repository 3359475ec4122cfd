"""The SQLite adapter (app.storage.sqlite_driver): a hand-off a statement, the same answers.

Every check runs the same statements through the app's `Database` and through SQLAlchemy's
stock aiosqlite adapter on the same kind of file, and compares what comes back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.storage.database import Database

pytestmark = pytest.mark.anyio

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False, unique=True),
    Column("size", Integer, nullable=False, server_default="0"),
)


@pytest.fixture
async def app_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'app.db'}")
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield db
    await db.close()


@pytest.fixture
async def stock(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'stock.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each call the event loop hands to an aiosqlite connection's thread."""
    calls: list[str] = []
    original: Callable[..., Any] = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", type(fn).__name__))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return calls


async def _exercise(engine: AsyncEngine) -> dict[str, Any]:
    """Run a mix of statements and collect everything SQLAlchemy reports about them."""
    seen: dict[str, Any] = {}
    async with engine.begin() as conn:
        first = await conn.execute(insert(things).values(name="lamp", size=3))
        seen["inserted key"] = tuple(first.inserted_primary_key or ())
        many = await conn.execute(insert(things), [{"name": f"n{i}", "size": i} for i in range(5)])
        seen["executemany rowcount"] = many.rowcount
        changed = await conn.execute(update(things).where(things.c.size < 3).values(size=9))
        seen["update rowcount"] = changed.rowcount
        returned = await conn.execute(
            update(things)
            .where(things.c.name.in_(["n3", "n4"]))
            .values(size=things.c.size + 100)
            .returning(things.c.name, things.c.size)
        )
        seen["returning"] = sorted(tuple(row) for row in returned)
        bound = await conn.execute(
            update(things).where(things.c.name == bindparam("_n")).values(size=bindparam("_s")),
            [{"_n": "lamp", "_s": 1}, {"_n": "n0", "_s": 2}, {"_n": "absent", "_s": 3}],
        )
        seen["bound executemany rowcount"] = bound.rowcount
    async with engine.connect() as conn:
        result = await conn.execute(select(things).order_by(things.c.id))
        seen["keys"] = list(result.keys())
        seen["rows"] = [tuple(row) for row in result]
        seen["empty"] = (await conn.execute(select(things).where(things.c.id < 0))).all()
        seen["scalar"] = (await conn.execute(select(func.sum(things.c.size)))).scalar_one()
        seen["raw"] = (await conn.execute(text("SELECT 1 AS one, 'x' AS letter"))).mappings().all()
        streamed = await conn.stream(select(things.c.name).order_by(things.c.name))
        seen["streamed"] = [row.name async for row in streamed]
    return seen


async def test_same_answers_as_the_stock_adapter(app_db: Database, stock: AsyncEngine) -> None:
    ours = await _exercise(app_db.engine)
    theirs = await _exercise(stock)
    assert ours == theirs
    # And they are the right answers, not merely equal ones.
    assert ours["inserted key"] == (1,)
    assert ours["executemany rowcount"] == 5
    assert ours["update rowcount"] == 3  # n0, n1 and n2
    assert ours["returning"] == [("n3", 103), ("n4", 104)]
    assert ours["bound executemany rowcount"] == 2
    assert ours["keys"] == ["id", "name", "size"]
    assert ours["rows"][0] == (1, "lamp", 1)
    assert ours["empty"] == []
    assert ours["raw"] == [{"one": 1, "letter": "x"}]
    assert ours["streamed"] == ["lamp", "n0", "n1", "n2", "n3", "n4"]


async def test_errors_are_sqlalchemys_as_before(app_db: Database) -> None:
    async with app_db.write() as conn:
        await conn.execute(insert(things).values(name="only"))
    with pytest.raises(IntegrityError):
        async with app_db.write() as conn:
            await conn.execute(insert(things).values(name="only"))
    with pytest.raises(OperationalError, match="no such table"):
        async with app_db.read() as conn:
            await conn.execute(text("SELECT * FROM missing"))
    # The failed transactions left nothing behind and the pool's connections still work.
    async with app_db.read() as conn:
        names = (await conn.execute(select(things.c.name))).scalars().all()
    assert names == ["only"]


async def test_one_hand_off_a_statement(app_db: Database, hand_offs: list[str]) -> None:
    async with app_db.read() as conn:
        await conn.execute(select(1))  # open the connection before counting
    hand_offs.clear()
    async with app_db.read() as conn:
        rows = (await conn.execute(select(things))).all()
        rows += (await conn.execute(select(things).where(things.c.id > 0))).all()
    assert rows == []
    # BEGIN, two SELECTs, ROLLBACK (which ends the read): the stock adapter makes 12 (a cursor
    # opened, executed, fetched and closed for each statement).
    assert len(hand_offs) == 4, hand_offs
    assert hand_offs[-1] == "rollback"

    hand_offs.clear()
    async with app_db.write() as conn:
        await conn.execute(insert(things).values(name="x"))
    # BEGIN IMMEDIATE, the INSERT, COMMIT; no ROLLBACK when the pool takes the connection back.
    assert len(hand_offs) == 3, hand_offs
    assert hand_offs[-1] == "commit"


async def test_a_failed_write_is_still_rolled_back(app_db: Database, hand_offs: list[str]) -> None:
    async with app_db.write() as conn:
        await conn.execute(insert(things).values(name="taken"))

    async def insert_both() -> None:
        async with app_db.write() as conn:
            await conn.execute(insert(things).values(name="fine"))
            await conn.execute(insert(things).values(name="taken"))

    hand_offs.clear()
    with pytest.raises(IntegrityError):
        await insert_both()
    assert hand_offs[-1] == "rollback", hand_offs
    async with app_db.read() as conn:
        names = (await conn.execute(select(things.c.name).order_by(things.c.id))).scalars().all()
    assert names == ["taken"]  # "fine" went with the rollback
