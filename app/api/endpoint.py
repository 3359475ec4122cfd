"""How an API endpoint is declared and run.

An `Endpoint` names its method, path, body and response models; `route()` turns it into a
Starlette route that authenticates, enforces the body's media type and size, validates it,
opens the right transaction (reads share a snapshot, writes go through the single write path),
applies `Idempotency-Key` on POST and renders every error as problem+json. The OpenAPI document
is generated from the same declarations.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, StringConstraints, TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import idempotency
from app.api.keys import Brand, authenticate, touch_key
from app.api.models import Ref, Sku, control_character_paths
from app.api.problems import (
    Conflict,
    InvalidFields,
    PayloadTooLarge,
    Problem,
    Unauthorized,
    UnsupportedMediaType,
    pydantic_path,
)
from app.services import Services

log = logging.getLogger("whereabouts.api")


@dataclass(frozen=True)
class QueryParam:
    name: str
    description: str
    schema: dict[str, Any]


@dataclass
class Call:
    """What a handler gets: the brand, an open connection, the validated body, path values."""

    request: Request
    services: Services
    brand: Brand
    conn: AsyncConnection
    body: Any
    path: dict[str, str]
    now: dt.datetime

    def query(self, name: str) -> str | None:
        """Return a query-string value."""
        return self.request.query_params.get(name)


@dataclass
class Reply:
    body: BaseModel | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    status: int = 200
    writes: bool = False
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()
    tag: str = "orders"

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def _json_media_type(value: str | None) -> bool:
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise Problem(
                "Content-Length is not a number", code="invalid-parameter", status=400
            ) from None
        if too_big:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _validate(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise Problem(
                "The body is not valid JSON: " + errors[0]["msg"], code="invalid-json", status=400
            ) from None
        raise InvalidFields(
            [{"path": pydantic_path(error["loc"]), "message": error["msg"]} for error in errors]
        ) from None
    controls = control_character_paths(raw)
    if controls:
        message = "control characters are not allowed"
        raise InvalidFields([{"path": path, "message": message} for path in controls])
    return body


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


def _render(reply: Reply) -> tuple[int, str]:
    if reply.body is None:
        return reply.status, ""
    return reply.status, reply.body.model_dump_json()


def routes(endpoints: Iterable[Endpoint], prefix: str) -> list[Route]:
    """Build one Starlette route per path, running the endpoint that matches the method.

    One route per path (not per endpoint) lets a 405 list every method the path allows.
    """
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint
    return [
        Route(prefix + path, _dispatcher(methods), methods=list(methods))
        for path, methods in by_path.items()
    ]


def _dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        try:
            return await _run(methods[method], request, request.state.services)
        except Problem as problem:
            return problem.response()

    return run


_PATH_VALUES: dict[str, TypeAdapter[str]] = {
    "number": TypeAdapter(Ref),
    "ref": TypeAdapter(Ref),
    "sku": TypeAdapter(Sku),
    # Our own numeric ids (webhook endpoints, deliveries, messages); handlers answer 404 for
    # anything that is not one of the caller's.
    "id": TypeAdapter(Ref),
    "delivery_id": TypeAdapter(Ref),
    # A message template part: "<trigger>.<channel>.<part>", or a shared "_partial…".
    "name": TypeAdapter(
        Annotated[str, StringConstraints(pattern=r"^_?[a-z_]{1,40}\.[a-z]{3,5}\.[a-z]{3,7}$")]
    ),
}


def _path_values(request: Request) -> dict[str, str]:
    values: dict[str, str] = {}
    errors = []
    for name, raw in request.path_params.items():
        try:
            values[name] = _PATH_VALUES[name].validate_python(raw)
        except ValidationError as exc:
            errors.append({"path": name, "message": exc.errors()[0]["msg"]})
    if errors:
        raise Problem(
            "A value in the URL is not a valid identifier.",
            code="invalid-parameter",
            status=400,
            errors=errors,
        )
    return values


async def _run(endpoint: Endpoint, request: Request, services: Services) -> Response:
    db = services.db
    now = services.clock()
    token = _bearer(request)
    async with db.read() as conn:
        match = await authenticate(conn, token, now)
    if match is None:
        raise Unauthorized()
    path = _path_values(request)
    if match.stale_last_used:
        async with db.write() as conn:
            await touch_key(conn, match.key_id, now)

    raw = b""
    body: BaseModel | None = None
    if endpoint.body is not None:
        if not _json_media_type(request.headers.get("content-type")):
            raise UnsupportedMediaType("Send the body as application/json.")
        raw = await _read_body(request, services.settings.api_max_body_bytes)
        body = _validate(endpoint.body, raw)

    key = request.headers.get("idempotency-key") if endpoint.method == "POST" else None
    try:
        if not endpoint.writes:
            async with db.read() as conn:
                reply = await endpoint.handler(
                    Call(request, services, match.brand, conn, body, path, now)
                )
            status, text = _render(reply)
            return _response(status, text, reply.headers)
        async with db.write() as conn:
            if key is not None:
                fingerprint = idempotency.request_fingerprint(
                    endpoint.method, request.url.path, raw
                )
                stored = await idempotency.claim(
                    conn,
                    match.brand.id,
                    key,
                    fingerprint,
                    now,
                    dt.timedelta(hours=services.settings.idempotency_ttl_hours),
                )
                if stored is not None:
                    return _response(stored.status, stored.body, {"Idempotent-Replayed": "true"})
            reply = await endpoint.handler(
                Call(request, services, match.brand, conn, body, path, now)
            )
            status, text = _render(reply)
            if key is not None:
                await idempotency.store(conn, match.brand.id, key, status, text)
        return _response(status, text, reply.headers)
    except DBAPIError as exc:
        # Deadlocks and serialization failures on PostgreSQL: nothing was kept; a retry works.
        if getattr(exc.orig, "sqlstate", None) not in ("40P01", "40001") and not isinstance(
            exc, IntegrityError
        ):
            raise
        # A constraint the handler did not foresee (usually a concurrent writer), a deadlock or
        # a serialization failure: the transaction rolled back, nothing was kept.
        log.warning(
            "write conflict on %s %s: %s", endpoint.method, endpoint.path, type(exc.orig).__name__
        )
        raise Conflict(
            "The change conflicts with data written at the same time; retry it."
        ) from None


def _response(status: int, text: str, headers: dict[str, str]) -> Response:
    if not text:
        return Response(status_code=status, headers=headers)
    return Response(text, status_code=status, media_type="application/json", headers=headers)
