"""Gather what a message says, from the database as it is when the message goes out.

News says what changed; the order's current lines, parcels and choices say where things stand
now. News that was superseded before sending is dropped here: an ETA that moved and moved
back, a date change for a line that has since become ready or been cancelled, a choice for a
line no longer waiting. A message whose news all went is dropped (state `dropped`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import (
    brands,
    choices,
    customers,
    messages,
    order_lines,
    orders,
    shipment_lines,
    shipments,
)
from app.themes.registry import Theme
from messaging.context import (
    TRIGGERS,
    BrandInfo,
    ChoiceInfo,
    LineInfo,
    MessageContext,
    NewsItem,
    OrderInfo,
    ParcelInfo,
)

_WAITING = frozenset({"backordered"})


def settle_news(items: Sequence[NewsItem], lines: Mapping[str, LineInfo]) -> list[NewsItem]:
    """Drop news superseded by later news or by where the order stands now; keep the order."""
    out: list[NewsItem] = []
    moves: dict[str, dict[str, Any]] = {}  # line -> {"old": first old, "new": last new, ...}
    first_move: int | None = None
    for item in items:
        if item.trigger == "eta_changed":
            for line in item.data.get("lines", []):
                ref = str(line.get("line"))
                if ref in moves:
                    moves[ref] = {**line, "old": moves[ref]["old"]}
                else:
                    moves[ref] = dict(line)
            if first_move is None:
                first_move = len(out)
                out.append(item)
            continue
        if item.trigger in {"window_at_risk", "window_expired"}:
            refs = [r for r in item.data.get("lines", []) if _status(lines, r) in _WAITING]
            if not refs:
                continue
            item = NewsItem(item.trigger, item.subject, {**item.data, "lines": refs})
        out.append(item)
    if first_move is not None:
        kept = [
            move
            for ref, move in moves.items()
            if move.get("old") != move.get("new") and _status(lines, ref) in _WAITING
        ]
        for move in kept:
            old = (move.get("old") or {}).get("ship_by")
            new = (move.get("new") or {}).get("ship_by")
            if old and new:
                move["direction"] = "later" if new > old else "earlier"
        if kept:
            lead = out[first_move]
            out[first_move] = NewsItem("eta_changed", lead.subject, {"lines": kept})
        else:
            del out[first_move]
    return sorted(out, key=lambda i: TRIGGERS.index(i.trigger))


def _fill(
    items: Sequence[NewsItem], lines: Mapping[str, LineInfo], choices: Sequence[ChoiceInfo]
) -> list[NewsItem]:
    """Name what the news is about as it stands now: the waiting lines, the open choices."""
    out = []
    for item in items:
        data = item.data
        if item.trigger == "backordered" and not data.get("lines"):
            data = {**data, "lines": [r for r, line in lines.items() if line.status in _WAITING]}
        elif item.trigger in {"window_at_risk", "window_expired"}:
            reason = "at_risk" if item.trigger == "window_at_risk" else "expired"
            refs = set(data.get("lines", []))
            ids = [
                c.id
                for c in choices
                if c.line_ref in refs and c.reason == reason and c.state in {"open", "needs_person"}
            ]
            data = {**data, "choices": ids}
        out.append(NewsItem(item.trigger, item.subject, data))
    return out


def _status(lines: Mapping[str, LineInfo], ref: str) -> str | None:
    line = lines.get(ref)
    return None if line is None else line.status


async def load_context(
    conn: AsyncConnection,
    message: Any,
    news: Sequence[Any],
    themes: Mapping[str, Theme],
    tracking_url: str,
    now: dt.datetime,
    unsubscribe_url: str | None = None,
    sms_url: str | None = None,
) -> MessageContext | None:
    """Build the template's view of a message; None when all its news was superseded."""
    order = (
        await conn.execute(
            select(orders.c.id, orders.c.number, orders.c.customer_id).where(
                orders.c.id == message.order_id
            )
        )
    ).one()
    brand = (await conn.execute(select(brands).where(brands.c.id == message.brand_id))).one()
    customer = None
    if order.customer_id is not None:
        customer = (
            await conn.execute(
                select(customers.c.name, customers.c.phone).where(
                    customers.c.id == order.customer_id
                )
            )
        ).first()
    line_rows = (
        await conn.execute(
            select(order_lines)
            .where(order_lines.c.order_id == order.id)
            .order_by(order_lines.c.position)
        )
    ).all()
    lines = {
        row.ref: LineInfo(
            ref=row.ref,
            title=row.title,
            quantity=row.quantity,
            status=row.status,
            backorder_type=row.backorder_type,
            ship_by=row.ship_by,
            delivery_from=row.delivery_from,
            delivery_to=row.delivery_to,
            eta_reason=row.eta_reason,
            queue_position=row.queue_position,
        )
        for row in line_rows
    }
    items = settle_news([NewsItem(row.trigger, row.subject, dict(row.data)) for row in news], lines)
    if not items:
        return None
    titles = {row.id: row.title for row in line_rows}
    contents: dict[int, list[tuple[str, int]]] = {}
    for row in await conn.execute(
        select(
            shipment_lines.c.shipment_id, shipment_lines.c.order_line_id, shipment_lines.c.quantity
        )
        .join(shipments, shipments.c.id == shipment_lines.c.shipment_id)
        .where(shipments.c.order_id == order.id)
    ):
        contents.setdefault(row.shipment_id, []).append((titles[row.order_line_id], row.quantity))
    parcels = tuple(
        ParcelInfo(
            ref=row.ref,
            carrier=row.carrier,
            tracking_number=row.tracking_number,
            status=row.status,
            tracking_url=row.tracking_url,
            promised_date=row.promised_date,
            carrier_eta=row.carrier_eta,
            lines=tuple(contents.get(row.id, ())),
        )
        for row in await conn.execute(
            select(shipments).where(shipments.c.order_id == order.id).order_by(shipments.c.id)
        )
    )
    refs = {row.id: row.ref for row in line_rows}
    choice_rows = (
        await conn.execute(
            select(choices).where(choices.c.order_id == order.id).order_by(choices.c.id)
        )
    ).all()
    alternatives_by_sku: dict[str, str] = {}
    for row in choice_rows:
        for alt in row.alternatives or []:
            alternatives_by_sku[str(alt.get("sku"))] = str(alt.get("title") or alt.get("sku"))
    order_choices = tuple(
        ChoiceInfo(
            id=row.id,
            line_ref=refs.get(row.order_line_id, ""),
            line_title=titles.get(row.order_line_id, ""),
            reason=row.reason,
            state=row.state,
            deadline=row.deadline,
            default_action=row.default_action,
            alternatives=tuple(row.alternatives or ()),
            short_ref=row.short_ref,
            decision=row.decision,
            alternative_title=alternatives_by_sku.get(row.alternative_sku or ""),
        )
        for row in choice_rows
    )
    items = _fill(items, lines, order_choices)
    theme = themes.get(brand.theme) or themes["default"]
    tokens = {**theme.tokens, **(brand.theme_tokens or {})}
    first_sms = False
    several = False
    if message.channel == "sms":
        first_sms = not await _texted_before(conn, message.brand_id, message.address, message.id)
        several = await _open_elsewhere(conn, message.brand_id, message.address, order.id)
    return MessageContext(
        brand=BrandInfo(
            slug=brand.slug,
            name=brand.name,
            timezone=brand.timezone,
            support_email=brand.support_email,
            support_phone=brand.support_phone,
            support_url=brand.support_url,
            logo_url=brand.logo_url or tokens.get("logo") or None,
            tokens={k: str(v) for k, v in tokens.items()},
        ),
        order=OrderInfo(
            number=order.number,
            tracking_url=tracking_url,
            sms_url=sms_url,
            customer_name=customer.name if customer is not None else None,
            lines=tuple(lines.values()),
            parcels=parcels,
            choices=order_choices,
        ),
        news=tuple(items),
        locale=message.locale,
        timezone=message.timezone,
        first_sms=first_sms,
        several_orders=several,
        unsubscribe_url=unsubscribe_url,
        now=now,
    )


async def _texted_before(conn: AsyncConnection, brand_id: int, phone: str, message_id: int) -> bool:
    """Tell whether this brand already sent (or may have sent) an SMS to the number."""
    found = (
        await conn.execute(
            select(messages.c.id)
            .where(
                messages.c.brand_id == brand_id,
                messages.c.channel == "sms",
                messages.c.address == phone,
                messages.c.id != message_id,
                messages.c.state.in_(("sending", "sent", "delivered", "undelivered", "unknown")),
            )
            .limit(1)
        )
    ).first()
    return found is not None


async def _open_elsewhere(conn: AsyncConnection, brand_id: int, phone: str, order_id: int) -> bool:
    """Tell whether the number has choices open on another of the brand's orders."""
    count = (
        await conn.execute(
            select(func.count())
            .select_from(choices)
            .join(orders, orders.c.id == choices.c.order_id)
            .join(customers, customers.c.id == orders.c.customer_id)
            .where(
                choices.c.brand_id == brand_id,
                choices.c.state == "open",
                customers.c.phone == phone,
                orders.c.id != order_id,
            )
        )
    ).scalar_one()
    return bool(count)
