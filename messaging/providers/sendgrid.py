"""Send email through SendGrid's v3 Mail Send API, and look up a send whose answer was lost.

The sendgrid library's `Mail` helpers build the JSON body; the provider's HttpClient (see
messaging.providers.http) posts it. Categories and custom_args reach SendGrid's event webhook
and its dashboards, so they carry only our message id and trigger names, never personal data.

A lookup (`find_email`) asks the Email Activity API (`GET /v3/messages`) for the messages whose
custom argument names ours: `query=unique_args['whereabouts_message_id']="<id>"`. That API is a
paid add-on: without it SendGrid answers 400 ("authorization required") or 403 ("access
forbidden"), and every 4xx but 429 means this account cannot look up (permanent). Its feed lags
the sends by minutes, so a lookup soon after a send may miss it: callers wait first.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sendgrid.helpers.mail import Category, CustomArg, From, Header, Mail, ReplyTo, To
from sendgrid.helpers.mail import Email as Address
from sendgrid.helpers.mail.exceptions import SendGridException

from messaging.providers import parse_retry_after, redact, require
from messaging.providers.base import Accepted, Attempt, Email, ProviderError, Sighting
from messaging.providers.http import KEEPALIVE_SECONDS, Answer, HttpClient

if TYPE_CHECKING:
    from app.settings import Settings

MESSAGE_ID_ARG = "whereabouts_message_id"
# Trigger-style names only, so an address or a name cannot slip into SendGrid's analytics.
_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")
# One send to one recipient is one message in the activity feed; a few more leave room for
# another installation that shares the account (their ids can repeat ours).
_LOOKUP_LIMIT = 10
# An address that email.utils.parseaddr gives back whole and without a name (checked by a
# property test): the helper's parse of it, half the cost of building a payload, can be skipped.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)
# The body's exact bytes: compact, UTF-8 as is, no NaN. One encoder, not one per send.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class SendGridProvider:
    """Send each Email as one v3 mail send, tagged with our message id."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.sendgrid.com",
        timeout: float = 15.0,
        *,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v3/mail/send"
        self._activity_url = base_url.rstrip("/") + "/v3/messages"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._http = HttpClient("SendGrid", timeout, keepalive_seconds=keepalive_seconds)

    async def send_email(self, email: Email) -> Accepted:
        """Post the mail; raise ProviderError when SendGrid does not take it."""
        body = _JSON.encode(build_payload(email)).encode()
        answer = await self._http.request("POST", self._url, body, self._headers)
        if not answer.is_success:
            raise _status_error(answer)
        provider_id = answer.headers.get("X-Message-Id") or f"sendgrid-{email.message_id}"
        return Accepted(provider_id)

    async def find_email(self, attempt: Attempt) -> list[Sighting]:
        """List the activity feed's messages with our id and the same address, oldest first."""
        query = f"unique_args['{MESSAGE_ID_ARG}']=\"{attempt.message_id}\""
        url = self._activity_url + "?" + urlencode({"query": query, "limit": _LOOKUP_LIMIT})
        answer = await self._http.request(
            "GET", url, b"", {"Authorization": self._headers["Authorization"]}
        )
        if not answer.is_success:
            raise _lookup_error(answer)
        try:
            listed = answer.json()["messages"]
            found = [
                _sighting(item)
                for item in listed
                if str(item["to_email"]).lower() == attempt.to.lower()
                and (_when(item) or attempt.since) >= attempt.since
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                "SendGrid's activity answer could not be read", code="bad_response"
            ) from exc
        found.sort(key=lambda sighting: sighting.at or attempt.since)
        return found

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()


def build_payload(email: Email) -> dict[str, Any]:
    """Build the v3 mail send body; raise a permanent ProviderError for an unsendable email."""
    unsafe = [category for category in email.categories if not _CATEGORY.fullmatch(category)]
    if unsafe or len(email.categories) > 10:
        raise ProviderError(
            "categories must be at most 10 short names (letters, digits, _ . : -)",
            code="sendgrid:categories",
            permanent=True,
        )
    try:
        mail = Mail(
            from_email=_address(From, email.from_email, email.from_name),
            to_emails=_address(To, email.to),
            subject=email.subject,
            plain_text_content=email.text or None,
            html_content=email.html or None,
        )
        # Mail puts each new category first: add them backwards to keep the caller's order.
        mail.category = [Category(category) for category in reversed(email.categories)]
        mail.custom_arg = CustomArg(MESSAGE_ID_ARG, str(email.message_id))
        mail.header = [Header(key, value) for key, value in email.headers.items()]
        if email.reply_to:
            mail.reply_to = _address(ReplyTo, email.reply_to)
        payload: dict[str, Any] = mail.get()
    except SendGridException as exc:
        # The library refuses content that contains a SendGrid API key, among others.
        raise ProviderError(type(exc).__name__, code="sendgrid:invalid", permanent=True) from exc
    except (KeyError, ValueError, TypeError) as exc:
        # An address the helper cannot read ("no-at" raises KeyError): nothing has left, and
        # trying again would not help.
        raise ProviderError(
            "an address could not be read", code="sendgrid:invalid", permanent=True
        ) from exc
    return payload


def _address(kind: type[Address], address: str, name: str = "") -> Any:
    """Make `kind(address, name or None)`, skipping the helper's parse of a plain address."""
    if name or not _PLAIN_ADDRESS.fullmatch(address):
        return kind(address, name or None)
    made = kind()
    made.email = address
    return made


def _status_error(answer: Answer) -> ProviderError:
    """Map a SendGrid error answer: 429, 408 and 5xx retry, 401/403 retry, other 4xx are final."""
    status = answer.status
    detail = redact(_first_error(answer) or answer.reason or f"HTTP {status}")
    if status in (401, 403):
        # A key an operator fixes; the attempt limit ends it if nobody does.
        return ProviderError(detail, code="sendgrid:auth")
    if status == 429:
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = _until_reset(answer.headers.get("X-RateLimit-Reset"))
        return ProviderError(detail, code="sendgrid:429", retry_after=retry_after)
    if status == 408 or status >= 500:
        return ProviderError(detail, code=f"sendgrid:{status}")
    return ProviderError(detail, code=f"sendgrid:{status}", permanent=True)


def _lookup_error(answer: Answer) -> ProviderError:
    """Map an activity feed error: 401, 429 and 5xx as for a send; other 4xx: no lookups here."""
    error = _status_error(answer)
    if answer.status in (401, 429) or answer.status >= 500:
        return error
    detail = f"the Email Activity API is not available ({answer.status}: {error.detail})"
    return ProviderError(detail, code="sendgrid:no-activity", permanent=True)


def _sighting(item: dict[str, Any]) -> Sighting:
    """Read one message of the activity feed; its msg_id up to the first dot is the X-Message-Id."""
    msg_id = str(item["msg_id"])
    return Sighting(
        provider_id=msg_id.partition(".")[0] or msg_id,
        status=str(item.get("status") or ""),
        at=_when(item),
    )


def _when(item: dict[str, Any]) -> dt.datetime | None:
    """Read last_event_time (ISO 8601, UTC)."""
    try:
        when = dt.datetime.fromisoformat(str(item.get("last_event_time")))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _first_error(answer: Answer) -> str | None:
    try:
        errors = answer.json()["errors"]
        return str(errors[0]["message"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _until_reset(value: str | None) -> float | None:
    """Read X-RateLimit-Reset (a Unix time) as seconds from now."""
    try:
        reset = float(value or "")
    except ValueError:
        return None
    return max(0.0, reset - time.time()) if math.isfinite(reset) else None


def from_settings(settings: Settings) -> SendGridProvider:
    """Build the provider from SENDGRID_* settings."""
    return SendGridProvider(
        require("SENDGRID_API_KEY", settings.sendgrid_api_key, "sendgrid"),
        settings.sendgrid_base_url,
        settings.send_timeout_seconds,
    )
