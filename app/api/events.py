"""The domain event feed: everything that changed, in order, from a cursor."""

from __future__ import annotations

from app.api.endpoint import Call, Reply
from app.api.models import EventOut, EventPage
from app.api.problems import Problem
from app.storage import events

MAX_PAGE = 1000


async def list_events(call: Call) -> Reply:
    after = call.query("after")
    try:
        position = events.decode_cursor(after) if after else (0, 0)
    except events.BadCursor:
        raise Problem(
            "`after` must be a cursor from an earlier page.", code="invalid-parameter", status=400
        ) from None
    raw_limit = call.query("limit") or "100"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise Problem(
            f"`limit` must be an integer from 1 to {MAX_PAGE}.",
            code="invalid-parameter",
            status=400,
        )
    rows = await events.read_page(call.conn, call.brand.id, position, int(raw_limit))
    if rows:
        position = (rows[-1].txid, rows[-1].id)
    return Reply(
        EventPage(
            data=[
                EventOut(
                    id=r.id, type=r.type, order=r.order_number, created_at=r.created_at, data=r.data
                )
                for r in rows
            ],
            next_cursor=events.encode_cursor(*position),
        )
    )
