"""Settling `unknown` sends by asking the provider, against the Twilio and SendGrid fakes.

A send whose answer was lost is `unknown`; `reconcile` asks the provider (Twilio's Messages
list, SendGrid's Email Activity API) once the grace period is over. What the fake accepted is
marked with the fake's id and never sent again; what it never accepted goes back to the queue
and out exactly once; what cannot be looked up stays unknown and is not asked about too often.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import events, message_statuses
from messaging.dispatch import Dispatcher
from messaging.reconcile import (
    EMAIL_ABSENT,
    EMAIL_GRACE,
    INTERVAL,
    SMS_GRACE,
    Reconciled,
    reconcile,
)
from tests.eta.conftest import FixedClock
from tests.eta.helpers import Api, backordered
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import Fault
from tests.fakes.twilio import FakeTwilio
from tests.messaging.conftest import SHOPPER, make_dispatcher, outbox

pytestmark = pytest.mark.anyio

# The same words for every order, so two orders' texts to one number are identical.
SAME_TEXT = "{{ brand.name }}: an item of yours is on backorder. We will text you its date."


@pytest.fixture
def twilio(clock: FixedClock) -> Iterator[FakeTwilio]:
    """Twilio on the test's clock, so the Messages it lists line up with our attempts."""
    with FakeTwilio(clock=clock) as fake:
        yield fake


@pytest.fixture
def sendgrid(clock: FixedClock) -> Iterator[FakeSendGrid]:
    with FakeSendGrid(clock=clock) as fake:
        yield fake


@pytest.fixture
async def sender(
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> AsyncIterator[Dispatcher]:
    """A dispatcher that gives up on an answer after half a second."""
    dispatcher = make_dispatcher(db, settings, clock, twilio, sendgrid, timeout=0.5)
    yield dispatcher
    await dispatcher.aclose()


async def _place(api: Api, number: str = "A-1") -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 50, "2026-11-20")
    await api.place(number, [backordered("1", "LAMP", 1)], customer=SHOPPER)


async def _settle(sender: Dispatcher, clock: FixedClock, **kwargs: Any) -> Reconciled:
    return await reconcile(
        sender.db,
        sender.email,
        sender.sms,
        clock.now,
        max_attempts=sender.settings.max_send_attempts,
        **kwargs,
    )


async def _by_channel(db: Database) -> dict[str, dict[str, Any]]:
    return {m["channel"]: m for m in await outbox(db)}


async def _send_with(sender: Dispatcher, clock: FixedClock, fake: Any, fault: Fault) -> None:
    """Send the due messages, the next request to `fake` meeting `fault`."""
    clock.advance(minutes=11)
    fake.fail_next(fault)
    await sender.run_once()


async def test_a_lost_answer_twilio_took_is_settled_with_its_sid_and_never_resent(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))
    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["error_code"]) == ("unknown", "timeout")
    (held,) = twilio.messages
    twilio.set_status(held["sid"], "delivered")

    clock.advance(minutes=10)
    done = await _settle(sender, clock)

    assert done == Reconciled(found=1)
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "delivered"
    assert sms["provider_id"] == held["sid"]
    assert (sms["error_code"], sms["error_detail"]) == (None, None)
    assert sms["sent_at"] == clock.now - dt.timedelta(minutes=10)  # when Twilio took it
    assert (sms["lease_owner"], sms["lease_until"]) == (None, None)
    # The lookup asked for the number's Messages; no DateSent filter could hide a queued one.
    (lookup,) = twilio.lookups
    assert lookup.query == {"To": SHOPPER["phone"], "PageSize": "100"}
    async with db.read() as conn:
        stored = (await conn.execute(select(message_statuses))).one()
    assert (stored.source, stored.external_id, stored.status) == (
        "twilio",
        f"lookup:{held['sid']}:delivered",
        "delivered",
    )
    # Settled for good: later runs neither ask again nor send again.
    clock.advance(days=1)
    assert await _settle(sender, clock) == Reconciled()
    assert await sender.run_once() == 0
    assert twilio.count(sms["id"]) == 1
    assert len(twilio.lookups) == 1


async def test_a_request_twilio_never_took_is_sent_again_exactly_once(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.lose())
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "unknown"
    assert twilio.messages == []

    clock.advance(minutes=10)
    assert await _settle(sender, clock) == Reconciled(requeued=1)

    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["due_at"], sms["attempts"]) == ("queued", clock.now, 1)
    assert sms["error_code"] == "not_received"
    assert await sender.run_once() == 1
    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["attempts"]) == ("sent", 2)
    (held,) = twilio.messages
    assert sms["provider_id"] == held["sid"]
    assert twilio.count(sms["id"], accepted_only=True) == 1
    clock.advance(hours=2)
    assert await _settle(sender, clock) == Reconciled()
    assert await sender.run_once() == 0
    assert twilio.count(sms["id"], accepted_only=True) == 1


async def test_an_identical_text_sent_before_is_not_taken_for_the_lost_one(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await api.call("PUT", "/message-templates/backordered.sms.text", {"source": SAME_TEXT})
    await _place(api, "A-1")
    await api.place("A-2", [backordered("1", "LAMP", 1)], customer=SHOPPER)
    # Both texts go in one batch: one is taken, the other lost on the way.
    await _send_with(sender, clock, twilio, Fault.lose())
    texts = {m["state"]: m for m in await outbox(db) if m["channel"] == "sms"}
    assert set(texts) == {"sent", "unknown"}
    assert texts["sent"]["content"]["body"] == texts["unknown"]["content"]["body"]
    (held,) = twilio.messages  # same number, body and sender, taken in the attempt's minute
    assert held["sid"] == texts["sent"]["provider_id"]

    clock.advance(minutes=10)
    assert await _settle(sender, clock) == Reconciled(requeued=1)
    assert await sender.run_once() == 1

    lost = texts["unknown"]["id"]
    rows = {m["id"]: m for m in await outbox(db) if m["channel"] == "sms"}
    assert rows[lost]["state"] == "sent"
    assert rows[lost]["provider_id"] not in (None, held["sid"])
    assert len(twilio.messages) == 2
    assert twilio.count(lost, accepted_only=True) == 1


async def test_two_lost_identical_texts_each_take_at_most_one_sid(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await api.call("PUT", "/message-templates/backordered.sms.text", {"source": SAME_TEXT})
    await _place(api, "A-1")
    await api.place("A-2", [backordered("1", "LAMP", 1)], customer=SHOPPER)
    clock.advance(minutes=11)
    twilio.fail_next(Fault.hang(3), Fault.lose())  # one taken, one not: both unknown
    await sender.run_once()
    assert [m["state"] for m in await outbox(db) if m["channel"] == "sms"] == ["unknown"] * 2
    (held,) = twilio.messages

    clock.advance(minutes=10)
    assert await _settle(sender, clock) == Reconciled(found=1, requeued=1)
    await sender.run_once()

    rows = [m for m in await outbox(db) if m["channel"] == "sms"]
    assert [m["state"] for m in rows] == ["sent", "sent"]
    assert held["sid"] in {m["provider_id"] for m in rows}
    assert len({m["provider_id"] for m in rows}) == 2
    assert len(twilio.messages) == 2


async def test_the_grace_period_passes_before_the_first_lookup(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))

    clock.set(clock.now + SMS_GRACE - dt.timedelta(seconds=1))
    assert await _settle(sender, clock) == Reconciled()
    assert twilio.lookups == []
    assert (await _by_channel(db))["sms"]["state"] == "unknown"
    clock.advance(seconds=1)
    assert await _settle(sender, clock) == Reconciled(found=1)
    assert len(twilio.lookups) == 1


async def test_a_failed_lookup_leaves_it_unknown_until_the_interval_is_over(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))
    unknown_at = (await _by_channel(db))["sms"]["updated_at"]
    twilio.fail_next_lookup(Fault.error(503))

    clock.advance(minutes=10)
    assert await _settle(sender, clock) == Reconciled(unsure=1)
    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["error_code"]) == ("unknown", "timeout")
    assert sms["error_detail"].startswith(f"lookup at {clock.now:%Y-%m-%d %H:%M} UTC")
    assert "twilio:20503" in sms["error_detail"]
    assert sms["updated_at"] == unknown_at
    assert sms["lease_until"] == clock.now + INTERVAL

    clock.set(clock.now + INTERVAL - dt.timedelta(seconds=1))
    assert await _settle(sender, clock) == Reconciled()
    assert len(twilio.lookups) == 1
    clock.advance(seconds=2)
    assert await _settle(sender, clock) == Reconciled(found=1)
    assert twilio.count(sms["id"]) == 1


async def test_a_text_twilio_holds_with_other_words_leaves_it_unknown(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    # Twilio may rewrite a body (smart encoding, link shortening): a Message that fits in all
    # but its words may be ours, so the lost one is neither taken as sent nor sent again.
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))
    (held,) = twilio.messages
    twilio.rewrite_body(held["sid"], held["body"].replace("https://", ""))

    clock.advance(minutes=10)
    assert await _settle(sender, clock) == Reconciled(unsure=1)
    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["provider_id"]) == ("unknown", None)
    assert "lookup:ambiguous" in sms["error_detail"]
    assert await sender.run_once() == 0
    assert twilio.count(sms["id"]) == 1


async def test_attempts_used_up_fail_a_message_the_provider_never_took(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.lose())

    clock.advance(minutes=10)
    done = await reconcile(db, sender.email, sender.sms, clock.now, max_attempts=1)

    assert done == Reconciled(failed=1)
    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["error_code"]) == ("failed", "not_received")
    assert sms["error_detail"] == "twilio never received it, and its 1 attempts are used up"
    async with db.read() as conn:
        told = (
            (await conn.execute(select(events.c.data).where(events.c.type == "message_failed")))
            .scalars()
            .all()
        )
    assert told == [
        {"message": sms["id"], "channel": "sms", "state": "failed", "error_code": "not_received"}
    ]
    assert await sender.run_once() == 0
    assert twilio.messages == []


async def test_a_lost_answer_sendgrid_took_is_settled_from_the_activity_feed(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, sendgrid: FakeSendGrid
) -> None:
    await _place(api)
    await _send_with(sender, clock, sendgrid, Fault.drop())
    mail = (await _by_channel(db))["email"]
    assert mail["state"] == "unknown"
    (request,) = sendgrid.received
    sendgrid.set_status(request.x_message_id or "", "delivered")

    clock.set(clock.now + EMAIL_GRACE - dt.timedelta(seconds=1))
    assert await _settle(sender, clock) == Reconciled()
    clock.advance(seconds=1)
    assert await _settle(sender, clock) == Reconciled(found=1)

    mail = (await _by_channel(db))["email"]
    assert (mail["state"], mail["provider_id"]) == ("delivered", request.x_message_id)
    (lookup,) = sendgrid.lookups
    assert lookup.query == {
        "query": f"unique_args['whereabouts_message_id']=\"{mail['id']}\"",
        "limit": "10",
    }
    assert sendgrid.count(mail["id"]) == 1


async def test_a_mail_sendgrid_never_took_is_sent_again_exactly_once(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, sendgrid: FakeSendGrid
) -> None:
    await _place(api)
    await _send_with(sender, clock, sendgrid, Fault.lose())

    became_unknown = clock.now
    clock.set(became_unknown + EMAIL_GRACE)
    # The feed can lag: not seen once is not enough to send a mail again.
    assert await _settle(sender, clock) == Reconciled(unsure=1)
    mail = (await _by_channel(db))["email"]
    assert (mail["state"], mail["error_code"]) == ("unknown", "timeout")
    assert "(lookup:not-yet)" in mail["error_detail"]
    assert await sender.run_once() == 0
    clock.set(became_unknown + EMAIL_ABSENT - dt.timedelta(minutes=1))
    assert await _settle(sender, clock) == Reconciled()  # not asked again before the interval
    clock.set(became_unknown + EMAIL_ABSENT + dt.timedelta(minutes=1))
    assert await _settle(sender, clock) == Reconciled(requeued=1)
    await sender.run_once()

    mail = (await _by_channel(db))["email"]
    assert (mail["state"], mail["attempts"]) == ("sent", 2)
    assert sendgrid.count(mail["id"], accepted_only=True) == 1
    assert len(sendgrid.lookups) == 2


async def test_sendgrid_without_the_activity_add_on_stays_unknown_and_is_not_pestered(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, sendgrid: FakeSendGrid
) -> None:
    sendgrid.activity_available = False
    await _place(api)
    await _send_with(sender, clock, sendgrid, Fault.hang(3))

    clock.set(clock.now + EMAIL_GRACE)
    assert await _settle(sender, clock) == Reconciled(unsure=1)
    mail = (await _by_channel(db))["email"]
    assert mail["state"] == "unknown"
    assert "sendgrid:no-activity" in mail["error_detail"]
    assert "not available (403: access forbidden)" in mail["error_detail"]
    assert [lookup.status for lookup in sendgrid.lookups] == [403]

    for _ in range(3):  # the dispatcher calls often; SendGrid is asked once an interval
        clock.set(clock.now + INTERVAL / 4)
        assert await _settle(sender, clock) == Reconciled()
    assert len(sendgrid.lookups) == 1
    clock.set(clock.now + INTERVAL / 4 + dt.timedelta(seconds=1))
    assert await _settle(sender, clock) == Reconciled(unsure=1)
    assert len(sendgrid.lookups) == 2
    assert await sender.run_once() == 0
    assert sendgrid.count(mail["id"]) == 1
    assert (await _by_channel(db))["email"]["state"] == "unknown"


async def test_a_final_state_found_is_never_moved_back(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))
    (held,) = twilio.messages
    twilio.set_status(held["sid"], "undelivered", error_code=30003)

    clock.advance(minutes=10)
    assert await _settle(sender, clock) == Reconciled(found=1)

    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["error_code"]) == ("undelivered", "30003")
    # A later word from Twilio cannot move it back.
    twilio.set_status(held["sid"], "sent")
    clock.advance(hours=2)
    assert await _settle(sender, clock) == Reconciled()
    assert (await _by_channel(db))["sms"]["state"] == "undelivered"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_runs_on_postgresql_never_look_up_the_same_message(
    api: Api,
    db: Database,
    settings: Settings,
    clock: FixedClock,
    twilio: FakeTwilio,
    sendgrid: FakeSendGrid,
) -> None:
    await api.sku("LAMP", 0)
    await api.supply("LAMP", "PO-1", 50, "2026-11-20")
    for n in range(12):
        shopper = {**SHOPPER, "phone": f"+1415555{n:04d}", "email": f"s{n}@example.com"}
        await api.place(f"B-{n}", [backordered("1", "LAMP")], customer=shopper)
    clock.advance(minutes=11)
    twilio.fail_next(Fault.hang(3), Fault.lose(), times=6)
    sender = make_dispatcher(
        db,
        dataclasses.replace(settings, worker_concurrency=12),
        clock,
        twilio,
        sendgrid,
        timeout=0.5,
    )
    await sender.run_once()
    assert [m["state"] for m in await outbox(db) if m["channel"] == "sms"] == ["unknown"] * 12

    clock.advance(minutes=10)
    runs = await asyncio.gather(
        *(_settle(sender, clock, limit=5, owner=f"run-{i}") for i in range(3))
    )

    assert sum(run.total for run in runs) == 12
    assert sum(run.found for run in runs) == sum(run.requeued for run in runs) == 6
    assert len(twilio.lookups) == 12
    assert len({lookup.query["To"] for lookup in twilio.lookups}) == 12
    await sender.run_once()
    await sender.aclose()
    assert {m["state"] for m in await outbox(db)} == {"sent"}
    assert len(twilio.messages) == 12


async def test_a_running_worker_looks_up_its_unknown_sends_by_itself(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))
    assert (await _by_channel(db))["sms"]["state"] == "unknown"
    clock.advance(minutes=10)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    for _ in range(500):
        if (await _by_channel(db))["sms"]["state"] != "unknown":
            break
        await asyncio.sleep(0.01)  # poll
    stop.set()
    await running
    sms = (await _by_channel(db))["sms"]
    (held,) = twilio.messages
    assert (sms["state"], sms["provider_id"]) == ("sent", held["sid"])
    assert twilio.count(sms["id"]) == 1


async def test_a_lost_text_is_found_from_its_own_sender_after_the_brand_changes_it(
    api: Api, db: Database, clock: FixedClock, sender: Dispatcher, twilio: FakeTwilio
) -> None:
    await api.patch_brand(sms_from="+15550001111")
    await _place(api)
    await _send_with(sender, clock, twilio, Fault.hang(3))
    sms = (await _by_channel(db))["sms"]
    assert sms["state"] == "unknown"
    assert sms["content"]["from"] == "+15550001111"
    (held,) = twilio.messages
    # The brand moves to another number before the lookup: the text went from the old one.
    await api.patch_brand(sms_from="+15550002222")

    clock.advance(minutes=10)
    done = await _settle(sender, clock)

    # Asked by the new number, nothing would fit, and the text would go a second time.
    assert done == Reconciled(found=1)
    sms = (await _by_channel(db))["sms"]
    assert (sms["state"], sms["provider_id"]) == ("sent", held["sid"])
    assert await sender.run_once() == 0
    assert twilio.count(sms["id"]) == 1
