"""What the app factory builds once and hands to every request through lifespan state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from app.settings import Settings
from app.storage.changes import ChangeHub
from app.storage.database import Database

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Return the current time in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    clock: Clock
    hub: ChangeHub = field(default_factory=ChangeHub)

    def tracking_url(self, token: str) -> str:
        """Return the public tracking-page address for a tracking token."""
        return f"{self.settings.public_url}/t/{token}"
