"""The dev inbox: sends nothing, since every rendered message is already kept in the messages
table and `/dev/inbox` shows it. It keeps no record of its own, so it cannot look a message up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from messaging.providers.base import Accepted, Attempt, Email, ProviderError, Sighting, Sms

if TYPE_CHECKING:
    from app.settings import Settings


class DevInbox:
    """Accept every email and SMS at once, as delivered, without any network."""

    name = "dev"

    async def send_email(self, email: Email) -> Accepted:
        """Mark the email delivered."""
        return Accepted(f"dev-{email.message_id}", state="delivered")

    async def send_sms(self, sms: Sms) -> Accepted:
        """Mark the SMS delivered."""
        return Accepted(f"dev-{sms.message_id}", state="delivered")

    async def find_email(self, attempt: Attempt) -> list[Sighting]:
        """Refuse: the dev inbox keeps no record of what it took."""
        raise _no_lookup()

    async def find_sms(self, attempt: Attempt) -> list[Sighting]:
        """Refuse: the dev inbox keeps no record of what it took."""
        raise _no_lookup()

    async def aclose(self) -> None:
        """Hold nothing to close."""


def _no_lookup() -> ProviderError:
    return ProviderError(
        "the dev inbox keeps no record to look up", code="dev:no-lookup", permanent=True
    )


def from_settings(settings: Settings) -> DevInbox:
    """Build the dev inbox (it needs no settings)."""
    return DevInbox()
