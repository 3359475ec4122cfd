"""A shopper's SMS reply, simulated: the inbound webhook Twilio would send, correctly signed.

`whereabouts sms reply --from +14155550005 --body 2` posts it to a running service and prints
the TwiML answer, so the choice flow can be tried without a phone or a Twilio account. The
signature covers PUBLIC_URL plus the path, as the service checks it, whatever address the
request is actually sent to (`--url`). Without TWILIO_AUTH_TOKEN both sides fall back to
DEMO_AUTH_TOKEN, which `whereabouts demo` sets for the service it runs.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass

import httpx
from twilio.request_validator import RequestValidator

from app.settings import Settings

INBOUND_PATH = "/hooks/twilio/inbound"
# Known to everyone, so only for the local demo: a real deployment sets TWILIO_AUTH_TOKEN.
DEMO_AUTH_TOKEN = "whereabouts-demo-twilio-auth-token"  # noqa: S105
DEMO_ACCOUNT_SID = "AC" + "0" * 32
DEMO_TO = "+15005550006"  # Twilio's test number, when neither TWILIO_FROM nor --to says one


@dataclass(frozen=True)
class SignedReply:
    """The form Twilio would post, and the X-Twilio-Signature that goes with it."""

    params: dict[str, str]
    signature: str


def auth_token(settings: Settings) -> str:
    """Return the token replies are signed with: the configured one, else the demo's."""
    return settings.twilio_auth_token or DEMO_AUTH_TOKEN


def sign_reply(
    settings: Settings, from_number: str, body: str, to_number: str | None = None
) -> SignedReply:
    """Build an inbound SMS form as Twilio sends it, signed for PUBLIC_URL."""
    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": settings.twilio_account_sid or DEMO_ACCOUNT_SID,
        "From": from_number,
        "To": to_number or settings.twilio_from or DEMO_TO,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    params["SmsSid"] = params["SmsMessageSid"] = params["MessageSid"]
    url = settings.public_url + INBOUND_PATH
    signature = RequestValidator(auth_token(settings)).compute_signature(url, params)
    return SignedReply(params, signature)


def send_reply(
    settings: Settings,
    from_number: str,
    body: str,
    *,
    to_number: str | None = None,
    url: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Response:
    """Post a signed reply to the service (at `url`, else PUBLIC_URL) and return its answer."""
    signed = sign_reply(settings, from_number, body, to_number)
    base = (url or settings.public_url).rstrip("/")
    with httpx.Client(transport=transport, timeout=10.0) as http:
        return http.post(
            base + INBOUND_PATH,
            data=signed.params,
            headers={"X-Twilio-Signature": signed.signature},
        )


def run(
    settings: Settings, from_number: str, body: str, to_number: str | None, url: str | None
) -> int:
    """Send the reply, print the TwiML answer; return the command's exit status."""
    try:
        response = send_reply(settings, from_number, body, to_number=to_number, url=url)
    except httpx.HTTPError as exc:
        print(f"whereabouts: cannot reach the service: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(f"whereabouts: the service answered {response.status_code}", file=sys.stderr)
        if response.status_code == 403:
            print(
                "  (the signature was refused: run the service and this command with the same "
                "PUBLIC_URL and TWILIO_AUTH_TOKEN)",
                file=sys.stderr,
            )
        return 1
    print(response.text)
    return 0
