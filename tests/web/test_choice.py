"""The shopper's choice on the page: offered with its options, recorded once, forgeries refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from unittest import mock
from urllib.parse import urlencode

import httpx
import pytest
from asgi_lifespan import LifespanManager
from babel.dates import format_date
from sqlalchemy import select

from app.main import create_app
from app.storage.schema import choices, events
from app.web import security
from app.web.security import Signer
from tests.web.support import FORM, SAME_ORIGIN, SECRET_KEY, get_order, parse

pytestmark = pytest.mark.anyio
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
BRAND_TZ = zoneinfo.ZoneInfo("America/Los_Angeles")

CONFIRMATIONS = {
    "keep": "You chose to keep waiting. We will let you know when it ships.",
    "switch": "You chose to switch to another item. We will ship it as soon as we can.",
    "refund": "You chose a refund. We are cancelling the item and refunding you.",
}


async def choice_form(client, demo):
    """Return (choice section, form action, csrf) from D-1005's page."""
    page = parse((await client.get(demo.page("D-1005"))).text)
    (section,) = page.find_all("section", cls="choice")
    form = section.find("form")
    return section, form.attrs["action"], form.find("input", name="csrf").attrs["value"]


async def post(client, action, fields, headers=SAME_ORIGIN):
    return await client.post(
        action, content=urlencode(fields), headers={"Content-Type": FORM, **headers}
    )


async def recorded(db):
    """The choice row and the choice_made events, as stored."""
    async with db.read() as conn:
        row = (await conn.execute(select(choices))).one()
        made = (
            await conn.execute(
                select(events.c.data).where(events.c.type == "choice_made").order_by(events.c.id)
            )
        ).all()
    return row, [m.data for m in made]


async def assert_nothing_recorded(client, db, demo, version):
    row, made = await recorded(db)
    assert (row.state, row.decision, row.decided_at) == ("open", None, None)
    assert made == []
    assert (await get_order(client, demo, "D-1005"))["version"] == version


@SQLITE
async def test_the_page_offers_the_choice_with_alternatives_deadline_and_default(client, demo):
    section, action, csrf = await choice_form(client, demo)
    (choice,) = (await client.get(demo.page("D-1005") + ".json")).json()["order"]["choices"]
    assert action == f"{demo.page('D-1005')}/choices/{choice['id']}?lang=en"
    assert section.attrs["id"] == f"choice-{choice['id']}"
    assert csrf
    assert section.find("h2").text == "Your choice for Espresso machine"
    paragraphs = [p.text for p in section.find_all("p")]
    deadline = dt.datetime.fromisoformat(choice["deadline"])
    assert deadline > dt.datetime.now(dt.UTC)
    local = deadline.astimezone(BRAND_TZ)
    assert paragraphs[0] == (
        "This item will arrive later than we promised. What would you like us to do?"
    )
    # The deadline is the end of a day in the brand's timezone, so the page names the day.
    assert (local.hour, local.minute) == (23, 59)
    assert paragraphs[1] == (
        f"Please answer by {format_date(local, 'medium', locale='en')}."
        " Without an answer we will keep it on order for you."
    )
    assert len(paragraphs) == 2
    options = [
        (label.find("input").attrs["value"], label.text) for label in section.find_all("label")
    ]
    assert options == [
        ("keep", "Keep waiting for it"),
        ("switch:ESPRESSO-LITE", "Switch to Compact espresso machine · $449.00"),
        ("switch:MOKA-POT-6", "Switch to Stovetop moka pot, 6 cups · $59.00"),
        ("refund", "Cancel it and refund me"),
    ]
    assert section.find("button").text == "Send my choice"
    # Orders without a choice show none.
    for number in ("D-1001", "D-1004", "D-1007"):
        assert parse((await client.get(demo.page(number))).text).find_all(cls="choice") == []


@SQLITE
@pytest.mark.parametrize(
    ("decision", "line_after"),
    [("keep", None), ("switch:MOKA-POT-6", "Switched to another item"), ("refund", "Cancelled")],
)
async def test_each_decision_is_recorded_and_shown(client, demo, db, decision, line_after):
    before = (await get_order(client, demo, "D-1005"))["version"]
    section, action, csrf = await choice_form(client, demo)
    choice_id = int(action.rsplit("/", 1)[1].split("?")[0])
    response = await post(client, action, {"csrf": csrf, "decision": decision})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{demo.page('D-1005')}?lang=en#choice-{choice_id}"
    page = parse((await client.get(response.headers["location"])).text)
    section = page.by_id(f"choice-{choice_id}")
    kind = decision.partition(":")[0]
    assert section.find("h2").text == "Your choice for Espresso machine is recorded"
    assert section.find("p", cls="confirmation").text == CONFIRMATIONS[kind]
    assert section.find_all("form") == []
    closed = [
        (li.find(cls="item__title").text, li.find(cls="badge").text)
        for li in page.find_all("li", cls="item--closed")
    ]
    waiting = [li.find(cls="item__title").text for li in page.find_all("li", cls="item--waiting")]
    if line_after is None:
        assert closed == []
        assert waiting == ["Espresso machine"]
    else:
        assert closed == [("Espresso machine", line_after)]
        assert waiting == []
        assert "1 item being prepared" in page.find("p", cls="glance").text
        assert "waiting" not in page.find("p", cls="glance").text
    row, made = await recorded(db)
    alternative = decision.partition(":")[2] or None
    assert (row.state, row.decision, row.alternative_sku, row.decided_via) == (
        "made",
        kind,
        alternative,
        "page",
    )
    assert made == [
        {
            "choice": choice_id,
            "line": "2",
            "sku": "ESPRESSO-PRO",
            "decision": kind,
            "alternative": alternative,
            "via": "page",
        }
    ]
    order = await get_order(client, demo, "D-1005")
    assert order["version"] == before + 1
    status = {"keep": "backordered", "switch": "substituted", "refund": "cancelled"}[kind]
    assert order["lines"][1]["status"] == status


async def test_a_decision_is_made_once_and_a_later_post_changes_nothing(client, demo, db):
    _section, action, csrf = await choice_form(client, demo)
    first = await post(client, action, {"csrf": csrf, "decision": "refund"})
    assert first.status_code == 303
    version = (await get_order(client, demo, "D-1005"))["version"]
    decided = await recorded(db)
    for again in ("refund", "keep", "switch:ESPRESSO-LITE"):
        response = await post(client, action, {"csrf": csrf, "decision": again})
        assert response.status_code in (303, 409, 422), (again, response.status_code)
        assert await recorded(db) == decided, again
        assert (await get_order(client, demo, "D-1005"))["version"] == version
    page = parse((await client.get(demo.page("D-1005"))).text)
    assert page.find("p", cls="confirmation").text == CONFIRMATIONS["refund"]
    assert decided[0].decision == "refund"
    assert len(decided[1]) == 1


async def test_concurrent_submits_record_one_decision(client, demo, db):
    _section, action, csrf = await choice_form(client, demo)
    before = (await get_order(client, demo, "D-1005"))["version"]
    decisions = ["refund", "keep", "switch:ESPRESSO-LITE", "refund", "keep", "switch:MOKA-POT-6"]
    responses = await asyncio.gather(
        *(post(client, action, {"csrf": csrf, "decision": d}) for d in decisions)
    )
    assert [r.status_code for r in responses] == [303] * len(decisions)
    row, made = await recorded(db)
    assert len(made) == 1
    assert (made[0]["decision"], made[0]["alternative"]) == (row.decision, row.alternative_sku)
    order = await get_order(client, demo, "D-1005")
    status = {"keep": "backordered", "switch": "substituted", "refund": "cancelled"}[row.decision]
    assert order["lines"][1]["status"] == status
    assert order["version"] == before + 1  # as for one decision alone


@SQLITE
async def test_forged_expired_or_cross_site_posts_are_refused_and_change_nothing(client, demo, db):
    _section, action, csrf = await choice_form(client, demo)
    version = (await get_order(client, demo, "D-1005"))["version"]
    purpose = "choice:" + demo.tokens["D-1005"]
    with mock.patch.object(security, "time") as clock:
        clock.time.return_value = dt.datetime.now(dt.UTC).timestamp() - 86_400 - 60
        expired = Signer(SECRET_KEY).token(purpose)
    issued, _, mac = csrf.partition(".")
    attempts = {
        "missing": ({"decision": "refund"}, SAME_ORIGIN),
        "empty": ({"csrf": "", "decision": "refund"}, SAME_ORIGIN),
        "other secret": (
            {"csrf": Signer("another-secret").token(purpose), "decision": "refund"},
            SAME_ORIGIN,
        ),
        "other order": (
            {
                "csrf": Signer(SECRET_KEY).token("choice:" + demo.tokens["D-1001"]),
                "decision": "refund",
            },
            SAME_ORIGIN,
        ),
        "tampered mac": (
            {"csrf": f"{issued}.{mac[::-1]}", "decision": "refund"},
            SAME_ORIGIN,
        ),
        "moved date": ({"csrf": f"{int(issued) + 1}.{mac}", "decision": "refund"}, SAME_ORIGIN),
        "expired": ({"csrf": expired, "decision": "refund"}, SAME_ORIGIN),
        "foreign origin": (
            {"csrf": csrf, "decision": "refund"},
            {"Origin": "https://evil.example"},
        ),
        "look-alike origin": (
            {"csrf": csrf, "decision": "refund"},
            {"Origin": "https://track.example.test.evil.example"},
        ),
        "null origin": ({"csrf": csrf, "decision": "refund"}, {"Origin": "null"}),
    }
    for name, (fields, headers) in attempts.items():
        response = await post(client, action, fields, headers)
        assert response.status_code == 403, name
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert parse(response.text).find("h1").text == "This form has expired", name
        await assert_nothing_recorded(client, db, demo, version)
    as_json = await client.post(
        action, json={"csrf": csrf, "decision": "refund"}, headers=SAME_ORIGIN
    )
    assert as_json.status_code == 403
    await assert_nothing_recorded(client, db, demo, version)


@SQLITE
async def test_an_alternative_that_was_not_offered_is_refused_with_422(client, demo, db):
    _section, action, csrf = await choice_form(client, demo)
    version = (await get_order(client, demo, "D-1005"))["version"]
    for decision in (
        "switch:NOT-OFFERED",
        "switch:espresso-lite",
        "switch:",
        "switch",
        "keep:ESPRESSO-LITE",
        "refund:MOKA-POT-6",
        "maybe",
        "",
    ):
        response = await post(client, action, {"csrf": csrf, "decision": decision})
        assert response.status_code == 422, decision
        page = parse(response.text)
        assert page.find("h1").text == "That choice is not available"
        assert page.find("main").find("p").text == "Reload the page to see your options."
        await assert_nothing_recorded(client, db, demo, version)


@SQLITE
async def test_after_the_deadline_the_page_cannot_decide(settings, client, demo, db):
    _section, action, csrf = await choice_form(client, demo)
    version = (await get_order(client, demo, "D-1005"))["version"]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
    application = create_app(settings, clock=lambda: later)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            response = await post(other, action, {"csrf": csrf, "decision": "refund"})
    assert response.status_code == 422
    await assert_nothing_recorded(client, db, demo, version)


@SQLITE
async def test_the_confirmation_stays_in_the_language_the_shopper_chose(client, demo):
    page = parse((await client.get(demo.page("D-1005") + "?lang=fr")).text)
    form = page.find("section", cls="choice").find("form")
    csrf = form.find("input", name="csrf").attrs["value"]
    response = await post(client, form.attrs["action"], {"csrf": csrf, "decision": "keep"})
    assert response.status_code == 303
    after = await client.get(response.headers["location"])
    assert parse(after.text).find("html").attrs["lang"] == "fr"


@SQLITE
async def test_once_the_line_has_shipped_its_choice_can_no_longer_cancel_it(client, demo, db):
    _section, action, csrf = await choice_form(client, demo)
    shipped = await client.post(
        "/api/v1/orders/D-1005/shipments",
        json={
            "ref": "P9",
            "carrier": "ups",
            "tracking_number": "1Z999AA10123456700",
            "status": "in_transit",
            "lines": [{"line": "2", "quantity": 1}],
        },
        headers=demo.headers,
    )
    assert shipped.status_code == 201, shipped.text
    assert shipped.json()["lines"][1]["status"] == "shipped"
    version = shipped.json()["version"]
    response = await post(client, action, {"csrf": csrf, "decision": "refund"})
    order = await get_order(client, demo, "D-1005")
    assert order["lines"][1]["status"] == "shipped"  # not cancelled while on its way
    assert (await recorded(db))[1] == []
    assert order["version"] == version
    assert response.status_code in (409, 422), response.status_code
    # Nor is the shopper still asked to choose.
    page = parse((await client.get(demo.page("D-1005"))).text)
    assert [s.find_all("form") for s in page.find_all("section", cls="choice")] in ([], [[]])
