"""The unsubscribe link: signed, free of personal data, one-click (RFC 8058) and idempotent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import suppressions
from messaging import consent
from messaging.links import read_unsubscribe_token, unsubscribe_token, unsubscribe_url
from tests.conftest import make_brand
from tests.web.support import csp, parse
from tests.web.test_status_hooks import EMAIL, NOW, PHONE, PUBLIC_URL, insert_message

pytestmark = pytest.mark.anyio

SECRET = "unsubscribe-tests-" + "u" * 40
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env(
        {"DATABASE_URL": database_url, "PUBLIC_URL": PUBLIC_URL, "SECRET_KEY": SECRET}
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.close()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings, clock=lambda: NOW)
    async with LifespanManager(application) as manager:
        yield manager.app  # type: ignore[misc]


@pytest.fixture
async def brand_id(db: Database) -> int:
    return (await make_brand(db, "acme")).id


@pytest.fixture
async def email_id(db: Database, brand_id: int) -> int:
    return await insert_message(
        db, brand_id, channel="email", address=EMAIL, provider="sendgrid", provider_id="x"
    )


def path_of(message_id: int, secret: str = SECRET) -> str:
    return unsubscribe_url(PUBLIC_URL, secret, message_id).removeprefix(PUBLIC_URL)


async def suppression_rows(db: Database) -> list[tuple[str, str, str, str]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(
                suppressions.c.channel,
                suppressions.c.address,
                suppressions.c.topic,
                suppressions.c.reason,
            )
        )
        return [tuple(row) for row in rows]


async def test_the_link_asks_first_and_one_click_unsubscribes_from_eta_updates(
    client, db, brand_id, email_id
):
    path = path_of(email_id)
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert csp(page)["frame-ancestors"] == "'none'"
    assert csp(page)["script-src"].startswith("'nonce-")
    tree = parse(page.text)
    assert tree.find("h1").text == "Stop emails about delivery-date changes?"
    assert "Acme" in tree.find("span", cls="brand-name").text
    form = tree.find("form")
    assert (form.attrs["method"], form.attrs["action"]) == ("post", path)
    assert form.find("input", name="List-Unsubscribe").attrs["value"] == "One-Click"
    assert EMAIL not in page.text
    # Looking is not unsubscribing (mail scanners follow links).
    assert await suppression_rows(db) == []

    for _ in range(2):
        done = await client.post(path, content="List-Unsubscribe=One-Click", headers=ONE_CLICK)
        assert done.status_code == 200
        assert parse(done.text).find("h1").text == "You are unsubscribed"
        assert EMAIL not in done.text
    assert await suppression_rows(db) == [("email", EMAIL, "eta_updates", "unsubscribe")]
    async with db.read() as conn:
        assert await consent.is_suppressed(conn, brand_id, "email", EMAIL, "eta_updates")
        # Transactional mail about the order still goes out.
        assert await consent.is_suppressed(conn, brand_id, "email", EMAIL) is None


async def test_a_post_from_a_mail_client_without_a_form_body_also_works(client, db, email_id):
    response = await client.post(path_of(email_id))
    assert response.status_code == 200
    assert await suppression_rows(db) == [("email", EMAIL, "eta_updates", "unsubscribe")]


async def test_forged_and_foreign_tokens_are_not_found(client, db, email_id):
    token = unsubscribe_token(SECRET, email_id)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    brand_id = (await make_brand(db, "globex")).id
    sms_id = await insert_message(db, brand_id, channel="sms", address=PHONE)
    paths = [
        f"/u/{flipped}",
        f"/u/{token[:-1]}",
        f"/u/{token}A",
        "/u/not-a-token",
        path_of(email_id, "another-secret"),
        path_of(email_id + 1000),  # signed, but no such message
        path_of(sms_id),  # signed, but not an email
    ]
    for path in paths:
        for method in ("GET", "POST"):
            response = await client.request(method, path, headers=ONE_CLICK)
            assert response.status_code == 404, (method, path)
            assert parse(response.text).find("h1").text == "Link not found"
    assert await suppression_rows(db) == []


def test_the_token_names_the_message_and_nothing_else():
    token = unsubscribe_token(SECRET, 4242)
    assert len(token) == 32
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    raw = base64.urlsafe_b64decode(token)
    assert int.from_bytes(raw[:8], "big") == 4242
    assert len(raw) == 8 + 16
    assert EMAIL.encode() not in raw
    assert read_unsubscribe_token(SECRET, token) == 4242
    assert read_unsubscribe_token(SECRET + "x", token) is None
    assert unsubscribe_url(PUBLIC_URL + "/", SECRET, 4242) == f"{PUBLIC_URL}/u/{token}"


def test_an_empty_secret_key_signs_nothing():
    with pytest.raises(ValueError, match="secret key"):
        unsubscribe_token("", 7)
    with pytest.raises(ValueError, match="secret key"):
        read_unsubscribe_token("", unsubscribe_token(SECRET, 7))
