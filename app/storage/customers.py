"""Customers of a brand, found or created from the order payloads that name them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.models import CustomerIn
from app.storage.dialect import insert_with_ids, lock_keys
from app.storage.schema import customers

_CUSTOMER_FIELDS = (
    "external_id",
    "email",
    "phone",
    "name",
    "locale",
    "timezone",
    "sms_consent",
    "email_consent",
)


def _customer_values(customer: CustomerIn) -> dict[str, Any]:
    given = customer.model_fields_set
    values: dict[str, Any] = {}
    mapping = {"id": "external_id"}
    for name in (
        "id",
        "email",
        "phone",
        "name",
        "locale",
        "timezone",
        "sms_consent",
        "email_consent",
    ):
        if name in given:
            value = getattr(customer, name)
            values[mapping.get(name, name)] = value.lower() if name == "email" and value else value
    return values


async def resolve(
    conn: AsyncConnection, brand_id: int, payloads: Sequence[CustomerIn], now: dt.datetime
) -> tuple[list[int], set[int]]:
    """Find or create each payload's customer; also return the ids of customers it changed.

    Matching: on the brand's customer id when the payload has one, else on email, then phone.
    Only fields the payload sends are written.
    """
    wanted = [_customer_values(c) for c in payloads]
    ext_ids = {v["external_id"] for v in wanted if v.get("external_id")}
    emails = {v["email"] for v in wanted if v.get("email")}
    phones = {v["phone"] for v in wanted if v.get("phone")}
    # Two requests naming the same new customer must not both create it (taken after the
    # order locks, in sorted order, so writers cannot deadlock).
    await lock_keys(
        conn,
        brand_id,
        [f"customer:id:{v}" for v in ext_ids]
        + [f"customer:email:{v}" for v in emails]
        + [f"customer:phone:{v}" for v in phones],
    )
    conditions = []
    if ext_ids:
        conditions.append(customers.c.external_id.in_(ext_ids))
    if emails:
        conditions.append(customers.c.email.in_(emails))
    if phones:
        conditions.append(customers.c.phone.in_(phones))
    rows = (
        await conn.execute(
            select(customers).where(customers.c.brand_id == brand_id, or_(*conditions))
        )
    ).all()
    index: dict[tuple[str, str], dict[str, Any]] = {}

    def remember(record: dict[str, Any]) -> None:
        for name in ("external_id", "email", "phone"):
            if record.get(name):
                index.setdefault((name, record[name]), record)

    for r in rows:
        remember({"id": r.id, **{name: getattr(r, name) for name in _CUSTOMER_FIELDS}})
    chosen: list[dict[str, Any]] = []
    fresh: list[dict[str, Any]] = []
    dirty: dict[int, dict[str, Any]] = {}
    for values in wanted:
        # The brand's own customer id is decisive; without one, the email, then the phone.
        keys = ("external_id",) if values.get("external_id") else ("email", "phone")
        record = next(
            (
                index[(name, values[name])]
                for name in keys
                if values.get(name) and (name, values[name]) in index
            ),
            None,
        )
        if record is None:
            record = {"id": None, "sms_consent": False, "email_consent": True, **values}
            fresh.append(record)
        elif any(record.get(name) != value for name, value in values.items()):
            record.update(values)
            if record["id"] is not None:
                dirty[record["id"]] = record
        remember(record)
        chosen.append(record)
    if fresh:
        inserted = await insert_with_ids(
            conn,
            customers,
            [
                {
                    "brand_id": brand_id,
                    **{name: record.get(name) for name in _CUSTOMER_FIELDS},
                    "created_at": now,
                    "updated_at": now,
                }
                for record in fresh
            ],
        )
        for record, new_id in zip(fresh, inserted, strict=True):
            record["id"] = new_id
    if dirty:
        await conn.execute(
            update(customers)
            .where(customers.c.id == bindparam("_id"))
            .values({name: bindparam(name) for name in (*_CUSTOMER_FIELDS, "updated_at")}),
            [
                {"_id": cid, **{name: r.get(name) for name in _CUSTOMER_FIELDS}, "updated_at": now}
                for cid, r in dirty.items()
            ],
        )
    return [record["id"] for record in chosen], set(dirty)
