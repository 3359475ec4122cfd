"""What every provider takes and gives back, and how it fails.

ProviderError              a send (or a lookup) did not go through
 ├─ permanent=True         never retried (an invalid number, an opted-out number, a 4xx);
 │                         for a lookup: this provider cannot look messages up at all
 ├─ permanent=False        retried with backoff (429, 5xx, a connection that never opened);
 │                         `retry_after` carries the provider's Retry-After in seconds
 └─ unknown=True           the request may have arrived (the reply never came back): the
                           message is marked `unknown`, never blindly sent again

A send marked `unknown` is settled by the provider's status report or by a lookup: each
provider's `find_email` / `find_sms` takes the `Attempt` we made and lists what the provider
holds that fits it (`Sighting`s, oldest first). An empty list means the provider can look and
has none of it; a ProviderError means it cannot tell.
"""

from __future__ import annotations

import datetime as dt
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


@dataclass(frozen=True)
class Attempt:
    """A send whose answer was lost, as far as we know it, to look it up by."""

    message_id: int
    to: str
    since: dt.datetime  # the request left no earlier than this (clock skew allowed for)
    until: dt.datetime | None = None  # ... and no later than this
    body: str = ""  # SMS: the text exactly as sent
    subject: str = ""  # email
    from_number: str | None = None  # SMS: the message's own sender, as in Sms
    messaging_service_sid: str | None = None


@dataclass(frozen=True)
class Sighting:
    """A message the provider holds that fits an Attempt: its id and the provider's status."""

    provider_id: str
    status: str  # the provider's own word (Twilio's status, SendGrid's activity status)
    at: dt.datetime | None = None  # when the provider took it, as near as it says
    error_code: str | None = None
    error_detail: str | None = None
    # False: everything fits but the content (the provider may have rewritten it): not ours
    # for sure, and not proof that ours never arrived either.
    exact: bool = True


class ProviderError(Exception):
    """A send (or a lookup) that did not go through; see the module docstring for the kinds."""

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

    async def find_email(self, attempt: Attempt) -> list[Sighting]: ...

    async def aclose(self) -> None: ...


class SmsProvider(Protocol):
    name: str

    async def send_sms(self, sms: Sms) -> Accepted: ...

    async def find_sms(self, attempt: Attempt) -> list[Sighting]: ...

    async def aclose(self) -> None: ...
