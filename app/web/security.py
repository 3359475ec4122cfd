"""Headers every shopper-facing response carries, and the signed form tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

NONCE_PLACEHOLDER = "__WA_NONCE__"


def new_nonce() -> str:
    """Return a fresh CSP nonce (128 random bits)."""
    return secrets.token_urlsafe(16)


def page_headers(nonce: str, frame_ancestors: Sequence[str]) -> dict[str, str]:
    """Headers for an HTML page: CSP with the response's nonce, no referrer, no indexing."""
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            "style-src 'self'",
            "img-src 'self' https: data:",
            "connect-src 'self'",
            "font-src 'self' https:",
            "form-action 'self'",
            "base-uri 'none'",
            f"frame-ancestors {ancestors}",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Robots-Tag": "noindex, nofollow",
    }


def plain_headers() -> dict[str, str]:
    """Headers for non-HTML shopper responses (JSON, CSS, event streams)."""
    return {
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Robots-Tag": "noindex, nofollow",
    }


class Signer:
    """Signs and checks short-lived form tokens with the service's secret."""

    def __init__(self, secret: str) -> None:
        self._key = (secret or secrets.token_hex(32)).encode()

    def _mac(self, purpose: str, issued: int) -> str:
        message = f"{purpose}|{issued}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def token(self, purpose: str) -> str:
        """Make a token for a form bound to `purpose` (e.g. the tracking token)."""
        issued = int(time.time())
        return f"{issued}.{self._mac(purpose, issued)}"

    def check(self, purpose: str, token: str, max_age: int = 86_400) -> bool:
        """Whether `token` was made for `purpose` by this secret in the last `max_age` seconds."""
        issued_text, _, mac = token.partition(".")
        if not issued_text.isdigit():
            return False
        issued = int(issued_text)
        if not 0 <= time.time() - issued <= max_age:
            return False
        return hmac.compare_digest(mac, self._mac(purpose, issued))
