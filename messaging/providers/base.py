"""What every provider takes and gives back, and how it fails.

ProviderError              a send did not go through
 ├─ permanent=True         never retried (an invalid number, an opted-out number, a 4xx)
 ├─ permanent=False        retried with backoff (429, 5xx, a connection that never opened);
 │                         `retry_after` carries the provider's Retry-After in seconds
 └─ unknown=True           the request may have arrived (the reply never came back): the
                           message is marked `unknown`, never blindly sent again
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Email:
    """One rendered email to one address."""

    message_id: int  # ours: carried in custom_args so event webhooks find the row
    to: str
    from_email: str
    from_name: str
    subject: str
    text: str
    html: str
    categories: tuple[str, ...] = ()  # e.g. ("whereabouts", "eta_changed"); never personal data
    headers: dict[str, str] = field(default_factory=dict)  # List-Unsubscribe and friends
    reply_to: str | None = None


@dataclass(frozen=True)
class Sms:
    """One rendered SMS to one E.164 number."""

    message_id: int
    to: str
    body: str
    status_callback: str  # PUBLIC_URL + /hooks/twilio/status/<message id>
    from_number: str | None = None
    messaging_service_sid: str | None = None


@dataclass(frozen=True)
class Accepted:
    """The provider took the message; `state` is what our row becomes."""

    provider_id: str
    state: str = "sent"


class ProviderError(Exception):
    """A send that did not go through; see the module docstring for the three kinds."""

    def __init__(
        self,
        detail: str,
        *,
        code: str,
        permanent: bool = False,
        retry_after: float | None = None,
        unknown: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.permanent = permanent
        self.retry_after = retry_after
        self.unknown = unknown


class EmailProvider(Protocol):
    name: str

    async def send_email(self, email: Email) -> Accepted: ...

    async def aclose(self) -> None: ...


class SmsProvider(Protocol):
    name: str

    async def send_sms(self, sms: Sms) -> Accepted: ...

    async def aclose(self) -> None: ...
