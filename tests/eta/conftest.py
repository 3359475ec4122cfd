"""Fixtures for the ETA engine tests: the app runs on a fixed clock the test can move."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from tests.conftest import BrandKey
from tests.eta.helpers import Api

# The brand's "today" in these tests (brands default to UTC): orders are placed the day before.
START = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)


class FixedClock:
    """A clock that stands still until the test moves it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, now: dt.datetime) -> None:
        """Jump to `now`."""
        self.now = now

    def advance(self, **delta: Any) -> dt.datetime:
        """Move forward by a timedelta's worth of keyword arguments."""
        self.now += dt.timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[Starlette]:
    """The app of tests/conftest.py, but on the test's clock (the `client` fixture uses it)."""
    application = create_app(settings, clock=clock)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
def api(client: httpx.AsyncClient, brand: BrandKey) -> Api:
    return Api(client, brand)
