"""Window news is told when a line's choice opens, once per line and reason, however dates flap.

Orders are placed 2026-11-01 10:00 UTC with the default 30-day window: the last day is 12-01.
"""

from __future__ import annotations

import datetime as dt

import pytest

from app.storage import choices, etas
from tests.eta.conftest import START
from tests.eta.helpers import backordered, eta_of, events_after, last_event_id, line_ids

pytestmark = pytest.mark.anyio


def window_lines(news: list[dict], kind: str) -> list[tuple[str | None, str]]:
    """Return (order, line ref) told in events of one window kind, in order."""
    return [
        (e["order"], line["line"]) for e in news if e["type"] == kind for line in e["data"]["lines"]
    ]


async def test_a_flapping_date_tells_each_window_news_once(api, db, brand, clock):
    await api.sku("LAMP")
    await api.sku("DESK")
    await api.supply("LAMP", "PO-1", 5, "2026-12-05")  # ship-by 12-06: past the window
    await api.supply("DESK", "PO-D", 5, "2026-11-20")
    mark = await last_event_id(db)
    await api.place("1001", [backordered("1", "LAMP"), backordered("2", "DESK")])
    assert window_lines(await events_after(db, brand.id, mark), "window_at_risk") == [("1001", "1")]

    # The supplier's date flaps across the window's end, over and over.
    for step in range(4):
        clock.advance(minutes=10)
        date = "2026-11-25" if step % 2 == 0 else "2026-12-05"
        await api.move("LAMP", "PO-1", expected_date=date)
    clock.advance(minutes=10)
    await api.move("LAMP", "PO-1", expected_date="2026-12-05")
    order = await api.order("1001")
    assert eta_of(order, "1")["window_state"] == "at_risk"
    news = await events_after(db, brand.id, mark)
    assert window_lines(news, "window_at_risk") == [("1001", "1")]
    assert [e["type"] for e in news].count("eta_changed") >= 4  # the dates themselves are told

    # The other line of the order slips later too: only it is news.
    mark = await last_event_id(db)
    await api.move("DESK", "PO-D", expected_date="2026-12-10")
    news = await events_after(db, brand.id, mark)
    assert window_lines(news, "window_at_risk") == [("1001", "2")]

    # Expiry is another reason: told once for both lines, then never again.
    clock.set(dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC))
    mark = await last_event_id(db)
    await etas.recompute_brand(db, brand.id, clock())
    await api.move("LAMP", "PO-1", expected_date="2026-11-25")
    await api.move("LAMP", "PO-1", expected_date="2026-12-20")
    await etas.recompute_brand(db, brand.id, clock() + dt.timedelta(days=1))
    news = await events_after(db, brand.id, mark)
    assert sorted(window_lines(news, "window_expired")) == [("1001", "1"), ("1001", "2")]
    assert [e["type"] for e in news].count("window_expired") == 1  # one event for the order
    assert window_lines(news, "window_at_risk") == []


async def test_offer_returns_only_the_choices_it_opened(api, db, brand):
    await api.sku("LAMP")
    await api.place("1001", [backordered("1", "LAMP"), backordered("2", "LAMP")])
    await api.place("1002", [backordered("1", "LAMP")])
    ids = await line_ids(db, brand.id, "1001")
    other = (await line_ids(db, brand.id, "1002"))["1"]
    async with db.read() as conn:
        order_ids = dict(
            (
                await conn.exec_driver_sql(
                    "SELECT id, order_id FROM order_lines WHERE id IN (?, ?, ?)"
                    if db.is_sqlite
                    else "SELECT id, order_id FROM order_lines WHERE id IN ($1, $2, $3)",
                    (ids["1"], ids["2"], other),
                )
            ).all()
        )
    deadline = START + dt.timedelta(days=7)

    def offer(line_id: int, reason: str) -> choices.Offer:
        return choices.Offer(order_ids[line_id], line_id, "LAMP", reason)

    async with db.write() as conn:
        first = await choices.offer(
            conn, brand.id, [offer(ids["1"], "at_risk")], deadline, "keep", START
        )
    async with db.write() as conn:
        second = await choices.offer(
            conn,
            brand.id,
            [
                offer(ids["1"], "at_risk"),  # stands already
                offer(ids["1"], "expired"),  # another reason
                offer(ids["2"], "at_risk"),
                offer(other, "expired"),
            ],
            deadline,
            "cancel",
            START,
        )
    async with db.write() as conn:
        third = await choices.offer(
            conn, brand.id, [offer(ids["2"], "at_risk")], deadline, "keep", START
        )

    assert first == {(ids["1"], "at_risk")}
    assert second == {(ids["1"], "expired"), (ids["2"], "at_risk"), (other, "expired")}
    assert third == set()
    async with db.read() as conn:
        stored = (
            await conn.exec_driver_sql(
                "SELECT order_line_id, reason, state, default_action FROM choices ORDER BY id"
            )
        ).all()
    assert [tuple(r) for r in stored] == [
        (ids["1"], "at_risk", "open", "keep"),
        (ids["1"], "expired", "open", "cancel"),
        (ids["2"], "at_risk", "open", "cancel"),
        (other, "expired", "open", "cancel"),
    ]
