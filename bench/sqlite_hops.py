"""Thread hand-offs on SQLite: the app's adapter (app.storage.sqlite_driver) against the stock one.

    python bench/sqlite_hops.py [--rounds 5] [--repeat 2000]

Each round times, on both adapters in turn (a fresh file each, same data), three shapes the app
runs all the time:
- a read transaction with one SELECT by primary key (a tracking page's lookups, a batch's reads),
- a write transaction with one UPDATE (status callbacks, settling a message),
- a read of 200 rows (a dispatch batch's claim and reads).
It prints the median time per transaction of each, wall and CPU (all threads of the process),
and how many calls each made to aiosqlite's connection thread. Rounds take turns so that a
machine whose speed wanders treats both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosqlite.core
from sqlalchemy import Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.storage import sqlite_driver

metadata = MetaData()
rows = Table(
    "rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("state", String(12), nullable=False),
    Column("note", String(200), nullable=False),
)
ROWS = 10_000

HAND_OFFS = [0]


def count_hand_offs() -> None:
    original: Callable[..., Awaitable[Any]] = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        HAND_OFFS[0] += 1
        return await original(self, fn, *args, **kwargs)

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]


async def make_engine(path: Path, ours: bool) -> AsyncEngine:
    kwargs: dict[str, Any] = {"module": sqlite_driver.dbapi()} if ours else {}
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", **kwargs)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            rows.insert(), [{"state": "queued", "note": f"row {i}" * 10} for i in range(ROWS)]
        )
    return engine


async def read_one(engine: AsyncEngine, i: int) -> None:
    async with engine.connect() as conn:
        (await conn.execute(select(rows).where(rows.c.id == i % ROWS + 1))).all()


async def write_one(engine: AsyncEngine, i: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(rows).where(rows.c.id == i % ROWS + 1).values(state="sent"))


async def read_batch(engine: AsyncEngine, i: int) -> None:
    start = (i * 200) % (ROWS - 200)
    async with engine.connect() as conn:
        (await conn.execute(select(rows).where(rows.c.id.between(start, start + 199)))).all()


SHAPES = {
    "read transaction, 1 SELECT": (read_one, 1),
    "write transaction, 1 UPDATE": (write_one, 1),
    "read of 200 rows": (read_batch, 10),
}


async def time_shape(engine: AsyncEngine, work: Any, repeat: int) -> tuple[float, float, float]:
    await work(engine, 0)  # warm the connection and the statement cache
    HAND_OFFS[0] = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(repeat):
        await work(engine, i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / repeat, cpu / repeat, HAND_OFFS[0] / repeat


async def main_async(args: argparse.Namespace) -> None:
    count_hand_offs()
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="sqlite-hops-") as tmp:
        engines = {
            "stock": await make_engine(Path(tmp) / "stock.db", ours=False),
            "ours": await make_engine(Path(tmp) / "ours.db", ours=True),
        }
        try:
            for _ in range(args.rounds):
                for shape, (work, divisor) in SHAPES.items():
                    for label, engine in engines.items():
                        measured = await time_shape(engine, work, max(args.repeat // divisor, 1))
                        results.setdefault((shape, label), []).append(measured)
        finally:
            for engine in engines.values():
                await engine.dispose()
    print(f"median of {args.rounds} rounds, per transaction")
    print("| shape | adapter | wall µs | CPU µs | thread hand-offs |")
    print("|---|---|---:|---:|---:|")
    for (shape, label), runs in results.items():
        wall = statistics.median(r[0] for r in runs) * 1e6
        cpu = statistics.median(r[1] for r in runs) * 1e6
        hops = statistics.median(r[2] for r in runs)
        print(f"| {shape} | {label} | {wall:,.0f} | {cpu:,.0f} | {hops:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
