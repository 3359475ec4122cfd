"""Shoppers' SMS replies through Twilio's signed webhook: choices, opt-out keywords, retries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, update
from twilio.request_validator import RequestValidator

from app.api.models import OrderIn, SkuIn
from app.domain.choices import short_ref
from app.main import create_app
from app.settings import Settings
from app.storage import catalog
from app.storage import choices as choice_store
from app.storage import orders as order_store
from app.storage.database import Database
from app.storage.schema import (
    choices,
    events,
    inbound_sms,
    order_lines,
    orders,
    sms_conversations,
    suppressions,
)
from messaging import consent, simulate
from tests.conftest import BrandKey, make_brand
from tests.messaging.conftest import START

pytestmark = pytest.mark.anyio

PUBLIC_URL = "https://track.example.test"
TOKEN = "twilio-inbound-test-token"
URL = PUBLIC_URL + "/hooks/twilio/inbound"
BRAND_NUMBER = "+15550001000"
SHARED_NUMBER = "+15550009999"
SHOPPER = "+14155550123"
DEADLINE = dt.datetime(2026, 11, 9, 23, 59, 59, tzinfo=dt.UTC)
_SIDS = itertools.count(1)
SWITCH_PAGE_TEXT = "You chose to switch to another item. We will ship it as soon as we can."
PAGE_TEXT = {
    "keep": "You chose to keep waiting. We will let you know when it ships.",
    "switch": SWITCH_PAGE_TEXT,
    "refund": "You chose a refund. We are cancelling the item and refunding you.",
}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "PUBLIC_URL": PUBLIC_URL,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM": SHARED_NUMBER,
        }
    )


@pytest.fixture
async def brand(db: Database) -> BrandKey:
    return await make_brand(
        db,
        "acme",
        support_email="help@acme.example",
        support_phone="+15550001111",
        sms_from=BRAND_NUMBER,
    )


# --- Helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    order_id: int
    number: str
    token: str
    choice_ids: list[int]


async def open_choices(
    db: Database,
    brand: BrandKey,
    number: str,
    items: list[tuple[str, list[tuple[str, str]]]],
    *,
    phone: str = SHOPPER,
    default_action: str = "keep",
    deadline: dt.datetime = DEADLINE,
) -> Opened:
    """Place an order of backordered items (sku, alternatives) and open a choice per line."""
    payload = {
        "number": number,
        "placed_at": "2026-11-01T10:00:00Z",
        "currency": "USD",
        "customer": {"id": f"c-{phone}", "phone": phone, "locale": "en-US"},
        "lines": [
            {
                "ref": str(i),
                "sku": sku,
                "title": f"Item {sku}",
                "quantity": 1,
                "unit_price": 1000,
                "status": "backordered",
                "backorder_type": "standard",
            }
            for i, (sku, _) in enumerate(items, start=1)
        ],
    }
    async with db.write() as conn:
        for sku, alternatives in items:
            body = {
                "on_hand": 0,
                "alternatives": [{"sku": s, "title": t} for s, t in alternatives],
            }
            await catalog.put_sku(
                conn, brand.id, sku, SkuIn.model_validate_json(json.dumps(body)), START
            )
        (done,) = await order_store.upsert(
            conn, brand.id, [OrderIn.model_validate_json(json.dumps(payload))], START, lambda i: ""
        )
        order_id = (
            await conn.execute(
                select(orders.c.id).where(orders.c.brand_id == brand.id, orders.c.number == number)
            )
        ).scalar_one()
        lines = (
            await conn.execute(
                select(order_lines.c.id, order_lines.c.sku)
                .where(order_lines.c.order_id == order_id)
                .order_by(order_lines.c.position)
            )
        ).all()
        offers = [choice_store.Offer(order_id, line.id, line.sku, "at_risk") for line in lines]
        opened = await choice_store.offer(conn, brand.id, offers, deadline, default_action, START)
        assert len(opened) == len(lines)
        ids = (
            await conn.execute(
                select(choices.c.id).where(choices.c.order_id == order_id).order_by(choices.c.id)
            )
        ).scalars()
        return Opened(order_id, number, done.token, list(ids))


async def text(
    client: httpx.AsyncClient,
    body: str,
    *,
    sid: str | None = None,
    sender: str = SHOPPER,
    to: str = BRAND_NUMBER,
    token: str = TOKEN,
    signed_url: str = URL,
    posted: dict[str, str] | None = None,
) -> httpx.Response:
    """Post an inbound SMS as Twilio does, signed with its own RequestValidator."""
    params = {
        "MessageSid": sid or f"SM{next(_SIDS):032d}",
        "AccountSid": "AC" + "1" * 32,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
    }
    signature = RequestValidator(token).compute_signature(signed_url, params)
    return await client.post(
        "/hooks/twilio/inbound",
        data=posted if posted is not None else params,
        headers={"X-Twilio-Signature": signature},
    )


def said(response: httpx.Response) -> str:
    """The answer's text from its TwiML ('' for an empty answer)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    # Our own answer, not untrusted XML.
    root = ET.fromstring(response.text)  # noqa: S314
    assert root.tag == "Response"
    return " ".join(m.text or "" for m in root.iter("Message"))


async def stored_choices(db: Database, order_id: int) -> list[Any]:
    async with db.read() as conn:
        return list(
            (
                await conn.execute(
                    select(choices, order_lines.c.status.label("line_status"))
                    .join(order_lines, order_lines.c.id == choices.c.order_line_id)
                    .where(choices.c.order_id == order_id)
                    .order_by(choices.c.id)
                )
            ).all()
        )


async def event_data(db: Database, kind: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(events.c.data).where(events.c.type == kind).order_by(events.c.id)
        )
        return [row.data for row in rows]


async def inbound_rows(db: Database) -> list[Any]:
    async with db.read() as conn:
        return list((await conn.execute(select(inbound_sms).order_by(inbound_sms.c.id))).all())


# --- Signatures ----------------------------------------------------------------------------


async def test_a_valid_signature_passes_and_any_change_is_refused(client, db, brand):
    await open_choices(db, brand, "1001", [("LAMP", [])])
    assert said(await text(client, "1")) != ""
    params = {"MessageSid": "SM" + "f" * 32, "From": SHOPPER, "To": BRAND_NUMBER, "Body": "3"}
    good = RequestValidator(TOKEN).compute_signature(URL, params)
    tampered = await client.post(
        "/hooks/twilio/inbound",
        data={**params, "Body": "2"},
        headers={"X-Twilio-Signature": good},
    )
    assert tampered.status_code == 403
    other_url = await text(
        client, "3", signed_url="https://elsewhere.example.test/hooks/twilio/inbound"
    )
    assert other_url.status_code == 403
    other_token = await text(client, "3", token="not-the-token")
    assert other_token.status_code == 403
    unsigned = await client.post("/hooks/twilio/inbound", data=params)
    assert unsigned.status_code == 403
    extra_field = await text(client, "3", posted={**params, "Extra": "x"})
    assert extra_field.status_code == 403
    # Only the first, signed reply was taken.
    assert [r.body for r in await inbound_rows(db)] == ["1"]


async def test_without_an_auth_token_every_request_is_refused(settings, db, brand):
    application = create_app(dataclasses.replace(settings, twilio_auth_token=""))
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await text(http, "1", token="")
    assert response.status_code == 403
    assert await inbound_rows(db) == []


async def test_the_demo_command_signs_as_the_service_checks(settings, client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", [])])
    signed = simulate.sign_reply(settings, SHOPPER, "keep", BRAND_NUMBER)
    response = await client.post(
        "/hooks/twilio/inbound",
        data=signed.params,
        headers={"X-Twilio-Signature": signed.signature},
    )
    assert "keep it on order" in said(response)
    assert (await stored_choices(db, opened.order_id))[0].decision == "keep"
    unset = dataclasses.replace(settings, twilio_auth_token="")
    assert simulate.auth_token(unset) == simulate.DEMO_AUTH_TOKEN


# --- Retries -------------------------------------------------------------------------------


async def test_a_retried_message_sid_gets_the_same_answer_and_changes_nothing(client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", [])])
    first = await text(client, "3", sid="SM" + "a" * 32)
    again = await text(client, "3", sid="SM" + "a" * 32)
    assert again.text == first.text
    assert said(first) == "Thanks! Order 1001: we will remove the delayed item and refund you."
    assert len(await event_data(db, "choice_made")) == 1
    rows = await inbound_rows(db)
    assert [(r.provider_id, r.outcome, r.reply) for r in rows] == [
        ("SM" + "a" * 32, "decided", first.text)
    ]
    (choice,) = await stored_choices(db, opened.order_id)
    assert (choice.state, choice.decision, choice.decided_via) == ("made", "refund", "sms")
    # A retry of an unclear reply does not count twice either.
    await text(client, "what?", sid="SM" + "b" * 32)
    await text(client, "what?", sid="SM" + "b" * 32)
    async with db.read() as conn:
        (unclear,) = (await conn.execute(select(sms_conversations.c.unclear))).scalars()
    assert unclear == 0  # nothing open any more: nothing to count


# --- Deciding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "decision"),
    [
        ("1", "keep"),
        ("2", "switch"),
        ("3", "refund"),
        ("Keep", "keep"),
        ("swap please", "switch"),
        ("REFUND", "refund"),
    ],
)
async def test_each_reply_decides_the_stored_choice_and_the_page_shows_it(
    client, db, brand, body, decision
):
    opened = await open_choices(db, brand, "1001", [("LAMP", [("LAMP-ASH", "Ash lamp")])])
    answer = said(await text(client, body))
    assert answer.startswith("Thanks! Order 1001:")
    (choice,) = await stored_choices(db, opened.order_id)
    assert (choice.state, choice.decision, choice.decided_via) == ("made", decision, "sms")
    expected_status = {"keep": "backordered", "switch": "substituted", "refund": "cancelled"}
    assert choice.line_status == expected_status[decision]
    if decision == "switch":
        assert choice.alternative_sku == "LAMP-ASH"
        assert "we will send Ash lamp instead" in answer
    (made,) = await event_data(db, "choice_made")
    assert made["via"] == "sms"
    page = await client.get(f"/t/{opened.token}")
    assert PAGE_TEXT[decision] in page.text
    (shown,) = (await client.get(f"/t/{opened.token}.json")).json()["order"]["choices"]
    assert (shown["state"], shown["decision"]) == ("made", decision)
    # The page's form now sees the answer too: one state machine for both.
    async with db.write() as conn:
        outcome = await choice_store.decide(
            conn, brand.id, opened.order_id, choice.id, "keep", None, "page", START
        )
    assert outcome.already_decided
    assert outcome.decision == decision


async def test_one_order_with_several_lines_is_decided_whole(client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", []), ("MUG", [])])
    assert said(await text(client, "3")) == (
        "Thanks! Order 1001: we will remove the delayed items and refund you."
    )
    stored = await stored_choices(db, opened.order_id)
    assert [(c.decision, c.line_status) for c in stored] == [("refund", "cancelled")] * 2


async def test_switch_with_two_alternatives_lists_them_and_the_number_picks(client, db, brand):
    opened = await open_choices(
        db, brand, "1001", [("MUG", [("MUG-BLUE", "Blue mug"), ("MUG-GREEN", "Green mug")])]
    )
    assert said(await text(client, "2")) == (
        "Which item instead of Item MUG? Reply with its number: 1 Blue mug, 2 Green mug."
    )
    async with db.read() as conn:
        (pending,) = (await conn.execute(select(sms_conversations.c.pending))).scalars()
    assert pending["awaiting"] == "alternative"
    assert pending["choice"] == opened.choice_ids[0]
    assert (await stored_choices(db, opened.order_id))[0].state == "open"
    assert said(await text(client, "2")) == (
        "Thanks! Order 1001: we will send Green mug instead, as soon as we can."
    )
    (choice,) = await stored_choices(db, opened.order_id)
    assert (choice.decision, choice.alternative_sku) == ("switch", "MUG-GREEN")


async def test_no_alternative_says_so_and_restates_the_options(client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", [])])
    assert said(await text(client, "2")) == (
        "Sorry, there is no similar item for Item LAMP. "
        "Order 1001: reply 1 to keep waiting or 3 for a refund."
    )
    assert (await stored_choices(db, opened.order_id))[0].state == "open"


async def test_two_orders_ask_which_and_the_code_completes(client, db, brand):
    first = await open_choices(db, brand, "1001", [("LAMP", [])])
    second = await open_choices(db, brand, "1002", [("MUG", [])])
    one = (await stored_choices(db, first.order_id))[0].short_ref
    two = (await stored_choices(db, second.order_id))[0].short_ref
    assert one
    assert two
    assert one != two
    assert said(await text(client, "3")) == (
        f"Which order? Reply with its code: {one} (1001), {two} (1002)."
    )
    assert said(await text(client, two.lower())) == (
        "Thanks! Order 1002: we will remove the delayed item and refund you."
    )
    assert (await stored_choices(db, first.order_id))[0].state == "open"
    assert (await stored_choices(db, second.order_id))[0].decision == "refund"
    # Now one order is open: a bare answer is about it; naming the other tells what happened.
    assert said(await text(client, f"1 {two}")).startswith(
        "Order 1002: you already chose a refund, on "
    )
    assert said(await text(client, "1")).startswith("Thanks! Order 1001: we will keep it")


async def test_orders_sharing_a_code_get_new_ones_before_the_reply_is_read(client, db, brand):
    first = await open_choices(db, brand, "1001", [("LAMP", [])])
    second = await open_choices(db, brand, "1002", [("MUG", [])])
    async with db.write() as conn:
        await conn.execute(update(choices).values(short_ref="A1"))
    answer = said(await text(client, "1 A1"))
    refs = [(await stored_choices(db, o.order_id))[0].short_ref for o in (first, second)]
    assert "A1" not in refs
    assert len(set(refs)) == 2
    assert answer == f"Which order? Reply with its code: {refs[0]} (1001), {refs[1]} (1002)."


async def test_a_new_order_of_the_same_phone_skips_the_code_in_use(db, brand):
    first = await open_choices(db, brand, "1001", [("LAMP", [])])
    async with db.read() as conn:
        next_id = (await conn.execute(select(func.max(orders.c.id)))).scalar_one() + 1
    derived = short_ref(next_id, ())
    async with db.write() as conn:
        await conn.execute(update(choices).values(short_ref=derived))
    second = await open_choices(db, brand, "1002", [("MUG", [])])
    assert second.order_id == next_id
    ref = (await stored_choices(db, second.order_id))[0].short_ref
    assert ref != derived
    # Another number's orders do not take codes from this one.
    third = await open_choices(db, brand, "1003", [("CUP", [])], phone="+14155550199")
    assert (await stored_choices(db, third.order_id))[0].short_ref == short_ref(third.order_id, ())
    assert (await stored_choices(db, first.order_id))[0].short_ref == derived


# --- Unclear replies -------------------------------------------------------------------------


async def test_unclear_twice_hands_the_choice_to_a_person(client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", [("LAMP-ASH", "Ash lamp")])])
    assert said(await text(client, "what does this mean")) == (
        "Sorry, we did not understand that. Order 1001: reply 1 to keep waiting, 2 to switch to "
        "a similar item or 3 for a refund."
    )
    async with db.read() as conn:
        (unclear,) = (await conn.execute(select(sms_conversations.c.unclear))).scalars()
    assert unclear == 1
    assert said(await text(client, "??")) == (
        "Thanks. Someone from Acme will be in touch with you soon."
    )
    (choice,) = await stored_choices(db, opened.order_id)
    assert choice.state == "needs_person"
    # The brand sees it on the order.
    order = (await client.get("/api/v1/orders/1001", headers=brand.headers)).json()
    assert [(c["line"], c["state"]) for c in order["choices"]] == [("1", "needs_person")]
    (escalated,) = await event_data(db, "choice_needs_person")
    assert escalated == {"choice": choice.id, "line": "1", "sku": "LAMP"}
    assert [r.outcome for r in await inbound_rows(db)] == ["unclear", "needs_person"]
    # The shopper may still answer, and an answer resets the count.
    await text(client, "huh")
    assert said(await text(client, "keep")).startswith("Thanks! Order 1001: we will keep it")
    (choice,) = await stored_choices(db, opened.order_id)
    assert (choice.state, choice.decision) == ("made", "keep")
    async with db.read() as conn:
        (unclear,) = (await conn.execute(select(sms_conversations.c.unclear))).scalars()
    assert unclear == 0


# --- Too late --------------------------------------------------------------------------------


async def test_a_reply_after_the_deadline_is_told_the_default_that_applied(
    client, db, brand, clock
):
    opened = await open_choices(db, brand, "1001", [("LAMP", [])], default_action="cancel")
    clock.set(DEADLINE + dt.timedelta(hours=2))
    assert said(await text(client, "1")) == (
        "Order 1001: the time to answer ended on Nov 9, so we removed the item and will refund you."
    )
    (choice,) = await stored_choices(db, opened.order_id)
    assert (choice.state, choice.decision, choice.decided_via) == ("defaulted", "refund", "default")
    assert choice.line_status == "cancelled"
    # The answer tells it: the confirmation skips SMS.
    (defaulted,) = await event_data(db, "choice_defaulted")
    assert (defaulted["decision"], defaulted["via"]) == ("refund", "sms")
    assert await event_data(db, "choice_made") == []
    assert (await inbound_rows(db))[0].outcome == "already_decided"


async def test_a_reply_to_a_choice_made_on_the_page_is_told_that_choice(client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", [])])
    async with db.write() as conn:
        await choice_store.decide(
            conn, brand.id, opened.order_id, opened.choice_ids[0], "keep", None, "page", START
        )
    assert said(await text(client, "3")) == (
        "Order 1001: you already chose to keep waiting, on Nov 2."
    )
    (choice,) = await stored_choices(db, opened.order_id)
    assert (choice.decision, choice.decided_via, choice.line_status) == (
        "keep",
        "page",
        "backordered",
    )


# --- Keywords ----------------------------------------------------------------------------------


async def test_stop_suppresses_start_lifts_and_help_says_who_we_are(client, db, brand):
    opened = await open_choices(db, brand, "1001", [("LAMP", [])])
    stop = await text(client, "Stop")
    assert said(stop) == ""
    async with db.read() as conn:
        (row,) = (await conn.execute(select(suppressions))).all()
        assert await consent.is_suppressed(conn, brand.id, "sms", SHOPPER) == "stop"
    assert (row.brand_id, row.channel, row.address, row.reason) == (
        brand.id,
        "sms",
        SHOPPER,
        "stop",
    )
    # An answer after STOP still counts, but nothing is texted back.
    assert said(await text(client, "1")) == ""
    assert (await stored_choices(db, opened.order_id))[0].decision == "keep"
    help_text = said(await text(client, "help"))
    assert help_text == (
        "Acme order updates. Help: +15550001111, help@acme.example. Reply STOP to opt out."
    )
    assert "cancel" not in help_text.lower()
    assert said(await text(client, "START")) == "Acme: you will get order updates by text again."
    async with db.read() as conn:
        assert await consent.is_suppressed(conn, brand.id, "sms", SHOPPER) is None
    outcomes = [r.outcome for r in await inbound_rows(db)]
    assert outcomes == ["optout", "decided", "help", "optin"]


@pytest.mark.parametrize("word", ["STOPALL", "unsubscribe", "CANCEL", "end", "Quit", "revoke"])
async def test_every_opt_out_word_suppresses(client, db, brand, word):
    await open_choices(db, brand, "1001", [("LAMP", [])])
    assert said(await text(client, word)) == ""
    async with db.read() as conn:
        assert await consent.is_suppressed(conn, brand.id, "sms", SHOPPER) == "stop"
    assert await event_data(db, "choice_made") == []


# --- Which brand ---------------------------------------------------------------------------


async def test_a_shared_number_finds_the_brand_with_open_choices(client, db, brand):
    other = await make_brand(db, "globex", sms_from="+15550002000")
    await open_choices(db, other, "G-1", [("GLOBE", [])], phone="+14155550188")
    opened = await open_choices(db, brand, "1001", [("LAMP", [])])
    assert said(await text(client, "1", to=SHARED_NUMBER)).startswith("Thanks! Order 1001:")
    assert (await stored_choices(db, opened.order_id))[0].decision == "keep"
    assert (await inbound_rows(db))[0].brand_id == brand.id


async def test_an_unknown_number_gets_a_polite_answer_and_nothing_else(client, db, brand):
    await open_choices(db, brand, "1001", [("LAMP", [])])
    answer = said(await text(client, "1", sender="+14155550177", to=SHARED_NUMBER))
    assert answer == (
        "Sorry, we could not find your order from this number. Please use the link in our message."
    )
    (row,) = await inbound_rows(db)
    assert (row.brand_id, row.outcome) == (None, "unknown_number")
    async with db.read() as conn:
        assert (
            await conn.execute(select(func.count()).select_from(sms_conversations))
        ).scalar() == 0
    assert await event_data(db, "choice_made") == []


async def test_stop_to_the_shared_number_opts_out_of_every_brand_texting_from_it(client, db, brand):
    globex = await make_brand(db, "globex")
    initech = await make_brand(db, "initech")
    assert said(await text(client, "STOP", sender="+14155550177", to=SHARED_NUMBER)) == ""
    async with db.read() as conn:
        stopped = {
            b.slug: await consent.is_suppressed(conn, b.id, "sms", "+14155550177")
            for b in (brand, globex, initech)
        }
    # acme texts from its own number, which was not the one told STOP.
    assert stopped == {"acme": None, "globex": "stop", "initech": "stop"}
    assert said(await text(client, "start", sender="+14155550177", to=SHARED_NUMBER)) == (
        "You will get order updates by text again."
    )
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(suppressions))).scalar() == 0
