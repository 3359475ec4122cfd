"""`Idempotency-Key` on POST: the first successful response is replayed for the same request.

The key is claimed inside the request's own write transaction, so the stored response and the
changes it describes commit together or not at all. A failed request stores nothing and may be
retried with the same key. The same key with a different request is a 422; on PostgreSQL a
concurrent request with the same key waits for the first and then replays it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.problems import Problem
from app.storage.dialect import insert_ignore
from app.storage.schema import idempotency_keys

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Hash what makes two requests "the same": method, path and body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


async def claim(
    conn: AsyncConnection,
    brand_id: int,
    key: str,
    fingerprint: str,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> StoredResponse | None:
    """Claim `key` for this request, or return the response stored for it earlier."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Problem(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
            code="invalid-parameter",
            status=400,
        )
    # An expired key is free again.
    await conn.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.brand_id == brand_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.created_at < now - ttl,
        )
    )
    inserted = await conn.execute(
        insert_ignore(conn, idempotency_keys, ["brand_id", "key"]).values(
            brand_id=brand_id,
            key=key,
            request_hash=fingerprint,
            status_code=0,
            response_body="",
            created_at=now,
        )
    )
    if inserted.rowcount:
        return None
    row = (
        await conn.execute(
            select(
                idempotency_keys.c.request_hash,
                idempotency_keys.c.status_code,
                idempotency_keys.c.response_body,
            ).where(idempotency_keys.c.brand_id == brand_id, idempotency_keys.c.key == key)
        )
    ).one()
    if row.request_hash != fingerprint:
        raise Problem(
            "This Idempotency-Key was used with a different request; use a new key.",
            code="idempotency-key-reused",
            status=422,
        )
    return StoredResponse(row.status_code, row.response_body)


async def store(conn: AsyncConnection, brand_id: int, key: str, status: int, body: str) -> None:
    """Keep the response for replays (in the same transaction as the changes)."""
    await conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.brand_id == brand_id, idempotency_keys.c.key == key)
        .values(status_code=status, response_body=body)
    )
