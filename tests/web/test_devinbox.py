"""The dev inbox lists what the dev providers sent, and exists only when asked for.

It is served only with DEV_INBOX on and a dev provider in use: a server that fell back to the
dev providers for want of credentials must not show every recipient to the world.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings, dev_channels, provider_warnings
from app.storage.database import Database
from app.web.devinbox import enabled, preview
from tests.conftest import make_brand
from tests.web.support import csp, parse
from tests.web.test_status_hooks import EMAIL, NOW, PHONE, PUBLIC_URL, insert_message

pytestmark = pytest.mark.anyio

EMAIL_HTML = (
    "<!doctype html><html><head><style>p{color:red}</style></head>"
    "<body><p>Your lamp is <b>on its way</b> &amp; more</p>"
    '<script>alert("x")</script></body></html>'
)
EMAIL_CONTENT = {
    "subject": "Your Oak lamp ships Friday",
    "text": "Your lamp is on its way.\nTrack it: https://track.example.test/t/abc",
    "html": EMAIL_HTML,
    "headers": {"List-Unsubscribe": "<https://track.example.test/u/tok>"},
}
SMS_CONTENT = {
    "body": "Acme: your lamp ships Friday 🚚",
    "segments": 1,
    "encoding": "UCS-2",
    "units": 31,
}
REAL_PROVIDERS = {
    "SENDGRID_API_KEY": "SG.test",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "t",
}


def inbox_settings(database_url: str, **extra: str) -> Settings:
    return Settings.from_env(
        {"DATABASE_URL": database_url, "PUBLIC_URL": PUBLIC_URL, "DEV_INBOX": "true", **extra}
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    return inbox_settings(database_url)


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
async def sent(db: Database) -> dict[str, int]:
    acme = (await make_brand(db, "acme")).id
    globex = (await make_brand(db, "globex")).id
    ids = {
        "real": await insert_message(db, acme, channel="email", address=EMAIL, provider="sendgrid"),
        "email": await insert_message(
            db, acme, channel="email", address=EMAIL, provider="dev", content=EMAIL_CONTENT
        ),
        "sms": await insert_message(
            db, globex, channel="sms", address=PHONE, provider="dev", content=SMS_CONTENT
        ),
        "bare": await insert_message(db, globex, channel="sms", address=PHONE, provider="dev"),
    }
    return ids


async def test_the_json_lists_dev_messages_of_every_brand_newest_first(client, sent):
    response = await client.get("/dev/inbox.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["messages"]
    assert [m["id"] for m in listed] == [sent["bare"], sent["sms"], sent["email"]]
    bare, sms, email = listed
    assert email["brand"] == "acme"
    assert (email["channel"], email["to"], email["state"]) == ("email", EMAIL, "sent")
    assert email["subject"] == EMAIL_CONTENT["subject"]
    assert email["text"] == EMAIL_CONTENT["text"]
    assert email["html"] == EMAIL_HTML
    assert email["headers"] == EMAIL_CONTENT["headers"]
    assert email["at"] == NOW.isoformat()
    assert sms["brand"] == "globex"
    assert (sms["channel"], sms["to"], sms["body"]) == ("sms", PHONE, SMS_CONTENT["body"])
    assert (sms["segments"], sms["encoding"], sms["units"]) == (1, "UCS-2", 31)
    assert (bare["body"], bare["segments"], bare["encoding"]) == ("", None, "")
    limited = (await client.get("/dev/inbox.json?limit=1")).json()["messages"]
    assert [m["id"] for m in limited] == [sent["bare"]]


async def test_the_page_shows_the_email_sandboxed_and_the_sms_as_a_bubble(client, sent):
    response = await client.get("/dev/inbox")
    assert response.status_code == 200
    policy = csp(response)
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    nonce = re.fullmatch(r"'nonce-([A-Za-z0-9_-]+)'", policy["script-src"])
    assert nonce
    page = parse(response.text)
    scripts = page.find_all("script")
    assert [s.attrs.get("nonce") for s in scripts] == [nonce.group(1)]
    # The email's own script only ever appears escaped, inside the frame's srcdoc.
    assert 'alert("x")' not in response.text

    email = page.by_id(f"message-{sent['email']}")
    assert email.find("h2").text == EMAIL_CONTENT["subject"]
    frame = email.find("iframe")
    assert frame.attrs["sandbox"] == "allow-popups allow-popups-to-escape-sandbox"
    assert frame.attrs["srcdoc"] == preview(EMAIL_HTML)
    assert email.find("details").find("pre").text == EMAIL_CONTENT["text"].replace("\n", " ")
    assert EMAIL in email.text

    sms = page.by_id(f"message-{sent['sms']}")
    assert sms.find("div", cls="bubble").text == SMS_CONTENT["body"]
    assert PHONE in sms.text
    assert "UCS-2" in sms.text
    assert page.find_all("article", id=f"message-{sent['real']}") == []


def test_the_preview_opens_links_outside_the_frame():
    assert preview(EMAIL_HTML).startswith(
        '<!doctype html><html><head><base target="_blank"><style>'
    )
    assert preview("<p>hi</p>") == '<base target="_blank"><p>hi</p>'


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, True),
        ({"SENDGRID_API_KEY": "SG.x"}, True),
        (REAL_PROVIDERS, False),
        ({**REAL_PROVIDERS, "SMS_PROVIDER": "dev"}, True),
        ({"EMAIL_PROVIDER": "sendgrid", "SMS_PROVIDER": "twilio"}, False),
    ],
)
def test_enabled_only_when_asked_for_and_a_dev_provider_is_in_use(env, on):
    assert enabled(Settings.from_env({"DEV_INBOX": "true", **env})) is on
    assert enabled(Settings.from_env({"DEV_INBOX": "false", **env})) is False
    assert enabled(Settings.from_env(env)) is False


@pytest.mark.parametrize(
    ("env", "channels", "warned"),
    [
        ({}, ["email", "sms"], ["EMAIL_PROVIDER", "SMS_PROVIDER"]),
        ({"SENDGRID_API_KEY": "SG.x"}, ["sms"], ["SMS_PROVIDER"]),
        (REAL_PROVIDERS, [], []),
        # Saying `dev` outright is a choice, not a server that lost its keys.
        ({"EMAIL_PROVIDER": "dev", "SMS_PROVIDER": "dev"}, ["email", "sms"], []),
        ({**REAL_PROVIDERS, "SMS_PROVIDER": "dev"}, ["sms"], []),
    ],
)
def test_auto_without_credentials_is_warned_about(env, channels, warned):
    settings = Settings.from_env(env)
    assert dev_channels(settings) == channels
    warnings = provider_warnings(settings)
    assert [w.split("=", 1)[0] for w in warnings] == warned
    for warning in warnings:
        assert "reaches no shopper" in warning


async def test_without_dev_inbox_the_pages_are_not_there_though_a_dev_provider_is(
    database_url, sent
):
    settings = inbox_settings(database_url, DEV_INBOX="false")
    assert dev_channels(settings) == ["email", "sms"]
    application = create_app(settings)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for path in ("/dev/inbox", "/dev/inbox.json", "/dev/webhooks.json"):
                response = await http.get(path)
                assert response.status_code == 404, path
                assert EMAIL not in response.text
                assert PHONE not in response.text
            received = await http.post("/dev/webhooks", content=b"{}")
            assert received.status_code == 404


async def test_with_real_providers_the_inbox_is_not_there(database_url, sent):
    application = create_app(inbox_settings(database_url, **REAL_PROVIDERS))
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            for path in ("/dev/inbox", "/dev/inbox.json"):
                response = await http.get(path)
                assert response.status_code == 404, path
                assert EMAIL not in response.text


async def test_a_server_whose_auto_providers_fell_back_to_dev_says_so_at_start(
    database_url, caplog
):
    settings = Settings.from_env({"DATABASE_URL": database_url})
    with caplog.at_level("WARNING", logger="whereabouts"):
        async with LifespanManager(create_app(settings)):
            pass
    said = [r.getMessage() for r in caplog.records if r.name == "whereabouts"]
    assert [w.split("=", 1)[0] for w in said if "reaches no shopper" in w] == [
        "EMAIL_PROVIDER",
        "SMS_PROVIDER",
    ]
