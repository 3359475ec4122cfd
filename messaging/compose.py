"""Gather what a message says, from the database as it is when the message goes out.

News says what changed; the order's current lines, parcels and choices say where things stand
now. News that was superseded before sending is dropped here: an ETA that moved and moved
back, a date change for a line that has since become ready or been cancelled, a choice for a
line no longer waiting. A message whose news all went is dropped (state `dropped`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import (
    brands,
    choices,
    customers,
    message_news,
    message_templates,
    messages,
    order_lines,
    orders,
    shipment_lines,
    shipments,
    suppressions,
)
from app.themes.registry import Theme
from messaging.consent import ALL
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
from messaging.outbox import chunks

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


# States of a message that went, or may have: they count against the daily cap and make the
# next SMS to the number not its first.
_SENT_OR_MAYBE = ("sending", "sent", "delivered", "undelivered", "unknown")


def _utc(value: dt.datetime) -> dt.datetime:
    """Read back a computed timestamp (no column type to convert it) as aware UTC."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass
class Batch:
    """What a batch of claimed messages needs from the database, read in a dozen queries.

    `load` reads every brand, order, customer, piece of news, suppression, line, parcel,
    choice and template override the batch touches with one IN query per table, so the
    cost of a message no longer grows with the statements it needs. The getters answer per
    message from memory; `context` builds what a template sees.
    """

    brands: dict[int, Any] = field(default_factory=dict)
    orders: dict[int, Any] = field(default_factory=dict)
    news: dict[int, list[Any]] = field(default_factory=dict)
    suppressions: dict[tuple[int, str, str], dict[str, str]] = field(default_factory=dict)
    sent: dict[tuple[int, str], list[dt.datetime]] = field(default_factory=dict)
    lines: dict[int, list[Any]] = field(default_factory=dict)
    parcels: dict[int, list[Any]] = field(default_factory=dict)
    parcel_lines: dict[int, list[Any]] = field(default_factory=dict)
    choices: dict[int, list[Any]] = field(default_factory=dict)
    overrides: dict[int, dict[str, str]] = field(default_factory=dict)
    texted: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)
    open_choices: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    # What templates see of each brand, built once a batch: the same for all its messages.
    brand_infos: dict[int, BrandInfo] = field(default_factory=dict)

    @classmethod
    async def load(cls, conn: AsyncConnection, rows: Sequence[Any], since: dt.datetime) -> Batch:
        """Read what `rows` (claimed email and SMS messages) need; `since` bounds the cap count."""
        batch = cls()
        if not rows:
            return batch
        ids = sorted({r.id for r in rows})
        brand_ids = sorted({r.brand_id for r in rows})
        order_ids = sorted({r.order_id for r in rows})
        addresses = sorted({r.address for r in rows})
        phones = sorted({r.address for r in rows if r.channel == "sms"})
        for chunk in chunks(brand_ids):
            for row in await conn.execute(select(brands).where(brands.c.id.in_(chunk))):
                batch.brands[row.id] = row
            for row in await conn.execute(
                select(
                    message_templates.c.brand_id,
                    message_templates.c.name,
                    message_templates.c.source,
                ).where(message_templates.c.brand_id.in_(chunk))
            ):
                batch.overrides.setdefault(row.brand_id, {})[row.name] = row.source
        for chunk in chunks(ids):
            for row in await conn.execute(
                select(message_news)
                .where(message_news.c.message_id.in_(chunk))
                .order_by(message_news.c.id)
            ):
                batch.news.setdefault(row.message_id, []).append(row)
        for chunk in chunks(order_ids):
            await batch._load_orders(conn, chunk, since)
        for chunk in chunks(addresses):
            for row in await conn.execute(
                select(
                    suppressions.c.brand_id,
                    suppressions.c.channel,
                    suppressions.c.address,
                    suppressions.c.topic,
                    suppressions.c.reason,
                ).where(suppressions.c.brand_id.in_(brand_ids), suppressions.c.address.in_(chunk))
            ):
                key = (row.brand_id, row.channel, row.address)
                batch.suppressions.setdefault(key, {})[row.topic] = row.reason
        for chunk in chunks(phones):
            await batch._load_phones(conn, brand_ids, chunk)
        return batch

    async def _load_orders(
        self, conn: AsyncConnection, order_ids: Sequence[int], since: dt.datetime
    ) -> None:
        row: Any
        for row in await conn.execute(
            select(
                orders.c.id,
                orders.c.number,
                orders.c.customer_id,
                orders.c.tracking_token,
                orders.c.sms_code,
                customers.c.name,
                customers.c.phone,
                customers.c.sms_consent,
                customers.c.email_consent,
            )
            .select_from(orders)
            .outerjoin(customers, customers.c.id == orders.c.customer_id)
            .where(orders.c.id.in_(order_ids))
        ):
            self.orders[row.id] = row
        for row in await conn.execute(
            select(
                messages.c.order_id,
                messages.c.channel,
                func.coalesce(messages.c.sent_at, messages.c.updated_at).label("at"),
            ).where(
                messages.c.order_id.in_(order_ids),
                messages.c.state.in_(_SENT_OR_MAYBE),
                or_(messages.c.sent_at >= since, messages.c.state == "sending"),
            )
        ):
            self.sent.setdefault((row.order_id, row.channel), []).append(_utc(row.at))
        for row in await conn.execute(
            select(order_lines)
            .where(order_lines.c.order_id.in_(order_ids))
            .order_by(order_lines.c.order_id, order_lines.c.position)
        ):
            self.lines.setdefault(row.order_id, []).append(row)
        for row in await conn.execute(
            select(shipments).where(shipments.c.order_id.in_(order_ids)).order_by(shipments.c.id)
        ):
            self.parcels.setdefault(row.order_id, []).append(row)
        for row in await conn.execute(
            select(
                shipments.c.order_id,
                shipment_lines.c.shipment_id,
                shipment_lines.c.order_line_id,
                shipment_lines.c.quantity,
            )
            .join(shipments, shipments.c.id == shipment_lines.c.shipment_id)
            .where(shipments.c.order_id.in_(order_ids))
        ):
            self.parcel_lines.setdefault(row.order_id, []).append(row)
        for row in await conn.execute(
            select(choices).where(choices.c.order_id.in_(order_ids)).order_by(choices.c.id)
        ):
            self.choices.setdefault(row.order_id, []).append(row)

    async def _load_phones(
        self, conn: AsyncConnection, brand_ids: Sequence[int], phones: Sequence[str]
    ) -> None:
        """Who was texted before, and which numbers have choices open on which orders."""
        row: Any
        for row in await conn.execute(
            select(
                messages.c.brand_id,
                messages.c.address,
                func.min(messages.c.id).label("low"),
                func.max(messages.c.id).label("high"),
            )
            .where(
                messages.c.brand_id.in_(brand_ids),
                messages.c.channel == "sms",
                messages.c.address.in_(phones),
                messages.c.state.in_(_SENT_OR_MAYBE),
            )
            .group_by(messages.c.brand_id, messages.c.address)
        ):
            self.texted[(row.brand_id, row.address)] = (row.low, row.high)
        for row in await conn.execute(
            select(choices.c.brand_id, customers.c.phone, choices.c.order_id)
            .join(orders, orders.c.id == choices.c.order_id)
            .join(customers, customers.c.id == orders.c.customer_id)
            .where(
                choices.c.brand_id.in_(brand_ids),
                choices.c.state == "open",
                customers.c.phone.in_(phones),
            )
        ):
            self.open_choices.setdefault((row.brand_id, row.phone), set()).add(row.order_id)

    def suppressed(self, message: Any, topic: str) -> str | None:
        """Return why the message's address must not get the topic, or None when it may."""
        found = self.suppressions.get((message.brand_id, message.channel, message.address), {})
        return found.get(ALL) or found.get(topic)

    def sent_since(self, message: Any, start: dt.datetime) -> int:
        """Count the order's messages on this channel that went (or may have) since `start`."""
        return sum(
            1 for at in self.sent.get((message.order_id, message.channel), ()) if at >= start
        )

    def going(self, message: Any, now: dt.datetime) -> None:
        """Count a message of this batch that goes now against its order's cap."""
        self.sent.setdefault((message.order_id, message.channel), []).append(now)

    def texted_before(self, message: Any) -> bool:
        """Tell whether the brand already sent (or may have sent) another SMS to the number."""
        ids = self.texted.get((message.brand_id, message.address))
        return ids is not None and ids != (message.id, message.id)

    def open_elsewhere(self, message: Any) -> bool:
        """Tell whether the number has choices open on another of the brand's orders."""
        found = self.open_choices.get((message.brand_id, message.address), set())
        return bool(found - {message.order_id})

    def brand_info(self, brand: Any, themes: Mapping[str, Theme]) -> BrandInfo:
        """Return what templates see of the brand: its contacts and its theme's tokens."""
        info = self.brand_infos.get(brand.id)
        if info is None:
            theme = themes.get(brand.theme) or themes["default"]
            tokens = {**theme.tokens, **(brand.theme_tokens or {})}
            info = self.brand_infos[brand.id] = BrandInfo(
                slug=brand.slug,
                name=brand.name,
                timezone=brand.timezone,
                support_email=brand.support_email,
                support_phone=brand.support_phone,
                support_url=brand.support_url,
                logo_url=brand.logo_url or tokens.get("logo") or None,
                tokens={k: str(v) for k, v in tokens.items()},
            )
        return info

    def context(
        self,
        message: Any,
        themes: Mapping[str, Theme],
        tracking_url: str,
        now: dt.datetime,
        unsubscribe_url: str | None = None,
        sms_url: str | None = None,
    ) -> MessageContext | None:
        """Build the template's view of a message; None when all its news was superseded."""
        order = self.orders[message.order_id]
        brand = self.brands[message.brand_id]
        line_rows = self.lines.get(order.id, [])
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
        news = self.news.get(message.id, [])
        items = settle_news(
            [NewsItem(row.trigger, row.subject, dict(row.data)) for row in news], lines
        )
        if not items:
            return None
        titles = {row.id: row.title for row in line_rows}
        contents: dict[int, list[tuple[str, int]]] = {}
        for row in self.parcel_lines.get(order.id, []):
            contents.setdefault(row.shipment_id, []).append(
                (titles[row.order_line_id], row.quantity)
            )
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
            for row in self.parcels.get(order.id, [])
        )
        refs = {row.id: row.ref for row in line_rows}
        choice_rows = self.choices.get(order.id, [])
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
        sms = message.channel == "sms"
        return MessageContext(
            brand=self.brand_info(brand, themes),
            order=OrderInfo(
                number=order.number,
                tracking_url=tracking_url,
                sms_url=sms_url,
                customer_name=order.name if order.customer_id is not None else None,
                lines=tuple(lines.values()),
                parcels=parcels,
                choices=order_choices,
            ),
            news=tuple(items),
            locale=message.locale,
            timezone=message.timezone,
            first_sms=sms and not self.texted_before(message),
            several_orders=sms and self.open_elsewhere(message),
            unsubscribe_url=unsubscribe_url,
            now=now,
        )
