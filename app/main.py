"""The app factory: `create_app(settings)` builds the whole service and wires it explicitly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

from sqlalchemy import select
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from app import __version__
from app.api.endpoint import routes as api_routes
from app.api.openapi import build_document
from app.api.problems import PROBLEM_TYPES, NotFound, Problem
from app.api.routes import ENDPOINTS, PREFIX
from app.services import Clock, Services, utc_now
from app.settings import Settings
from app.storage.database import Database
from app.storage.migrate import migrate
from app.storage.schema import orders

log = logging.getLogger("whereabouts")


class State(TypedDict):
    services: Services


def create_app(
    settings: Settings, *, clock: Clock = utc_now, migrate_on_start: bool = False
) -> Starlette:
    """Build the ASGI app; the database opens and closes with the app's lifespan."""
    openapi = build_document(ENDPOINTS, PREFIX, __version__)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        db = Database(
            settings.database_url,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            pool_size=settings.db_pool_size,
        )
        try:
            if migrate_on_start:
                await migrate(db)
            yield {"services": Services(settings=settings, db=db, clock=clock)}
        finally:
            await db.close()

    async def openapi_document(request: Request) -> Response:
        return JSONResponse(openapi)

    async def problem_page(request: Request) -> Response:
        code = request.path_params["code"]
        if code not in PROBLEM_TYPES:
            return PlainTextResponse("No such problem type.", status_code=404)
        return PlainTextResponse(f"{code}: {PROBLEM_TYPES[code]}\n")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def tracking(request: Request) -> Response:
        # Placeholder until the tracking page lands: the order's public facts, nothing personal.
        services: Services = request.state.services
        token = request.path_params["token"]
        async with services.db.read() as conn:
            row = (
                await conn.execute(
                    select(orders.c.number, orders.c.version).where(
                        orders.c.tracking_token == token
                    )
                )
            ).first()
        if row is None:
            return NotFound("No such tracking link.").response()
        return JSONResponse({"order": row.number, "version": row.version})

    routes: list[BaseRoute] = [
        Route(PREFIX + "/openapi.json", openapi_document, methods=["GET"]),
        *api_routes(ENDPOINTS, PREFIX),
        Route("/problems/{code}", problem_page, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/t/{token}", tracking, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return NotFound("No such endpoint.").response()
        if exc.status_code == 405:
            problem = Problem(
                "This method is not allowed here.", code="method-not-allowed", status=405
            )
            problem.headers.update(exc.headers or {})
            return problem.response()
        return Problem(exc.detail, status=exc.status_code).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return Problem("Something went wrong on our side; nothing was changed.").response()

    handlers: dict[Any, Any] = {HTTPException: http_error, Exception: server_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
