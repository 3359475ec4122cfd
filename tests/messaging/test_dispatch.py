"""The dispatcher against local servers that speak Twilio's and SendGrid's wire formats."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select, update

from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import events, message_templates, messages, orders
from messaging import consent
from messaging.dispatch import Dispatcher
from tests.eta.conftest import FixedClock
from tests.eta.helpers import Api, backordered, in_stock
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import Fault
from tests.fakes.twilio import FakeTwilio, twilio_error
from tests.messaging.conftest import SHOPPER, SMS_FROM, make_dispatcher, outbox

pytestmark = pytest.mark.anyio

LATER = dt.timedelta(minutes=11)


async def _place(api: Api, number: str = "A-1", customer: dict[str, Any] | None = None) -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 50, "2026-11-20")
    lines = [in_stock("1", "MUG", 1), backordered("2", "LAMP", 1)]
    await api.place(number, lines, customer=customer or SHOPPER)


async def _by_channel(db: Database) -> dict[str, dict[str, Any]]:
    return {m["channel"]: m for m in await outbox(db)}


async def test_news_goes_out_once_with_exact_payloads(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    await _place(api)
    # Inside the coalescing window nothing is due yet.
    assert await dispatcher.run_once() == 0
    clock.advance(minutes=11)
    assert await dispatcher.run_once() == 2
    sent = await _by_channel(db)

    (mail,) = sendgrid.received
    assert mail.message_id == sent["email"]["id"]
    body = mail.body
    assert body["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert body["from"]["name"] == "Acme"
    assert "A-1" in body["subject"]
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["categories"] == ["whereabouts", "backordered"]
    assert body["custom_args"] == {"whereabouts_message_id": str(sent["email"]["id"])}
    # Backorder news is transactional: no unsubscribe header.
    assert "List-Unsubscribe" not in (body.get("headers") or {})

    (sms,) = twilio.received
    assert sms.form["To"] == "+14155550123"
    assert sms.form["From"] == SMS_FROM
    assert sms.form["Body"].startswith("Acme")
    assert sms.form["StatusCallback"] == (
        f"https://track.example.test/hooks/twilio/status/{sent['sms']['id']}"
    )
    assert sent["sms"]["content"]["body"] == sms.form["Body"]
    assert sent["sms"]["content"]["segments"] <= 2
    # The SMS carries the short link, the email the tracking page's own.
    async with db.read() as conn:
        link = (await conn.execute(select(orders.c.sms_code, orders.c.tracking_token))).one()
    assert f"https://track.example.test/s/{link.sms_code}" in sms.form["Body"]
    assert "/t/" not in sms.form["Body"]
    text = next(c["value"] for c in body["content"] if c["type"] == "text/plain")
    assert f"https://track.example.test/t/{link.tracking_token}" in text
    assert "/s/" not in text

    for message in sent.values():
        assert message["state"] == "sent"
        assert message["provider_id"]
        assert message["attempts"] == 1
    assert sent["sms"]["provider_id"] == sms.sid
    # Nothing is sent twice.
    clock.advance(hours=1)
    assert await dispatcher.run_once() == 0
    assert len(twilio.received) == len(sendgrid.received) == 1


async def test_rate_limit_waits_for_retry_after_then_sends(
    api: Api, db: Database, clock: FixedClock, dispatcher: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    clock.advance(minutes=11)
    twilio.fail_next(Fault.rate_limited(300))
    await dispatcher.run_once()
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "queued"
    assert sms["due_at"] >= clock.now + dt.timedelta(seconds=300)
    assert sms["error_code"].startswith("twilio")
    clock.advance(seconds=200)
    await dispatcher.run_once()
    assert twilio.count(sms["id"]) == 1
    clock.advance(seconds=200)
    await dispatcher.run_once()
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "sent"
    assert sms["attempts"] == 2
    assert twilio.count(sms["id"], accepted_only=True) == 1


@pytest.mark.parametrize("code", [21211, 21610, 21614])
async def test_permanent_errors_fail_at_once_with_the_reason(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    twilio: FakeTwilio,
    code: int,
) -> None:
    await _place(api)
    clock.advance(minutes=11)
    twilio.fail_next(twilio_error(code))
    await dispatcher.run_once()
    clock.advance(days=1)
    await dispatcher.run_once()
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "failed"
    assert sms["error_code"] == f"twilio:{code}"
    assert twilio.count(sms["id"]) == 1
    async with db.read() as conn:
        told = (
            (await conn.execute(select(events.c.data).where(events.c.type == "message_failed")))
            .scalars()
            .all()
        )
    assert told == [
        {"message": sms["id"], "channel": "sms", "state": "failed", "error_code": f"twilio:{code}"}
    ]


async def test_server_errors_retry_until_the_attempts_run_out(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    sender = make_dispatcher(
        db, dataclasses.replace(settings, max_send_attempts=3), clock, twilio, sendgrid
    )
    await _place(api)
    clock.advance(minutes=11)
    sendgrid.fail_next(Fault.error(500), times=5)
    for _ in range(5):
        await sender.run_once()
        clock.advance(hours=2)
    await sender.aclose()
    email = (await _by_channel(db))["email"]
    assert email["state"] == "failed"
    assert email["attempts"] == 3
    assert sendgrid.count(email["id"]) == 3


async def test_a_lost_answer_is_unknown_and_never_resent(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    sender = make_dispatcher(db, settings, clock, twilio, sendgrid, timeout=0.5)
    await _place(api)
    clock.advance(minutes=11)
    twilio.fail_next(Fault.hang(3))
    await sender.run_once()
    clock.advance(days=2)
    await sender.run_once()
    await sender.aclose()
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "unknown"
    assert twilio.count(sms["id"]) == 1


async def test_opted_out_and_unconsented_numbers_get_no_provider_call(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    twilio: FakeTwilio,
    brand: Any,
) -> None:
    await _place(api)
    await api.place(
        "A-2",
        [backordered("1", "LAMP")],
        customer={**SHOPPER, "phone": "+14155550999", "sms_consent": False},
    )
    async with db.write() as conn:
        await consent.suppress(conn, brand.id, "sms", "+14155550123", "stop", clock.now)
    clock.advance(minutes=11)
    await dispatcher.run_once()
    states = {
        (m["address"], m["state"], m["error_code"])
        for m in await outbox(db)
        if m["channel"] == "sms"
    }
    assert states == {
        ("+14155550123", "suppressed", "stop"),
        ("+14155550999", "suppressed", "no_sms_consent"),
    }
    assert twilio.received == []


async def test_sms_due_in_quiet_hours_waits_and_email_does_not(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    await _place(api)
    # The worker only gets to it at 22:00 in Los Angeles (06:00 UTC next day).
    clock.set(dt.datetime(2026, 11, 3, 6, 0, tzinfo=dt.UTC))
    await dispatcher.run_once()
    sent = await _by_channel(db)
    assert sent["email"]["state"] == "sent"
    assert sent["sms"]["state"] == "queued"
    assert sent["sms"]["due_at"] == dt.datetime(2026, 11, 3, 16, 0, tzinfo=dt.UTC)
    assert twilio.received == []
    clock.set(dt.datetime(2026, 11, 3, 16, 0, tzinfo=dt.UTC))
    await dispatcher.run_once()
    assert len(twilio.received) == 1


async def test_the_daily_cap_holds_more_news_until_the_next_day(
    api: Api, db: Database, clock: FixedClock, dispatcher: Dispatcher, sendgrid: FakeSendGrid
) -> None:
    await api.patch_brand(
        messages_per_order_per_day=1,
        message_triggers={"partial_shipment": ["email"], "backordered": ["email"]},
    )
    await _place(api)
    clock.advance(minutes=11)
    await dispatcher.run_once()
    await api.call(
        "POST",
        "/orders/A-1/shipments",
        {
            "ref": "P1",
            "carrier": "ups",
            "tracking_number": "1Z1",
            "status": "in_transit",
            "lines": [{"line": "1", "quantity": 1}],
        },
        201,
    )
    clock.advance(minutes=11)
    await dispatcher.run_once()
    second = (await outbox(db))[-1]
    assert second["state"] == "queued"
    assert second["error_code"] == "daily_cap"
    # The brand's and customer's day ends at midnight in Los Angeles (08:00 UTC).
    assert second["due_at"] == dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
    assert len(sendgrid.received) == 1
    clock.set(second["due_at"])
    await dispatcher.run_once()
    assert len(sendgrid.received) == 2


async def test_news_that_moved_back_before_sending_is_dropped(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    sendgrid: FakeSendGrid,
    twilio: FakeTwilio,
) -> None:
    await _place(api)
    clock.advance(minutes=11)
    await dispatcher.run_once()
    await api.move("LAMP", "PO-1", expected_date="2026-11-27")
    await api.move("LAMP", "PO-1", expected_date="2026-11-20")
    clock.advance(minutes=11)
    await dispatcher.run_once()
    later = [m for m in await outbox(db) if m["state"] != "sent"]
    assert {m["state"] for m in later} == {"dropped"}
    assert {m["error_code"] for m in later} == {"superseded"}
    assert len(sendgrid.received) == len(twilio.received) == 1


async def test_an_expired_lease_returns_its_messages(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    await _place(api)
    clock.advance(minutes=11)
    first = make_dispatcher(db, settings, clock, twilio, sendgrid, name="first")
    second = make_dispatcher(db, settings, clock, twilio, sendgrid, name="second")
    assert len(await first.claim(clock.now)) == 2  # and then the first worker dies
    assert await second.run_once() == 0  # leased: not the second's to take yet
    clock.advance(seconds=settings.worker_lease_seconds + 1)
    assert await second.run_once() == 2
    assert {m["state"] for m in await outbox(db)} == {"sent"}
    for sender in (first, second):
        await sender.aclose()


async def test_a_send_left_in_flight_becomes_unknown(
    api: Api, db: Database, clock: FixedClock, dispatcher: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    async with db.write() as conn:
        await conn.execute(
            update(messages).values(
                state="sending", lease_until=clock.now + dt.timedelta(seconds=5)
            )
        )
    clock.advance(minutes=11)
    await dispatcher.run_once()
    assert {(m["state"], m["error_code"]) for m in await outbox(db)} == {
        ("unknown", "lease_expired")
    }
    assert twilio.received == []


async def test_optional_eta_mail_carries_one_click_unsubscribe(
    api: Api, db: Database, clock: FixedClock, dispatcher: Dispatcher, sendgrid: FakeSendGrid
) -> None:
    await _place(api)
    clock.advance(minutes=11)
    await dispatcher.run_once()
    await api.move("LAMP", "PO-1", expected_date="2026-11-27")
    clock.advance(minutes=11)
    await dispatcher.run_once()
    eta_mail = sendgrid.received[-1].body
    assert eta_mail["categories"] == ["whereabouts", "eta_changed"]
    headers = eta_mail["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith("<https://track.example.test/u/")
    assert "ada" not in headers["List-Unsubscribe"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_workers_on_postgresql_never_send_the_same_message(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 500, "2026-11-20")
    for n in range(60):
        shopper = {**SHOPPER, "email": f"s{n}@example.com", "phone": f"+1415555{n:04d}"}
        await api.place(f"B-{n}", [backordered("1", "LAMP")], customer=shopper)
    clock.advance(minutes=11)
    small = dataclasses.replace(settings, worker_batch=7)
    workers = [make_dispatcher(db, small, clock, twilio, sendgrid, name=f"w{i}") for i in range(2)]

    async def drain(worker: Dispatcher) -> None:
        done = 1
        while done:
            done = await worker.run_once()

    await asyncio.gather(*(drain(w) for w in workers))
    queued = await outbox(db)
    assert len(queued) == 120
    assert {m["state"] for m in queued} == {"sent"}
    for message in queued:
        fake = twilio if message["channel"] == "sms" else sendgrid
        assert fake.count(message["id"]) == 1
    for worker in workers:
        await worker.aclose()


async def test_the_choice_sms_offers_numbered_replies_and_never_an_opt_out_word(
    api: Api, db: Database, clock: FixedClock, dispatcher: Dispatcher, twilio: FakeTwilio
) -> None:
    await api.sku("LAMP", 0, alternatives=[{"sku": "LAMP-2", "title": "Brass lamp"}])
    # The only supply lands after the 30-day window: the line is at risk from the start.
    await api.supply("LAMP", "PO-1", 5, "2026-12-20")
    await api.place("C-1", [backordered("1", "LAMP")], customer=SHOPPER)
    clock.advance(minutes=11)
    await dispatcher.run_once()
    (sms,) = twilio.received
    body = sms.form["Body"]
    assert "Item LAMP (order C-1) will arrive late." in body
    assert "1 to keep waiting, 2 for a similar item, 3 for a refund" in body
    assert "Reply STOP to opt out." in body  # the first SMS from this brand says how
    for word in ("CANCEL", "STOPALL", "UNSUBSCRIBE", "QUIT", "END "):
        assert word not in body.upper().replace("REPLY STOP TO OPT OUT", "")
    assert (await _by_channel(db))["sms"]["content"]["segments"] <= 2


async def test_the_brands_own_wording_is_what_goes_out(
    api: Api, clock: FixedClock, dispatcher: Dispatcher, twilio: FakeTwilio
) -> None:
    source = "{{ brand.name }} here: order {{ order.number }} has a wait. {{ order.tracking_url }}"
    await api.call("PUT", "/message-templates/backordered.sms.text", {"source": source})
    await _place(api)
    clock.advance(minutes=11)
    await dispatcher.run_once()
    (sms,) = twilio.received
    assert sms.form["Body"].startswith(
        "Acme here: order A-1 has a wait. https://track.example.test/t/"
    )


async def test_one_batch_of_two_brands_keeps_each_brands_wording_and_opt_outs(
    api: Api,
    client: Any,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    twilio: FakeTwilio,
    brand: Any,
    other_brand: Any,
) -> None:
    # The batch is read in one go; nothing of one brand may leak into the other's messages.
    other = Api(client, other_brand)
    source = "{{ brand.name }} says: order {{ order.number }} waits. {{ order.sms_url }}"
    await api.call("PUT", "/message-templates/backordered.sms.text", {"source": source})
    await _place(api)
    await _place(other, "G-1")
    async with db.write() as conn:  # the same number opted out of the other brand only
        await consent.suppress(conn, other_brand.id, "sms", "+14155550123", "stop", clock.now)
    clock.advance(minutes=11)
    assert await dispatcher.run_once() == 4
    states = {(m["brand_id"], m["channel"]): m["state"] for m in await outbox(db)}
    assert states == {
        (brand.id, "email"): "sent",
        (brand.id, "sms"): "sent",
        (other_brand.id, "email"): "sent",
        (other_brand.id, "sms"): "suppressed",
    }
    (sms,) = twilio.received
    assert sms.form["Body"].startswith("Acme says: order A-1 waits. https://track.example.test/s/")


async def test_a_stored_template_that_fails_on_real_data_fails_its_message_only(
    api: Api,
    db: Database,
    clock: FixedClock,
    dispatcher: Dispatcher,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
    brand: Any,
) -> None:
    await _place(api)
    await api.place(
        "A-2", [backordered("1", "LAMP")], customer={**SHOPPER, "phone": "+14155550777"}
    )
    async with db.write() as conn:  # stored before today's checks, or broken by odd data
        await conn.execute(
            message_templates.insert().values(
                brand_id=brand.id,
                name="backordered.sms.text",
                source="{{ order.number }}"
                '{% if order.number == "A-1" %}{{ 1 // (order.number|length - 3) }}{% endif %}',
                created_at=clock.now,
                updated_at=clock.now,
            )
        )
    clock.advance(minutes=11)
    await dispatcher.run_once()
    sms = {m["address"]: m for m in await outbox(db) if m["channel"] == "sms"}
    failed = sms[SHOPPER["phone"]]  # for A-1 the template divides by zero
    assert (failed["state"], failed["error_code"]) == ("failed", "prepare_failed")
    assert "ZeroDivisionError" in failed["error_detail"]
    assert sms["+14155550777"]["state"] == "sent"
    assert [r.form["Body"].split()[0] for r in twilio.received] == ["A-2"]
    assert len(sendgrid.received) == 2


async def test_run_prepares_the_next_batch_while_one_is_out_but_sends_one_at_a_time(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    await _place(api)
    for n in range(2, 6):
        phone = f"+1415555070{n}"
        await api.place(f"A-{n}", [backordered("1", "LAMP")], customer={**SHOPPER, "phone": phone})
    clock.advance(minutes=11)
    # Two messages a batch; the first batch's SMS hangs a while.
    sender = make_dispatcher(
        db, dataclasses.replace(settings, worker_batch=2), clock, twilio, sendgrid
    )
    twilio.fail_next(Fault.hang(0.8))
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    rows: list[dict[str, Any]] = []
    for _ in range(500):
        rows = await outbox(db)
        if sum(m["lease_owner"] == sender.name for m in rows) == 4:
            break
        await asyncio.sleep(0.01)  # poll
    # The next batch is claimed (and rendered) while the first is out, but not marked
    # `sending`: a kill now would leave two messages `unknown`, not four.
    by_state = collections.Counter(m["state"] for m in rows)
    assert by_state == {"sending": 2, "queued": 8}
    assert len(sendgrid.received) == len(twilio.received) == 1
    claimed = [m for m in rows if m["lease_owner"] == sender.name and m["state"] == "queued"]
    assert len(claimed) == 2
    stop.set()
    await running  # returns once the hung request is answered and recorded
    assert await sender.release() == 2
    rows = await outbox(db)
    assert collections.Counter(m["state"] for m in rows) == {"sent": 2, "queued": 8}
    assert all(m["lease_owner"] is None for m in rows)
    while await sender.run_once():
        pass
    await sender.aclose()
    rows = await outbox(db)
    assert [m["state"] for m in rows] == ["sent"] * 10
    received = [r.message_id for r in twilio.received] + [r.message_id for r in sendgrid.received]
    assert sorted(i or 0 for i in received) == sorted(m["id"] for m in rows)
