"""Creating brands (from the CLI and the demo)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.schema import brands

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Paths of our own that a brand slug must not shadow (`/{brand}/track`).
RESERVED_SLUGS = frozenset(
    {"api", "t", "static", "dev", "problems", "healthz", "themes", "hooks", "u", "b", "s"}
)


class BrandError(ValueError):
    """The brand cannot be created as asked."""


async def create_brand(
    conn: AsyncConnection, slug: str, name: str, now: dt.datetime, **options: Any
) -> int:
    """Create a brand and return its id."""
    if not SLUG.match(slug) or slug in RESERVED_SLUGS:
        raise BrandError(f"invalid slug {slug!r}: lowercase letters, digits and dashes")
    if not name.strip():
        raise BrandError("a brand needs a name")
    exists = (await conn.execute(select(brands.c.id).where(brands.c.slug == slug))).first()
    if exists:
        raise BrandError(f"brand {slug!r} already exists")
    result = await conn.execute(
        brands.insert()
        .values(slug=slug, name=name.strip(), created_at=now, updated_at=now, **options)
        .returning(brands.c.id)
    )
    return int(result.scalar_one())


async def brand_id(conn: AsyncConnection, slug: str) -> int:
    """Return the id of the brand with this slug."""
    found = (
        await conn.execute(select(brands.c.id).where(brands.c.slug == slug))
    ).scalar_one_or_none()
    if found is None:
        raise BrandError(f"no brand {slug!r}")
    return int(found)
