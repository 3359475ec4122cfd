"""Fixtures for the message pipeline: the app on a fixed clock, the brand's API, the outbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import message_news, messages
from messaging.dispatch import Dispatcher
from messaging.providers.sendgrid import SendGridProvider
from messaging.providers.twilio import TwilioProvider
from tests.conftest import BrandKey
from tests.eta.conftest import FixedClock
from tests.eta.helpers import Api
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.twilio import FakeTwilio

# 10:00 in Los Angeles (the factory customer's timezone): outside default quiet hours.
START = dt.datetime(2026, 11, 2, 18, 0, tzinfo=dt.UTC)
# A shopper who takes email and SMS, in Los Angeles.
SHOPPER = {
    "email": "ada@example.com",
    "phone": "+14155550123",
    "name": "Ada",
    "locale": "en-US",
    "timezone": "America/Los_Angeles",
    "sms_consent": True,
}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[Starlette]:
    application = create_app(settings, clock=clock)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
def api(client: httpx.AsyncClient, brand: BrandKey) -> Api:
    return Api(client, brand)


async def outbox(db: Database) -> list[dict[str, Any]]:
    """Every message with its news (trigger, subject, data), oldest first."""
    async with db.read() as conn:
        rows = (await conn.execute(select(messages).order_by(messages.c.id))).all()
        news = (await conn.execute(select(message_news).order_by(message_news.c.id))).all()
    out = []
    for row in rows:
        item = dict(row._mapping)
        item["news"] = [
            {"trigger": n.trigger, "subject": n.subject, "data": n.data}
            for n in news
            if n.message_id == row.id
        ]
        out.append(item)
    return out


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


SMS_FROM = "+15557650000"


def make_dispatcher(
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
    name: str = "test-worker",
    timeout: float = 5.0,
) -> Dispatcher:
    """A dispatcher aimed at the local fakes, on the test's clock."""
    return Dispatcher(
        db,
        settings,
        clock,
        link_secret="k" * 64,
        email=SendGridProvider(sendgrid.api_key, sendgrid.url, timeout),
        sms=TwilioProvider(
            twilio.account_sid, twilio.auth_token, twilio.url, timeout, from_number=SMS_FROM
        ),
        name=name,
    )


@pytest.fixture
async def dispatcher(
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> AsyncIterator[Dispatcher]:
    sender = make_dispatcher(db, settings, clock, twilio, sendgrid)
    yield sender
    await sender.aclose()
