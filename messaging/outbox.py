"""The durable outbox: news from domain events becomes queued messages in the same transaction.

`plan(conn, brand_id, events, now)` runs wherever events are recorded. For each event that is
news for the shopper it works out the trigger (backordered, partial_shipment, shipment_delayed,
eta_changed, items_ready, window_at_risk/expired, choice_confirmed, shipment_exception), the
channels the brand wants for it, and files the news on the order's open message for that
channel (one that has not been claimed yet), opening one when there is none. So news arriving
within the brand's coalescing window goes out as one message.

Each piece of news has a key: a hash of (order, trigger, subject, content version, channel),
unique per brand. A replayed or duplicated event yields the same key and is ignored, so it never
sends twice. Content versions are what makes news new: the parcel's carrier date for a delay,
the scan for an exception, the moment of an ETA move, the choice for a confirmation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.dialect import insert_ignore
from app.storage.schema import (
    brands,
    customers,
    message_news,
    messages,
    order_lines,
    orders,
    shipments,
    suppressions,
)
from messaging import webhooks
from messaging.context import TRIGGERS
from messaging.schedule import parse_clock, quiet_until, zone

# Domain events that can carry news for the shopper.
NEWS_EVENTS = frozenset(
    {
        "order_created",
        "order_updated",
        "shipment_created",
        "shipment_updated",
        "checkpoint_added",
        "eta_changed",
        "backorder_allocated",
        "window_at_risk",
        "window_expired",
        "choice_made",
        "choice_defaulted",
        "shipment_late",
    }
)
SHOPPER_CHANNELS = ("email", "sms")
DEFAULT_CHANNELS: tuple[str, ...] = ("email", "sms")
EXCEPTION_STATUSES = frozenset({"exception", "lost", "returned"})

# An event as recorded: order id, type, and data (a dict, or JSON text from the bulk path).
Event = tuple[int | None, str, Any]


@dataclass(frozen=True)
class News:
    order_id: int
    trigger: str
    subject: str
    version: str
    data: dict[str, Any]
    # Channels this news must not take (a choice made by SMS was already confirmed there).
    skip: frozenset[str] = frozenset()


T = TypeVar("T")
_CHUNK = 5_000  # ids per IN list (PostgreSQL's driver takes at most 32,767 parameters)


def chunks(ids: Sequence[T]) -> list[Sequence[T]]:
    """Split ids into IN lists short enough for every driver."""
    return [ids[start : start + _CHUNK] for start in range(0, len(ids), _CHUNK)]


def news_key(order_id: int, trigger: str, subject: str, version: str, channel: str) -> str:
    """Hash what makes a piece of news itself: the same news always gets the same key."""
    raw = f"{order_id}|{trigger}|{subject}|{version}|{channel}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _data(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        parsed: dict[str, Any] = json.loads(raw)
        return parsed
    return dict(raw)


def _changed_parcels(changes: Iterable[str]) -> dict[str, set[str]]:
    """Read "shipments.<ref>.<field>" entries of an order change into {ref: fields}."""
    found: dict[str, set[str]] = defaultdict(set)
    for change in changes:
        if change.startswith("shipments."):
            ref, _, field = change.removeprefix("shipments.").rpartition(".")
            if ref:
                found[ref].add(field)
    return found


async def plan(
    conn: AsyncConnection, brand_id: int, new: Sequence[Event], now: dt.datetime
) -> None:
    """Queue the news and brand webhooks that these just-recorded events carry."""
    relevant = [(o, t, d) for o, t, d in new if t in NEWS_EVENTS or t == "message_failed"]
    if not relevant:
        return
    events = [(o, t, _data(d)) for o, t, d in relevant]
    order_ids = sorted({o for o, _, _ in events if o is not None})
    numbers: dict[int, str] = {}
    for chunk in chunks(order_ids):
        rows = await conn.execute(
            select(orders.c.id, orders.c.number).where(orders.c.id.in_(chunk))
        )
        numbers.update((row.id, row.number) for row in rows)
    await webhooks.plan(conn, brand_id, events, numbers, now)
    news = await _news(conn, [e for e in events if e[1] in NEWS_EVENTS and e[0] is not None], now)
    if news:
        await _file(conn, brand_id, news, now)
        await _note_delays_told(conn, news, now)


async def _note_delays_told(conn: AsyncConnection, news: Sequence[News], now: dt.datetime) -> None:
    """Mark parcels whose carrier gave a later date as told late now: a stall before they move
    again would tell the shopper the same thing (app.storage.late_parcels)."""
    for item in news:
        if item.trigger == "shipment_delayed" and "reason" not in item.data:
            await conn.execute(
                update(shipments)
                .where(shipments.c.order_id == item.order_id, shipments.c.ref == item.subject)
                .values(late_told_at=now)
            )


async def _news(
    conn: AsyncConnection, events: list[tuple[int | None, str, dict[str, Any]]], now: dt.datetime
) -> list[News]:
    """Turn events into news for the shopper (an event may be no news at all)."""
    parcel_events = [
        e
        for e in events
        if e[1] in {"order_created", "order_updated"}
        or ("shipment" in e[1] and e[1] != "shipment_late")
    ]
    parcel_events += [e for e in events if e[1] == "checkpoint_added"]
    parcels: dict[int, dict[str, Any]] = {}
    unshipped: set[int] = set()
    if parcel_events:
        ids = sorted({e[0] for e in parcel_events if e[0] is not None})
        for chunk in chunks(ids):
            for row in await conn.execute(
                select(
                    shipments.c.order_id,
                    shipments.c.ref,
                    shipments.c.status,
                    shipments.c.promised_date,
                    shipments.c.carrier_eta,
                ).where(shipments.c.order_id.in_(chunk))
            ):
                parcels.setdefault(row.order_id, {})[row.ref] = row
            for row in await conn.execute(
                select(order_lines.c.order_id)
                .where(
                    order_lines.c.order_id.in_(chunk),
                    order_lines.c.status.in_(("in_stock", "backordered")),
                )
                .distinct()
            ):
                unshipped.add(row.order_id)
    stamp = now.isoformat()
    out: list[News] = []
    for order_id, kind, data in events:
        assert order_id is not None
        if kind == "order_created":
            if data.get("backordered_lines"):
                out.append(News(order_id, "backordered", "order", "created", {}))
            for ref in parcels.get(order_id, {}):
                out += _parcel_news(order_id, ref, {"added"}, parcels, unshipped)
        elif kind in {"order_updated", "shipment_created", "shipment_updated", "checkpoint_added"}:
            changed = _changed_parcels(data.get("changes", []))
            if kind == "checkpoint_added" and data.get("shipment"):
                changed[data["shipment"]].add("status")
            for ref, fields in changed.items():
                out += _parcel_news(order_id, ref, fields, parcels, unshipped, data)
        elif kind == "shipment_late":
            # Found by the clock (app.storage.late_parcels): the date passed, or scans stopped.
            if data.get("reason") == "overdue":
                # The last date passed: the carrier gave no later one, which the wording says.
                version = f"overdue:{data.get('due')}"
                dates = {"promised": data.get("due"), "carrier_eta": None}
            else:
                version = f"stalled:{data.get('last_scan_at')}"
                dates = {
                    "promised": data.get("promised_date"),
                    "carrier_eta": None,
                    "quiet_since": data.get("last_scan_at"),
                }
                carrier, promised = data.get("carrier_eta"), data.get("promised_date")
                if carrier and (not promised or carrier > promised):  # ISO dates: text order
                    dates["carrier_eta"] = carrier  # still ahead, and the later date
            out.append(
                News(
                    order_id,
                    "shipment_delayed",
                    str(data.get("shipment")),
                    version,
                    {"shipment": data.get("shipment"), **dates, "reason": data.get("reason")},
                )
            )
        elif kind == "eta_changed":
            lines = data.get("lines", [])
            if lines:
                subject = ",".join(sorted(str(line.get("line")) for line in lines))
                # Moves at the same instant differ by what they move from and to.
                moves = json.dumps([[line.get("old"), line.get("new")] for line in lines])
                version = f"{stamp}|{hashlib.sha256(moves.encode()).hexdigest()[:16]}"
                out.append(News(order_id, "eta_changed", subject[:64], version, {"lines": lines}))
        elif kind == "backorder_allocated":
            refs = sorted(str(line.get("line")) for line in data.get("lines", []))
            if refs:
                out.append(
                    News(order_id, "items_ready", ",".join(refs)[:64], "ready", {"lines": refs})
                )
        elif kind in {"window_at_risk", "window_expired"}:
            refs = sorted(str(line.get("line")) for line in data.get("lines", []))
            if refs:
                out.append(
                    News(
                        order_id,
                        kind,
                        ",".join(refs)[:64],
                        "offered",
                        {
                            "lines": refs,
                            "deadline": data.get("choice_deadline"),
                            "default_action": data.get("default_action"),
                        },
                    )
                )
        elif kind in {"choice_made", "choice_defaulted"}:
            via = data.get("via")
            out.append(
                News(
                    order_id,
                    "choice_confirmed",
                    str(data.get("choice")),
                    "decided",
                    {
                        "choice": data.get("choice"),
                        "line": data.get("line"),
                        "decision": data.get("decision"),
                        "alternative": data.get("alternative"),
                        "defaulted": kind == "choice_defaulted",
                    },
                    frozenset({"sms"}) if via == "sms" else frozenset(),
                )
            )
    return out


def _parcel_news(
    order_id: int,
    ref: str,
    fields: set[str],
    parcels: Mapping[int, Mapping[str, Any]],
    unshipped: set[int],
    data: Mapping[str, Any] | None = None,
) -> list[News]:
    parcel = parcels.get(order_id, {}).get(ref)
    if parcel is None:
        return []
    out: list[News] = []
    if "added" in fields and order_id in unshipped and parcel.status != "label_created":
        out.append(News(order_id, "partial_shipment", ref, "shipped", {"shipment": ref}))
    elif "status" in fields and parcel.status == "in_transit" and order_id in unshipped:
        # A parcel announced with a label only is news once it is on its way.
        out.append(News(order_id, "partial_shipment", ref, "shipped", {"shipment": ref}))
    if "status" in fields and parcel.status in EXCEPTION_STATUSES:
        when = (data or {}).get("occurred_at", "")
        out.append(
            News(
                order_id,
                "shipment_exception",
                ref,
                f"{parcel.status}@{when}",
                {"shipment": ref, "status": parcel.status},
            )
        )
    late = (
        parcel.carrier_eta is not None
        and parcel.promised_date is not None
        and parcel.carrier_eta > parcel.promised_date
        and parcel.status not in {"delivered", *EXCEPTION_STATUSES}
    )
    if late and ({"carrier_eta", "promised_date", "added"} & fields):
        out.append(
            News(
                order_id,
                "shipment_delayed",
                ref,
                parcel.carrier_eta.isoformat(),
                {
                    "shipment": ref,
                    "promised": parcel.promised_date.isoformat(),
                    "carrier_eta": parcel.carrier_eta.isoformat(),
                },
            )
        )
    return out


@dataclass(frozen=True)
class _Recipient:
    email: str | None
    phone: str | None
    locale: str
    timezone: str
    sms_consent: bool


async def _file(conn: AsyncConnection, brand_id: int, news: list[News], now: dt.datetime) -> None:
    """File each piece of news on its order's open message per channel, opening one if needed."""
    brand = (
        await conn.execute(
            select(
                brands.c.default_locale,
                brands.c.timezone,
                brands.c.message_triggers,
                brands.c.message_fanout,
                brands.c.coalesce_minutes,
                brands.c.quiet_hours_start,
                brands.c.quiet_hours_end,
            ).where(brands.c.id == brand_id)
        )
    ).one()
    order_ids = sorted({n.order_id for n in news})
    recipients: dict[int, _Recipient] = {}
    people = [
        row
        for chunk in chunks(order_ids)
        for row in await conn.execute(
            select(
                orders.c.id,
                customers.c.email,
                customers.c.phone,
                customers.c.locale,
                customers.c.timezone,
                customers.c.sms_consent,
            )
            .join(customers, customers.c.id == orders.c.customer_id)
            .where(orders.c.id.in_(chunk))
        )
    ]
    for row in people:
        recipients[row.id] = _Recipient(
            row.email,
            row.phone,
            row.locale or brand.default_locale,
            row.timezone or brand.timezone,
            bool(row.sms_consent),
        )
    suppressed = await _suppressed(conn, brand_id, recipients.values())
    wanted: Mapping[str, Any] = brand.message_triggers or {}
    delay = dt.timedelta(minutes=brand.coalesce_minutes)
    start, end = parse_clock(brand.quiet_hours_start), parse_clock(brand.quiet_hours_end)
    # (order, channel) -> the news to file there, in trigger order.
    filing: dict[tuple[int, str], list[News]] = defaultdict(list)
    for item in news:
        person = recipients.get(item.order_id)
        if person is None:
            continue
        channels = [
            c
            for c in wanted.get(item.trigger, DEFAULT_CHANNELS)
            if c in SHOPPER_CHANNELS and c not in item.skip
        ]
        reachable = [c for c in channels if _address(person, c)]
        if brand.message_fanout == "first":
            usable = [c for c in reachable if _usable(person, c, suppressed)]
            reachable = usable[:1]
        for channel in reachable:
            filing[(item.order_id, channel)].append(item)
    if not filing:
        return
    keys = {
        (order_id, channel, id(item)): news_key(
            item.order_id, item.trigger, item.subject, item.version, channel
        )
        for (order_id, channel), items in filing.items()
        for item in items
    }
    seen = await _known_keys(conn, brand_id, list(keys.values()))
    for (order_id, channel), items in sorted(filing.items()):
        fresh = [i for i in items if keys[(order_id, channel, id(i))] not in seen]
        if not fresh:
            continue
        person = recipients[order_id]
        due = now + delay
        if channel == "sms":
            due = quiet_until(due, zone(person.timezone, brand.timezone), start, end) or due
        message_id = await _open_message(
            conn, brand_id, order_id, channel, _address(person, channel) or "", person, due, now
        )
        rows = [
            {
                "brand_id": brand_id,
                "message_id": message_id,
                "order_id": order_id,
                "trigger": item.trigger,
                "subject": item.subject,
                "key": keys[(order_id, channel, id(item))],
                "data": item.data,
                "created_at": now,
            }
            for item in sorted(fresh, key=lambda i: TRIGGERS.index(i.trigger))
        ]
        await conn.execute(insert_ignore(conn, message_news, ["brand_id", "key"]), rows)


def _address(person: _Recipient, channel: str) -> str | None:
    return person.email if channel == "email" else person.phone


def _usable(person: _Recipient, channel: str, suppressed: set[tuple[str, str]]) -> bool:
    address = _address(person, channel)
    if address is None or (channel, address) in suppressed:
        return False
    return channel != "sms" or person.sms_consent


async def _suppressed(
    conn: AsyncConnection, brand_id: int, people: Iterable[_Recipient]
) -> set[tuple[str, str]]:
    addresses = sorted({a for p in people for a in (p.email, p.phone) if a})
    found: set[tuple[str, str]] = set()
    for start in range(0, len(addresses), _CHUNK):
        rows = await conn.execute(
            select(suppressions.c.channel, suppressions.c.address).where(
                suppressions.c.brand_id == brand_id,
                suppressions.c.topic == "all",
                suppressions.c.address.in_(addresses[start : start + _CHUNK]),
            )
        )
        found.update((row.channel, row.address) for row in rows)
    return found


async def _known_keys(conn: AsyncConnection, brand_id: int, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(keys), 1000):
        rows = await conn.execute(
            select(message_news.c.key).where(
                message_news.c.brand_id == brand_id,
                message_news.c.key.in_(keys[start : start + 1000]),
            )
        )
        found.update(row.key for row in rows)
    return found


def open_key(order_id: int, channel: str) -> str:
    """Name the slot of an order's message that still takes news on a channel."""
    return f"{order_id}:{channel}"


async def _open_message(
    conn: AsyncConnection,
    brand_id: int,
    order_id: int,
    channel: str,
    address: str,
    person: _Recipient,
    due: dt.datetime,
    now: dt.datetime,
) -> int:
    """Return the order's open message on the channel, opening one when there is none.

    The open message is locked until this transaction ends, so a worker cannot claim it
    while news is being added (a claim skips locked rows and takes it next time).
    """
    slot = open_key(order_id, channel)
    found = (
        await conn.execute(
            select(messages.c.id).where(messages.c.open_key == slot).with_for_update()
        )
    ).first()
    if found is not None:
        return int(found.id)
    stmt = insert_ignore(conn, messages, ["open_key"]).values(
        brand_id=brand_id,
        order_id=order_id,
        channel=channel,
        address=address,
        locale=person.locale,
        timezone=person.timezone,
        state="queued",
        open_key=slot,
        due_at=due,
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    created = (await conn.execute(stmt.returning(messages.c.id))).first()
    if created is not None:
        return int(created.id)
    # Another transaction opened it first and has committed: use that one.
    return int(
        (
            await conn.execute(
                select(messages.c.id).where(messages.c.open_key == slot).with_for_update()
            )
        ).scalar_one()
    )
