"""The brand's message log: list what failed or went unknown, read one, send one again.

Addresses are masked in every answer: the log is for operators, who need to tell messages apart
and see why they failed, not to read shoppers' contact details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.endpoint import Call, Reply
from app.api.problems import Conflict, NotFound, Problem
from app.api.webhook_models import MessageDetail, MessageOut, MessagePage
from app.storage.schema import CHANNELS, MESSAGE_STATES, messages, orders

DEFAULT_STATES = ("failed", "unknown")
# An operator may decide these are safe to send again; other states are in flight or settled.
RETRYABLE_STATES = ("failed", "unknown")
DEFAULT_PAGE = 50
MAX_PAGE = 200
_MAX_ID = 2**63 - 1
# The URL segment naming a message.
MESSAGE = "id"


def _bad_parameter(detail: str) -> Problem:
    return Problem(detail, code="invalid-parameter", status=400)


def parse_id(text: str, what: str) -> int:
    """Read a numeric id from the URL; anything else names nothing, so it is a 404."""
    if not text.isdigit() or int(text) > _MAX_ID:
        raise NotFound(f"No {what} {text!r}.")
    return int(text)


def parse_limit(call: Call) -> int:
    """Read `limit` from the query string."""
    raw = call.query("limit") or str(DEFAULT_PAGE)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise _bad_parameter(f"`limit` must be an integer from 1 to {MAX_PAGE}.")
    return int(raw)


def parse_after(call: Call) -> int | None:
    """Read the `after` cursor (an id from an earlier page's `next_cursor`)."""
    raw = call.query("after")
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > _MAX_ID:
        raise _bad_parameter("`after` must be a `next_cursor` from an earlier page.")
    return int(raw)


def parse_choices(
    call: Call, name: str, allowed: Sequence[str], default: Sequence[str]
) -> list[str]:
    """Read a comma-separated filter whose values must come from `allowed`."""
    raw = call.query(name)
    if raw is None or not raw.strip():
        return list(default)
    values = [value.strip() for value in raw.split(",") if value.strip()]
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise _bad_parameter(f"`{name}` takes a comma-separated list of: {', '.join(allowed)}.")
    return values


def page(stmt: Select[Any], id_column: Any, after: int | None, limit: int) -> Select[Any]:
    """Order newest first and start below the cursor; fetch one extra row to see if more follow."""
    if after is not None:
        stmt = stmt.where(id_column < after)
    return stmt.order_by(id_column.desc()).limit(limit + 1)


def next_cursor(rows: Sequence[Any], limit: int) -> str | None:
    """Return the cursor for the page after these rows, or None on the last page."""
    return str(rows[limit - 1].id) if len(rows) > limit else None


def mask_address(channel: str, address: str) -> str:
    """Hide most of an address: j***@example.com, +1******0123, a webhook URL without query."""
    if channel == "email":
        local, at, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}" if at else "***"
    if channel == "sms":
        if len(address) <= 6:
            return "*" * len(address)
        return address[:2] + "*" * (len(address) - 6) + address[-4:]
    # A webhook URL is the brand's own, but its query string may hold a token.
    return address.partition("?")[0].partition("#")[0]


_COLUMNS = (
    messages.c.id,
    orders.c.number,
    messages.c.channel,
    messages.c.address,
    messages.c.state,
    messages.c.attempts,
    messages.c.provider,
    messages.c.provider_id,
    messages.c.error_code,
    messages.c.error_detail,
    messages.c.created_at,
    messages.c.sent_at,
    messages.c.status_at,
)


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "order": row.number,
        "channel": row.channel,
        "address": mask_address(row.channel, row.address),
        "state": row.state,
        "attempts": row.attempts,
        "provider": row.provider,
        "provider_id": row.provider_id,
        "error_code": row.error_code,
        "error_detail": row.error_detail,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
        "status_at": row.status_at,
    }


async def list_messages(call: Call) -> Reply:
    states = parse_choices(call, "state", MESSAGE_STATES, DEFAULT_STATES)
    channels = parse_choices(call, "channel", CHANNELS, CHANNELS)
    limit = parse_limit(call)
    stmt = (
        select(*_COLUMNS)
        .select_from(messages.outerjoin(orders, orders.c.id == messages.c.order_id))
        .where(
            messages.c.brand_id == call.brand.id,
            messages.c.state.in_(states),
            messages.c.channel.in_(channels),
        )
    )
    number = call.query("order")
    if number is not None:
        stmt = stmt.where(orders.c.number == number, orders.c.brand_id == call.brand.id)
    rows = (await call.conn.execute(page(stmt, messages.c.id, parse_after(call), limit))).all()
    return Reply(
        MessagePage(
            data=[MessageOut(**_summary(row)) for row in rows[:limit]],
            next_cursor=next_cursor(rows, limit),
        )
    )


async def _message(conn: AsyncConnection, brand_id: int, text: str) -> Any:
    message_id = parse_id(text, "message")
    row = (
        await conn.execute(
            select(
                *_COLUMNS,
                messages.c.locale,
                messages.c.due_at,
                messages.c.content,
            )
            .select_from(messages.outerjoin(orders, orders.c.id == messages.c.order_id))
            .where(messages.c.id == message_id, messages.c.brand_id == brand_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"No message {text!r}.")
    return row


async def get_message(call: Call) -> Reply:
    row = await _message(call.conn, call.brand.id, call.path[MESSAGE])
    return Reply(
        MessageDetail(**_summary(row), locale=row.locale, due_at=row.due_at, content=row.content)
    )


async def retry_message(call: Call) -> Reply:
    message_id = parse_id(call.path[MESSAGE], "message")
    # Conditional, so a dispatcher that just claimed the message is never overruled.
    result = await call.conn.execute(
        update(messages)
        .where(
            messages.c.id == message_id,
            messages.c.brand_id == call.brand.id,
            messages.c.state.in_(RETRYABLE_STATES),
        )
        .values(
            state="queued",
            due_at=call.now,
            attempts=0,
            lease_owner=None,
            lease_until=None,
            error_code=None,
            error_detail=None,
            updated_at=call.now,
        )
    )
    row = await _message(call.conn, call.brand.id, call.path[MESSAGE])
    if result.rowcount == 0:
        raise Conflict(
            f"Message {row.id} is {row.state}; only failed or unknown messages can be retried."
        )
    return Reply(MessageOut(**_summary(row)), 202)
