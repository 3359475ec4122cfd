"""The app factory: `create_app(settings)` builds the whole service and wires it explicitly."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict

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
from app.settings import Settings, provider_warnings
from app.storage import changes
from app.storage.database import Database, async_url
from app.storage.instance import LINK_SECRET, shared_secret
from app.storage.migrate import migrate
from app.web import devhooks, devinbox, hooks, sms
from app.web.pages import Pages
from app.web.security import Signer
from app.web.tracking import routes as web_routes
from messaging.dispatch import Dispatcher

log = logging.getLogger("whereabouts")


class State(TypedDict):
    services: Services
    pages: Pages
    signer: Signer
    link_secret: str
    dev_webhooks: deque[dict[str, Any]]


def _asyncpg_dsn(settings: Settings) -> str:
    """The database URL in the plain form asyncpg's own connect() takes."""
    url = async_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


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
        stop = asyncio.Event()
        watcher: asyncio.Task[None] | None = None
        sender: asyncio.Task[None] | None = None
        dispatcher: Dispatcher | None = None
        try:
            if migrate_on_start:
                await migrate(db)
            for warning in provider_warnings(settings):
                log.warning(warning)
            # One secret for form tokens and message links, shared with every worker and web
            # process (through the database when SECRET_KEY is not set) and across restarts.
            link_secret = settings.secret_key or await shared_secret(db, LINK_SECRET, clock())
            services = Services(settings=settings, db=db, clock=clock)
            pages = Pages(services)
            services.hub.add_listener(pages.on_change)
            db.on_commit.append(services.hub.publish)
            if db.is_sqlite:
                watch = changes.watch_sqlite(db, services.hub, stop, settings.change_poll_seconds)
            else:
                watch = changes.watch_postgres(_asyncpg_dsn(settings), services.hub, stop)
            watcher = asyncio.create_task(watch)
            if settings.run_worker:
                dispatcher = Dispatcher(db, settings, clock, link_secret=link_secret)
                sender = asyncio.create_task(dispatcher.run(stop))
            yield {
                "services": services,
                "pages": pages,
                "signer": Signer(link_secret),
                "link_secret": link_secret,
                "dev_webhooks": deque(maxlen=100),
            }
        finally:
            stop.set()
            if watcher is not None:
                await watcher
            if sender is not None and dispatcher is not None:
                await sender
                await dispatcher.release()
                await dispatcher.aclose()
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

    # Shopper pages first: they take most requests, and no API path looks like them.
    routes: list[BaseRoute] = [
        *web_routes(),
        *hooks.routes(),
        *sms.routes(),
        *devinbox.routes(),
        *devhooks.routes(),
        Route(PREFIX + "/openapi.json", openapi_document, methods=["GET"]),
        *api_routes(ENDPOINTS, PREFIX),
        Route("/problems/{code}", problem_page, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
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
