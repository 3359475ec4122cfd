"""API keys: shown once, stored as a lookup prefix plus a SHA-256 hash of the whole key.

A key looks like `wa_<prefix>_<secret>`: the 12-hex-digit prefix finds the row, and the hash of
the full key (256 random bits, so a fast hash is enough; nothing to brute-force) proves it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import api_keys, brands

_LAST_USED_GRANULARITY = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: `secret` is shown to the brand once and never stored."""

    id: int
    prefix: str
    secret: str


@dataclass(frozen=True)
class Brand:
    """The authenticated brand of a request."""

    id: int
    slug: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _prefix(key: str) -> str | None:
    """Return the lookup prefix of a well-formed key, else None."""
    if len(key) < 48 or len(key) > 128 or not key.startswith("wa_") or key[15:16] != "_":
        return None
    prefix = key[3:15]
    if any(c not in "0123456789abcdef" for c in prefix):
        return None
    return prefix


async def create_key(conn: AsyncConnection, brand_id: int, name: str, now: dt.datetime) -> NewKey:
    """Mint a key for a brand and store only its hash."""
    prefix = secrets.token_hex(6)
    secret = f"wa_{prefix}_{secrets.token_urlsafe(32)}"
    result = await conn.execute(
        api_keys.insert()
        .values(
            brand_id=brand_id, name=name, prefix=prefix, secret_hash=_hash(secret), created_at=now
        )
        .returning(api_keys.c.id)
    )
    return NewKey(id=result.scalar_one(), prefix=prefix, secret=secret)


async def revoke_key(conn: AsyncConnection, prefix: str, now: dt.datetime) -> bool:
    """Revoke the key with this prefix; return whether one was active."""
    result = await conn.execute(
        update(api_keys)
        .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)


@dataclass(frozen=True)
class KeyMatch:
    brand: Brand
    key_id: int
    stale_last_used: bool


async def authenticate(conn: AsyncConnection, key: str, now: dt.datetime) -> KeyMatch | None:
    """Find the active key matching `key`, or None (the caller answers the same 401 for all)."""
    prefix = _prefix(key)
    if prefix is None:
        return None
    row = (
        await conn.execute(
            select(
                api_keys.c.id,
                api_keys.c.secret_hash,
                api_keys.c.revoked_at,
                api_keys.c.last_used_at,
                brands.c.id.label("brand_id"),
                brands.c.slug,
            )
            .join(brands, brands.c.id == api_keys.c.brand_id)
            .where(api_keys.c.prefix == prefix)
        )
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(key)):
        return None
    if row.revoked_at is not None:
        return None
    stale = row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY
    return KeyMatch(Brand(row.brand_id, row.slug), row.id, stale)


async def touch_key(conn: AsyncConnection, key_id: int, now: dt.datetime) -> None:
    """Record that a key was used (callers do it at most every few minutes)."""
    await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))
