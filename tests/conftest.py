"""Shared fixtures: every test gets its own database (a SQLite file, or a PostgreSQL database).

Tests that take the `database_url` fixture run on both backends. PostgreSQL comes from
WHEREABOUTS_TEST_POSTGRES_URL (an admin URL such as postgresql://postgres@127.0.0.1:5432/postgres);
without it those tests skip, except under CI=true where a missing server is a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import make_url
from starlette.applications import Starlette

from app.api.keys import create_key
from app.brands import create_brand
from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from app.storage.migrate import migrate

T = TypeVar("T")
PG_ENV = "WHEREABOUTS_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on its own loop in a helper thread (safe inside a running test loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def _migrate_url(url: str) -> None:
    db = Database(url)
    try:
        await migrate(db)
    finally:
        await db.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    run_blocking(lambda: _migrate_url(f"sqlite:///{path}"))
    return path


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str
    template: str

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    async def create(self) -> str:
        name = f"wa_test_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        return name

    async def drop(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        if IN_CI:
            pytest.fail(f"CI=true but {PG_ENV} is not set: PostgreSQL tests must run in CI")
        pytest.skip(f"PostgreSQL tests skipped: set {PG_ENV} to run them")
    template = f"wa_template_{os.getpid()}"
    server = PostgresServer(admin_url, template)

    async def setup() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{template}"')
        finally:
            await conn.close()
        await _migrate_url(server.url(template))

    try:
        run_blocking(setup)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"cannot reach PostgreSQL at {PG_ENV}: {exc}")
    yield server

    async def teardown() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        finally:
            await conn.close()

    run_blocking(teardown)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """A fresh, migrated database of each backend."""
    if request.param == "sqlite":
        path = tmp_path / "whereabouts.db"
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = await server.create()
    try:
        yield server.url(name)
    finally:
        await server.drop(name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env(
        {"DATABASE_URL": database_url, "PUBLIC_URL": "https://track.example.test"}
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.close()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass(frozen=True)
class BrandKey:
    id: int
    slug: str
    key: str
    prefix: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_brand(db: Database, slug: str, **options: Any) -> BrandKey:
    now = dt.datetime.now(dt.UTC)
    async with db.write() as conn:
        brand_id = await create_brand(conn, slug, slug.title(), now, **options)
        key = await create_key(conn, brand_id, "test", now)
    return BrandKey(brand_id, slug, key.secret, key.prefix)


@pytest.fixture
async def brand(db: Database) -> BrandKey:
    return await make_brand(db, "acme")


@pytest.fixture
async def other_brand(db: Database) -> BrandKey:
    return await make_brand(db, "globex")
