"""Send SMS through Twilio's Messages API.

The twilio library builds each request (form fields, Basic auth, the account's Messages URL) and
reads the message resource; `_Transport`, its async HTTP client, carries the requests to
`base_url` in place of https://api.twilio.com over the provider's HttpClient (see
messaging.providers.http). twilio's own AsyncTwilioHttpClient is not used: it keeps no
Retry-After and builds its aiohttp session outside a running loop. The transport also maps
failures to ProviderError: only it can tell a request that never left from an answer that never
came, and only it sees Retry-After (the library's own exception keeps no headers).

Phone numbers and bodies are never logged, and are removed from Twilio's error texts.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from messaging.providers import parse_retry_after, redact, require
from messaging.providers.base import Accepted, ProviderError, Sms
from messaging.providers.http import KEEPALIVE_SECONDS, Answer, HttpClient

if TYPE_CHECKING:
    from app.settings import Settings

_logger = logging.getLogger(__name__)


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
                **self._sender(sms),
            )
        except ValueError as exc:
            # A 2xx whose body is not a message resource: Twilio took something, we lack its SID.
            raise _unreadable() from exc
        if not message.sid:
            raise _unreadable()
        return Accepted(str(message.sid))

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()

    def _sender(self, sms: Sms) -> dict[str, str]:
        """Choose the sender: the message's own over the defaults, a Messaging Service over From."""
        service, number = sms.messaging_service_sid, sms.from_number
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
        url = self._base_url + urlsplit(uri).path
        if params:
            url += "?" + urlencode(params, doseq=True)
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = self._basic(auth)
        body = urlencode(data or {}, doseq=True).encode()
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
