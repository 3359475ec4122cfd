"""Fixtures for the shopper-facing pages: the demo brand in every test's database, a real server.

Every test here starts from the demo (`app.demo.load_demo`): brand `demo` with orders D-1001 to
D-1010. On SQLite the demo is loaded once per session into a template file that each test copies;
on PostgreSQL it is loaded into each test's fresh database. The app and the `db` fixture only open
the database once the demo is in place. `server` serves the same app instance over real HTTP on
127.0.0.1, for the event stream (httpx's ASGI transport buffers whole responses).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from app.demo import DemoLoaded, load_demo
from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from tests.conftest import run_blocking
from tests.web.support import PUBLIC_URL, SECRET_KEY, Demo


def _settings(database_url: str) -> Settings:
    return Settings.from_env(
        {"DATABASE_URL": database_url, "PUBLIC_URL": PUBLIC_URL, "SECRET_KEY": SECRET_KEY}
    )


@pytest.fixture(scope="session")
def demo_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class _SqliteDemo:
    path: Path
    loaded: DemoLoaded


@pytest.fixture(scope="session")
def sqlite_demo_template(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory, demo_now: dt.datetime
) -> _SqliteDemo:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    shutil.copyfile(sqlite_template, path)
    loaded = run_blocking(lambda: load_demo(_settings(f"sqlite:///{path}"), demo_now))
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return _SqliteDemo(path, loaded)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return _settings(database_url)


@pytest.fixture
async def demo(settings: Settings, request: pytest.FixtureRequest, demo_now: dt.datetime) -> Demo:
    """The demo brand, loaded before anything opens the database."""
    url = settings.database_url
    if url.startswith("sqlite:///"):
        template: _SqliteDemo = request.getfixturevalue("sqlite_demo_template")
        shutil.copyfile(template.path, Path(url.removeprefix("sqlite:///")))
        loaded = template.loaded
    else:
        loaded = await load_demo(settings, demo_now)
    tokens = {number: link.rsplit("/t/", 1)[1] for number, link in loaded.tracking_urls.items()}
    return Demo(loaded.api_key, tokens, demo_now)


@pytest.fixture
async def db(settings: Settings, demo: Demo) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.close()


@pytest.fixture
async def app(settings: Settings, demo: Demo) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def server(app: Any) -> AsyncIterator[str]:
    """Serve the test's app instance over real HTTP; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from now on: no need to wait for the server to start
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
