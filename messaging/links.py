"""Signed links carried by messages, which name a message and nothing about its recipient.

An unsubscribe token is our message id (8 bytes) and an HMAC-SHA256 of it truncated to 128
bits, in URL-safe base64 without padding: 32 characters. It is made by whichever process sends
the mail and read by whichever serves `/u/<token>`, so both must share the key: `SECRET_KEY`,
or with none set the random key `create_app` makes per start (then links only work in that
process, with its in-process worker, until it restarts: fine for the demo only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_ID_BYTES = 8
_MAC_BYTES = 16
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")
_PURPOSE = b"whereabouts/unsubscribe/v1:"


def _mac(secret_key: str, packed_id: bytes) -> bytes:
    if not secret_key:
        # Anyone could sign with an empty key: a caller without a secret is a bug.
        raise ValueError("message links need a secret key")
    digest = hmac.new(secret_key.encode(), _PURPOSE + packed_id, hashlib.sha256).digest()
    return digest[:_MAC_BYTES]


def unsubscribe_token(secret_key: str, message_id: int) -> str:
    """Make the token that lets the holder unsubscribe the address of one message."""
    packed = message_id.to_bytes(_ID_BYTES, "big")
    raw = packed + _mac(secret_key, packed)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_unsubscribe_token(secret_key: str, token: str) -> int | None:
    """Return the message id a token names, or None when it is not one we signed."""
    # 32 characters of the URL-safe alphabet are exactly 24 bytes: one spelling per token.
    if not _TOKEN_SHAPE.fullmatch(token):
        return None
    raw = base64.urlsafe_b64decode(token)
    packed, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret_key, packed)):
        return None
    return int.from_bytes(packed, "big")


def unsubscribe_url(public_url: str, secret_key: str, message_id: int) -> str:
    """Return the link (and the List-Unsubscribe target) for one message."""
    return f"{public_url.rstrip('/')}/u/{unsubscribe_token(secret_key, message_id)}"
