"""Short SMS links: /s/<code> sends the shopper on to the order's tracking page, and no further."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.storage.database import Database
from app.storage.schema import orders
from tests.web.support import Demo

pytestmark = pytest.mark.anyio
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
UNKNOWN_TOKEN = "Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-Zz9_-AB"


async def _codes(db: Database) -> dict[str, str]:
    async with db.read() as conn:
        rows = await conn.execute(select(orders.c.number, orders.c.sms_code))
        return {row.number: row.sms_code for row in rows}


async def test_a_short_link_redirects_to_its_tracking_page(client, demo: Demo, db: Database):
    codes = await _codes(db)
    for number in ("D-1001", "D-1005"):
        response = await client.get(f"/s/{codes[number]}")
        assert response.status_code == 302
        assert response.headers["location"] == demo.page(number)
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
    landed = await client.get(f"/s/{codes['D-1005']}", follow_redirects=True)
    assert landed.status_code == 200
    assert landed.url.path == demo.page("D-1005")
    assert "D-1005" in landed.text


@SQLITE
async def test_an_unknown_short_link_gets_the_unknown_link_page(client, demo: Demo, db: Database):
    unknown = await client.get(f"/t/{UNKNOWN_TOKEN}")
    code = (await _codes(db))["D-1001"]
    altered = code[:-1] + ("A" if code[-1] != "A" else "B")
    for path in (
        f"/s/{altered}",  # one character changed
        f"/s/{code.swapcase()}",  # codes are case-sensitive
        f"/s/{code}x",
        "/s/" + "Q" * 17,  # longer than any code
        "/s/x!",
        "/s/%C3%A9",
        f"/s/{demo.tokens['D-1001']}",  # a tracking token is not a code
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == unknown.headers["content-type"]
        assert response.content == unknown.content, path
        assert response.headers["cache-control"] == "no-store"
