"""Secrets the service makes for itself, kept in the database so every process shares them.

Without SECRET_KEY, a key made per process would break what one process signs and another
reads: an unsubscribe link made by a worker, a form token made by one web process and posted
to another, every link in yesterday's mail after a restart. The first process to ask stores a
random key; every later one reads the same.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import select

from app.storage.database import Database
from app.storage.dialect import insert_ignore
from app.storage.schema import instance_secrets

LINK_SECRET = "link_signing"  # noqa: S105 (the name of a row, not a secret)


async def shared_secret(db: Database, name: str, now: dt.datetime) -> str:
    """Return the secret called `name`, making it (once, for every process) if it is new."""
    async with db.read() as conn:
        found = (
            await conn.execute(
                select(instance_secrets.c.value).where(instance_secrets.c.name == name)
            )
        ).scalar_one_or_none()
    if found is not None:
        return str(found)
    async with db.write() as conn:
        # Two processes starting together: the first insert wins and both read it back.
        await conn.execute(
            insert_ignore(conn, instance_secrets, ["name"]).values(
                name=name, value=secrets.token_hex(32), created_at=now
            )
        )
        value = (
            await conn.execute(
                select(instance_secrets.c.value).where(instance_secrets.c.name == name)
            )
        ).scalar_one()
    return str(value)
