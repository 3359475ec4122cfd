"""Which orders changed: recorded in the writing transaction, announced once it commits.

Every write that raises an order's version calls `note(conn, {order_id: version})`. Just before
the transaction commits, `Database.write` calls `flush`, which on PostgreSQL sends
`NOTIFY whereabouts_orders` (delivered to listeners only if the transaction commits) and on SQLite
appends to `change_log`. After the commit, the process's own `ChangeHub` hears about it at once;
other processes hear through `watch` (LISTEN on PostgreSQL, polling `change_log` on SQLite). The
orders table stays the truth: a listener that reconnects tells its hub to forget everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import change_log

log = logging.getLogger("whereabouts.changes")

CHANNEL = "whereabouts_orders"
_PENDING = "whereabouts_changed_orders"
_NOTIFY_CHUNK = 400  # "id:version" pairs per NOTIFY, well under its 8,000-byte payload limit
_LOG_KEEP = 100_000
EVERYTHING = 0  # an order id no order has: "forget every cached page"


def note(conn: AsyncConnection, versions: Mapping[int, int]) -> None:
    """Remember, for this transaction, that these orders now have these versions."""
    pending: dict[int, int] = conn.info.setdefault(_PENDING, {})
    for order_id, version in versions.items():
        pending[order_id] = max(version, pending.get(order_id, 0))


def note_everything(conn: AsyncConnection) -> None:
    """Remember that every order may look different (a brand's theme or policy changed)."""
    conn.info.setdefault(_PENDING, {})[EVERYTHING] = 0


def discard(conn: AsyncConnection) -> None:
    """Forget what a transaction noted (it did not commit)."""
    conn.info.pop(_PENDING, None)


async def flush(conn: AsyncConnection) -> dict[int, int]:
    """Announce the transaction's changes to other processes; return them for this one."""
    versions: dict[int, int] = conn.info.pop(_PENDING, {})
    if not versions:
        return versions
    pairs = [f"{order_id}:{version}" for order_id, version in sorted(versions.items())]
    if conn.dialect.name == "postgresql":
        for start in range(0, len(pairs), _NOTIFY_CHUNK):
            payload = ",".join(pairs[start : start + _NOTIFY_CHUNK])
            await conn.execute(select(func.pg_notify(CHANNEL, payload)))
    else:
        await conn.execute(
            change_log.insert(),
            [{"order_id": order_id, "version": version} for order_id, version in versions.items()],
        )
    return versions


def parse_payload(payload: str) -> dict[int, int]:
    """Read a NOTIFY payload back into {order_id: version}."""
    versions: dict[int, int] = {}
    for pair in payload.split(","):
        order_id, _, version = pair.partition(":")
        if order_id.isdigit() and version.isdigit():
            versions[int(order_id)] = int(version)
    return versions


class ChangeHub:
    """The process's switchboard: who wants to hear about which order."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Queue[int]]] = defaultdict(set)
        self._listeners: list[Callable[[Mapping[int, int] | None], None]] = []

    def add_listener(self, callback: Callable[[Mapping[int, int] | None], None]) -> None:
        """Call `callback(versions)` on every change; `None` means "forget everything"."""
        self._listeners.append(callback)

    def publish(self, versions: Mapping[int, int]) -> None:
        """Tell everyone interested that these orders changed."""
        if EVERYTHING in versions:
            self.reset()
            return
        for callback in self._listeners:
            callback(versions)
        for order_id, version in versions.items():
            for queue in self._waiters.get(order_id, ()):
                queue.put_nowait(version)

    def reset(self) -> None:
        """Changes may have been missed: everyone re-reads from the database."""
        for callback in self._listeners:
            callback(None)
        for queues in self._waiters.values():
            for queue in queues:
                queue.put_nowait(0)

    @contextlib.contextmanager
    def subscribe(self, order_id: int) -> Any:
        """Yield a queue receiving the order's new versions (0: check the database)."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        self._waiters[order_id].add(queue)
        try:
            yield queue
        finally:
            self._waiters[order_id].discard(queue)
            if not self._waiters[order_id]:
                del self._waiters[order_id]


async def watch_postgres(dsn: str, hub: ChangeHub, stop: asyncio.Event) -> None:
    """LISTEN for other processes' changes until `stop`, reconnecting with backoff."""
    delay = 0.5
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("change listener cannot connect (%s); retrying", type(exc).__name__)
            await _sleep_or_stop(stop, delay)
            delay = min(delay * 2, 30)
            continue
        try:
            await conn.add_listener(
                CHANNEL, lambda _c, _pid, _channel, payload: hub.publish(parse_payload(payload))
            )
            # Anything could have changed while we were not listening.
            hub.reset()
            delay = 0.5
            while not stop.is_set() and not conn.is_closed():
                await _sleep_or_stop(stop, 5)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


async def watch_sqlite(db: Any, hub: ChangeHub, stop: asyncio.Event, interval: float) -> None:
    """Poll `change_log` for changes other processes committed, until `stop`."""
    async with db.read() as conn:
        last = (
            await conn.execute(select(func.coalesce(func.max(change_log.c.seq), 0)))
        ).scalar_one()
    rounds = 0
    while not stop.is_set():
        await _sleep_or_stop(stop, interval)
        try:
            async with db.read() as conn:
                rows = (
                    await conn.execute(
                        select(change_log.c.seq, change_log.c.order_id, change_log.c.version)
                        .where(change_log.c.seq > last)
                        .order_by(change_log.c.seq)
                    )
                ).all()
        except Exception as exc:
            log.warning("change poll failed: %s", type(exc).__name__)
            continue
        if rows:
            last = rows[-1].seq
            hub.publish({r.order_id: r.version for r in rows})
        rounds += 1
        if rounds % 600 == 0:
            async with db.write() as conn:
                await conn.execute(delete(change_log).where(change_log.c.seq <= last - _LOG_KEEP))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
