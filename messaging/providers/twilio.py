"""Send SMS through Twilio's Messages API, and look up a send whose answer was lost.

The twilio library builds each request (form fields, Basic auth, the account's Messages URL) and
reads the message resource; `_Transport`, its async HTTP client, carries the requests to
`base_url` in place of https://api.twilio.com over the provider's HttpClient (see
messaging.providers.http). twilio's own AsyncTwilioHttpClient is not used: it keeps no
Retry-After and builds its aiohttp session outside a running loop. The transport also maps
failures to ProviderError: only it can tell a request that never left from an answer that never
came, and only it sees Retry-After (the library's own exception keeps no headers).

Phone numbers and bodies are never logged, and are removed from Twilio's error texts.

A lookup (`find_sms`) lists the Messages to the attempt's number and keeps the outbound ones
with the same body and sender, created within the attempt's time. It does not filter on
DateSent: a Message still waiting in Twilio's queue has no date_sent yet, and a filter on it
could hide the very message we look for (which would then go twice). Past LOOKUP_LIMIT
Messages to one number it cannot tell that a message is not there, and says so.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus, urlencode, urlsplit

from twilio.base.exceptions import TwilioException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from messaging.providers import parse_retry_after, redact, require
from messaging.providers.base import Accepted, Attempt, ProviderError, Sighting, Sms
from messaging.providers.http import KEEPALIVE_SECONDS, Answer, HttpClient

if TYPE_CHECKING:
    from app.settings import Settings

_logger = logging.getLogger(__name__)
# A lookup reads at most this many Messages to one number, its whole history (two pages): far
# more than a shopper gets from every brand that shares the account.
LOOKUP_LIMIT = 200
_LOOKUP_PAGE = 100
# quote_plus's work on ASCII text as one str.translate table: the characters it always leaves
# alone stay, a space becomes +, every other character its %XX.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_FORM_ESCAPES = {
    code: chr(code) if code in _UNRESERVED else "+" if code == 32 else f"%{code:02X}"
    for code in range(128)
}


class TwilioProvider:
    """Send each Sms as one Twilio Message, with a StatusCallback back to us."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str = "https://api.twilio.com",
        timeout: float = 15.0,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        *,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._from_number = from_number
        self._messaging_service_sid = messaging_service_sid
        self._transport = _Transport(base_url, timeout, keepalive_seconds)
        self._client = Client(
            username=account_sid, password=auth_token, http_client=self._transport
        )

    async def send_sms(self, sms: Sms) -> Accepted:
        """Create the Message; raise ProviderError when Twilio does not take it."""
        try:
            message = await self._client.api.account.messages.create_async(
                to=sms.to,
                body=sms.body,
                status_callback=sms.status_callback,
                **self._sender(sms.from_number, sms.messaging_service_sid),
            )
        except ValueError as exc:
            # A 2xx whose body is not a message resource: Twilio took something, we lack its SID.
            raise _unreadable() from exc
        if not message.sid:
            raise _unreadable()
        return Accepted(str(message.sid))

    async def find_sms(self, attempt: Attempt) -> list[Sighting]:
        """List the Messages Twilio holds that fit the attempt, oldest first; see the module."""
        sender = self._sender(attempt.from_number, attempt.messaging_service_sid)
        try:
            listed = await self._client.api.account.messages.list_async(
                to=attempt.to, limit=LOOKUP_LIMIT, page_size=_LOOKUP_PAGE
            )
            fits = [message for message in listed if _fits(message, attempt, sender, body=False)]
        except (TwilioException, ValueError, TypeError, AttributeError) as exc:
            # A 2xx that is not a message list (the transport raised on any other status).
            raise ProviderError(
                "Twilio's message list could not be read", code="bad_response"
            ) from exc
        if (
            not any(message.body == attempt.body for message in fits)
            and len(listed) >= LOOKUP_LIMIT
        ):
            raise ProviderError(
                f"more than {LOOKUP_LIMIT} messages to the number: cannot tell",
                code="twilio:too-many",
                permanent=True,
            )
        fits.sort(key=lambda message: message.date_created or attempt.since)
        return [_sighting(message, exact=message.body == attempt.body) for message in fits]

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()

    def _sender(self, number: str | None, service: str | None) -> dict[str, str]:
        """Choose the sender: the message's own over the defaults, a Messaging Service over From."""
        if not service and not number:
            service, number = self._messaging_service_sid, self._from_number
        if service:
            return {"messaging_service_sid": service}
        if number:
            return {"from_": number}
        # A setup problem an operator fixes (TWILIO_FROM, or the brand's sender): retry until then.
        raise ProviderError("no From number or Messaging Service SID", code="twilio:no-sender")


class _Transport(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """The twilio library's async HTTP client: our HttpClient, a configurable origin, our errors."""

    def __init__(self, base_url: str, timeout: float, keepalive_seconds: float) -> None:
        super().__init__(_logger, True, timeout)
        self._base_url = base_url.rstrip("/")
        self._http = HttpClient("Twilio", timeout, keepalive_seconds=keepalive_seconds)
        self._authorization: tuple[tuple[str, str], str] | None = None

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (the twilio library passes it)
        allow_redirects: bool = False,  # never followed: a send is never repeated elsewhere
    ) -> Response:
        """Send one request to base_url + the path the library built; return its answer."""
        # The query of `uri` stays: a list's next page is a URI with its paging in the query.
        parts = urlsplit(uri)
        query = [parts.query] if parts.query else []
        if params:
            query.append(_form(params))
        url = self._base_url + parts.path + ("?" + "&".join(query) if query else "")
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = self._basic(auth)
        body = _form(data or {}).encode()
        answer = await self._http.request(method, url, body, headers, timeout)
        if not answer.is_success:
            raise _status_error(answer)
        return Response(answer.status, answer.text, answer.headers)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _basic(self, auth: tuple[str, str]) -> str:
        """Return the Basic Authorization header (the library passes the same pair each time)."""
        if self._authorization is None or self._authorization[0] != auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._authorization = (auth, f"Basic {token}")
        return self._authorization[1]


def _form(fields: dict[str, Any]) -> str:
    """Encode form fields exactly as urlencode(fields, doseq=True) does, in less time."""
    return urlencode(fields, doseq=True, quote_via=_quote_plus)


def _quote_plus(
    text: str | bytes,
    safe: str | bytes = "",
    encoding: str | None = None,
    errors: str | None = None,
) -> str:
    """Return quote_plus(text, ...): by table for ASCII text, which is nearly every field."""
    if isinstance(text, bytes):
        return quote_plus(text, safe)
    if text.isascii() and not (safe or encoding or errors):
        return text.translate(_FORM_ESCAPES)
    return quote_plus(text, safe, encoding, errors)


def _status_error(answer: Answer) -> ProviderError:
    """Map a Twilio error answer: 429, 408 and 5xx retry, 401/403 retry, other 4xx are final."""
    status = answer.status
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    detail = redact(str(body.get("message") or answer.reason or f"HTTP {status}"))
    code = f"twilio:{body.get('code') or status}"
    if status in (401, 403):
        # Credentials an operator fixes; the attempt limit ends it if nobody does.
        return ProviderError(detail, code="twilio:auth")
    if status == 429:
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        return ProviderError(detail, code=code, retry_after=retry_after)
    if status == 408 or status >= 500:
        return ProviderError(detail, code=code)
    return ProviderError(detail, code=code, permanent=True)


def _fits(message: Any, attempt: Attempt, sender: dict[str, str], *, body: bool = True) -> bool:
    """Tell whether a listed Message is one the attempt may have created (by its body too)."""
    if not str(message.direction or "").startswith("outbound"):
        return False
    if not message.sid or message.to != attempt.to or (body and message.body != attempt.body):
        return False
    if "messaging_service_sid" in sender:
        if message.messaging_service_sid != sender["messaging_service_sid"]:
            return False
    elif message.from_ != sender["from_"]:
        return False
    created = message.date_created
    if created is None:
        return True  # a Message without a creation time cannot be ruled out by it
    return created >= attempt.since and (attempt.until is None or created <= attempt.until)


def _sighting(message: Any, *, exact: bool = True) -> Sighting:
    return Sighting(
        exact=exact,
        provider_id=str(message.sid),
        status=str(message.status or ""),
        at=message.date_created,
        error_code=str(message.error_code) if message.error_code else None,
        error_detail=redact(str(message.error_message))[:500] if message.error_message else None,
    )


def _unreadable() -> ProviderError:
    return ProviderError("Twilio's answer had no message SID", code="bad_response", unknown=True)


def from_settings(settings: Settings) -> TwilioProvider:
    """Build the provider from TWILIO_* settings."""
    return TwilioProvider(
        require("TWILIO_ACCOUNT_SID", settings.twilio_account_sid, "twilio"),
        require("TWILIO_AUTH_TOKEN", settings.twilio_auth_token, "twilio"),
        settings.twilio_base_url,
        settings.send_timeout_seconds,
        from_number=settings.twilio_from or None,
        messaging_service_sid=settings.twilio_messaging_service_sid or None,
    )
