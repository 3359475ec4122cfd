"""RFC 9457 problem details: the one shape every API error takes.

Exception tree::

    Problem                     any error the API answers with problem+json
    ├── Unauthorized            401, the same body for unknown, malformed and revoked keys
    ├── NotFound                404, also for another brand's objects
    ├── Conflict                409
    ├── PayloadTooLarge         413
    ├── UnsupportedMediaType    415
    ├── InvalidFields           422 with the path of each invalid field
    └── RateLimited             429 with Retry-After
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

PROBLEM_BASE = "/problems/"

# Stable type codes and their titles; `type` is PROBLEM_BASE + code.
PROBLEM_TYPES: dict[str, str] = {
    "unauthorized": "Missing or invalid API key",
    "not-found": "No such resource",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflicts with the current state",
    "quantity-exceeded": "More units than the order line holds",
    "idempotency-key-in-use": "Idempotency key is being used by a request in progress",
    "idempotency-key-reused": "Idempotency key was used with a different request",
    "payload-too-large": "Request body too large",
    "unsupported-media-type": "Request body must be JSON",
    "invalid-json": "Request body is not valid JSON",
    "invalid-fields": "Some fields are invalid",
    "invalid-parameter": "A query or path parameter is invalid",
    "unknown-sku": "Unknown SKU",
    "unknown-line": "Unknown order line",
    "rate-limited": "Too many requests",
    "internal-error": "Internal error",
}


class Problem(Exception):
    """An error the API reports as problem+json."""

    status = 500
    code = "internal-error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        self.status = status or self.status
        self.code = code or self.code
        if self.code not in PROBLEM_TYPES:
            raise ValueError(f"undeclared problem code {self.code!r}")
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions
        super().__init__(detail or PROBLEM_TYPES[self.code])

    def body(self) -> dict[str, Any]:
        """Return the problem document."""
        doc: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": PROBLEM_TYPES[self.code],
            "status": self.status,
        }
        if self.detail:
            doc["detail"] = self.detail
        doc.update(self.extensions)
        return doc

    def response(self) -> Response:
        """Render as an HTTP response."""
        return Response(
            json.dumps(self.body(), separators=(",", ":")),
            status_code=self.status,
            media_type="application/problem+json",
            headers=self.headers,
        )


class Unauthorized(Problem):
    status, code = 401, "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "Send a valid API key as `Authorization: Bearer <key>`.",
            headers={"WWW-Authenticate": 'Bearer realm="whereabouts"'},
        )


class NotFound(Problem):
    status, code = 404, "not-found"


class Conflict(Problem):
    status, code = 409, "conflict"


class PayloadTooLarge(Problem):
    status, code = 413, "payload-too-large"


class UnsupportedMediaType(Problem):
    status, code = 415, "unsupported-media-type"


class InvalidFields(Problem):
    """422 listing each invalid field as {"path": "lines[0].quantity", "message": ...}."""

    status, code = 422, "invalid-fields"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        super().__init__(detail or f"{len(errors)} invalid field(s)", errors=errors)


class RateLimited(Problem):
    status, code = 429, "rate-limited"


def field_error(path: str, message: str) -> InvalidFields:
    """Build a 422 for one field."""
    return InvalidFields([{"path": path, "message": message}])


def pydantic_path(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as `lines[0].quantity`."""
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"
