"""An SMS reply, received: deduplicated, matched to a brand, read, applied, answered in TwiML.

`receive` runs in one write transaction. The inbound row goes in first, keyed on Twilio's
MessageSid: a retry of a message already handled finds it and gets the stored answer back,
changing nothing (on PostgreSQL a retry racing the first delivery waits for its commit). The
brand is the one whose `sms_from` the reply was sent to; on a shared number (TWILIO_FROM), the
one with open choices for that phone, else the one that last texted it. STOP and START act on
consent for every brand that texts from the number the keyword was sent to (carriers block per
sending number), even when no brand knows the phone; no text follows a STOP, nor any answer to
a number that opted out (HELP excepted). Anything else goes to `messaging.conversation`, whose
plan is applied through `app.storage.choices`, the same path the tracking page uses.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from twilio.twiml.messaging_response import MessagingResponse

from app.domain.choices import UNDECIDED
from app.i18n import Formatter, negotiate, translations
from app.storage import choices as choice_store
from app.storage.dialect import insert_ignore
from app.storage.schema import (
    brands,
    choices,
    customers,
    inbound_sms,
    messages,
    order_lines,
    orders,
    sms_conversations,
)
from messaging import consent, conversation
from messaging.conversation import Sentence
from messaging.replies import Reading, read_reply

log = logging.getLogger("whereabouts.inbound")

SMS = "sms"
# Message states in which an SMS may have reached the number.
_TEXTED = ("sending", "sent", "delivered", "undelivered", "unknown")
_SETTLED_SHOWN = 20  # recent decisions looked at to tell what already happened


@dataclass(frozen=True)
class InboundSms:
    """What Twilio posted: its message id, the shopper's number, ours, and the text."""

    sid: str
    from_number: str
    to_number: str
    body: str


@dataclass(frozen=True)
class Answer:
    twiml: str
    outcome: str
    replayed: bool = False


async def receive(conn: AsyncConnection, sms: InboundSms, now: dt.datetime) -> Answer:
    """Handle one inbound SMS once; return the TwiML to answer with (the stored one on a retry)."""
    stored = await conn.execute(
        insert_ignore(conn, inbound_sms, ["provider_id"])
        .values(
            provider_id=sms.sid,
            from_number=sms.from_number[:16],
            to_number=sms.to_number[:34],
            body=sms.body[:1600],
            outcome="received",
            created_at=now,
        )
        .returning(inbound_sms.c.id)
    )
    row_id = stored.scalar_one_or_none()
    if row_id is None:
        first = (
            await conn.execute(
                select(inbound_sms.c.reply, inbound_sms.c.outcome).where(
                    inbound_sms.c.provider_id == sms.sid
                )
            )
        ).one()
        return Answer(first.reply or twiml(None), first.outcome, replayed=True)
    reading = read_reply(sms.body)
    brand = await _brand_for(conn, sms.to_number, sms.from_number)
    if reading.kind in ("optout", "optin"):
        answer = await _keyword(conn, brand, sms, reading.kind == "optout", now)
    elif brand is None:
        text = translations("en").gettext(conversation.UNKNOWN_NUMBER)
        answer = Answer(twiml(text), "unknown_number")
    else:
        answer = await _handle(conn, brand, sms, reading, now)
    await conn.execute(
        update(inbound_sms)
        .where(inbound_sms.c.id == row_id)
        .values(
            brand_id=None if brand is None else brand.id,
            outcome=answer.outcome,
            reply=answer.twiml,
        )
    )
    log.info("inbound sms %s: %s", row_id, answer.outcome)
    return answer


def twiml(text: str | None) -> str:
    """Build the TwiML answer: one message, or none."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


async def _keyword(
    conn: AsyncConnection, brand: Any, sms: InboundSms, stop: bool, now: dt.datetime
) -> Answer:
    """Opt the number out (STOP and its siblings) or back in (START), for every sender brand.

    Carriers and Twilio block a number per sending number, whatever the brand: a STOP sent to
    a shared number stops every brand that texts from it, so each of them records it.
    """
    phone = sms.from_number
    senders = await _senders(conn, sms.to_number)
    if brand is not None:
        senders.add(brand.id)
    for brand_id in sorted(senders):
        if stop:
            await consent.suppress(conn, brand_id, SMS, phone, reason="stop", now=now)
        else:
            await consent.lift(conn, brand_id, SMS, phone)
    if stop:
        # Twilio and the carriers send their own confirmation; another text is not allowed.
        return Answer(twiml(None), "optout")
    if brand is None:
        return Answer(twiml(translations("en").gettext(conversation.OPTED_IN_ANY)), "optin")
    locale = await _locale(conn, brand, phone, None)
    text = translations(locale).gettext(conversation.OPTED_IN) % {"brand": brand.name}
    return Answer(twiml(text), "optin")


async def _senders(conn: AsyncConnection, to_number: str) -> set[int]:
    """The brands that text from this number: their own, else the shared one (no `sms_from`)."""
    named = set(
        (await conn.execute(select(brands.c.id).where(brands.c.sms_from == to_number))).scalars()
    )
    if named:
        return named
    shared = select(brands.c.id).where(or_(brands.c.sms_from.is_(None), brands.c.sms_from == ""))
    return set((await conn.execute(shared)).scalars())


async def _handle(
    conn: AsyncConnection, brand: Any, sms: InboundSms, reading: Reading, now: dt.datetime
) -> Answer:
    phone = sms.from_number
    silenced = await consent.is_suppressed(conn, brand.id, SMS, phone) is not None
    if reading.kind == "help":
        contact = ", ".join(
            c for c in (brand.support_phone, brand.support_email, brand.support_url) if c
        )
        msgid = conversation.HELP if contact else conversation.HELP_NO_CONTACT
        locale = await _locale(conn, brand, phone, None)
        text = translations(locale).gettext(msgid) % {"brand": brand.name, "contact": contact}
        # HELP must always be answered, even after an opt-out.
        return Answer(twiml(text), "help")

    state = await _conversation(conn, brand.id, phone, now)
    await _settle_overdue(conn, brand.id, phone, now)
    open_orders, customer_locale = await _open_orders(conn, brand.id, phone, now)
    settled = await _settled(conn, brand.id, phone)
    plan = conversation.respond(reading, state, open_orders, settled)
    for action in plan.decide:
        try:
            await choice_store.decide(
                conn,
                brand.id,
                action.order_id,
                action.choice_id,
                action.decision,
                action.alternative,
                "sms",
                now,
            )
        except choice_store.ChoiceError as exc:
            # A second choice on a line already switched or refunded by the first: closed at
            # its deadline.
            log.debug("inbound sms: choice %s not decided: %s", action.choice_id, exc)
    if plan.escalate:
        await choice_store.escalate(conn, brand.id, plan.escalate, now)
    await conn.execute(
        update(sms_conversations)
        .where(sms_conversations.c.brand_id == brand.id, sms_conversations.c.phone == phone)
        .values(pending=dict(plan.state.pending), unclear=plan.state.unclear, updated_at=now)
    )
    if silenced:
        # The shopper opted out: the reply still counts, but no text may go back.
        return Answer(twiml(None), plan.outcome)
    locale = await _locale(conn, brand, phone, customer_locale)
    return Answer(twiml(_render(plan.answer, brand, locale)), plan.outcome)


def _render(sentences: tuple[Sentence, ...], brand: Any, locale: str) -> str:
    catalog = translations(locale)
    fmt = Formatter(locale, zoneinfo.ZoneInfo(brand.timezone))
    return conversation.render(
        sentences,
        catalog.gettext,
        lambda at: fmt.short_date(fmt.today(at)),
        {"brand": brand.name},
    )


async def _brand_for(conn: AsyncConnection, to_number: str, phone: str) -> Any:
    """Find the brand a reply is for; None when nothing ties the number to one."""
    named = (await conn.execute(select(brands).where(brands.c.sms_from == to_number))).all()
    if len(named) == 1:
        return named[0]
    # A shared number (several brands, or ours): decide by the phone's orders and texts.
    scope = [b.id for b in named] or list(
        (await conn.execute(select(brands.c.id).order_by(brands.c.id))).scalars()
    )
    if not scope:
        return None
    # Brand ids listed first so the (brand_id, phone) index serves the lookup.
    mine = (customers.c.brand_id.in_(scope), customers.c.phone == phone)
    waiting = (
        await conn.execute(
            select(choices.c.brand_id, func.max(choices.c.created_at).label("latest"))
            .join(orders, orders.c.id == choices.c.order_id)
            .join(customers, customers.c.id == orders.c.customer_id)
            .where(*mine, choices.c.state.in_(UNDECIDED))
            .group_by(choices.c.brand_id)
        )
    ).all()
    found: int | None = None
    if len(waiting) == 1:
        found = waiting[0].brand_id
    else:
        candidates = [w.brand_id for w in waiting] or scope
        texted = (
            await conn.execute(
                select(messages.c.brand_id)
                .join(orders, orders.c.id == messages.c.order_id)
                .join(customers, customers.c.id == orders.c.customer_id)
                .where(
                    *mine,
                    messages.c.brand_id.in_(candidates),
                    messages.c.channel == SMS,
                    messages.c.address == phone,
                    messages.c.state.in_(_TEXTED),
                )
                .order_by(messages.c.created_at.desc(), messages.c.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if texted is not None:
            found = texted
        elif waiting:
            found = max(waiting, key=lambda w: w.latest).brand_id
    if found is None:
        return None
    return (await conn.execute(select(brands).where(brands.c.id == found))).one()


async def _conversation(
    conn: AsyncConnection, brand_id: int, phone: str, now: dt.datetime
) -> conversation.State:
    """Load (creating) the number's conversation, locked so its replies take turns."""
    await conn.execute(
        insert_ignore(conn, sms_conversations, ["brand_id", "phone"]).values(
            brand_id=brand_id, phone=phone, pending={}, unclear=0, updated_at=now
        )
    )
    row = (
        await conn.execute(
            select(sms_conversations.c.pending, sms_conversations.c.unclear)
            .where(sms_conversations.c.brand_id == brand_id, sms_conversations.c.phone == phone)
            .with_for_update()
        )
    ).one()
    return conversation.State(dict(row.pending or {}), int(row.unclear))


def _phone_choices(brand_id: int, phone: str) -> Any:
    """The number's choices in this brand: joined through its orders and customer records."""
    return (
        choices.join(orders, orders.c.id == choices.c.order_id)
        .join(customers, customers.c.id == orders.c.customer_id)
        .join(order_lines, order_lines.c.id == choices.c.order_line_id)
    ), (customers.c.brand_id == brand_id, customers.c.phone == phone)


async def _settle_overdue(
    conn: AsyncConnection, brand_id: int, phone: str, now: dt.datetime
) -> None:
    """Apply the default to the number's choices already past their deadline."""
    joined, mine = _phone_choices(brand_id, phone)
    overdue = list(
        (
            await conn.execute(
                select(choices.c.id)
                .select_from(joined)
                .where(*mine, choices.c.state.in_(UNDECIDED), choices.c.deadline < now)
            )
        ).scalars()
    )
    if overdue:
        await choice_store.apply_deadlines(
            conn, now, limit=len(overdue), only=overdue, told_via=SMS
        )


async def _open_orders(
    conn: AsyncConnection, brand_id: int, phone: str, now: dt.datetime
) -> tuple[list[conversation.OpenOrder], str | None]:
    """Load the number's orders with undecided choices (locked), their codes made distinct."""
    joined, mine = _phone_choices(brand_id, phone)
    rows = (
        await conn.execute(
            select(
                choices.c.id,
                choices.c.order_id,
                choices.c.order_line_id,
                choices.c.alternatives,
                choices.c.short_ref,
                orders.c.number,
                orders.c.placed_at,
                customers.c.locale,
                order_lines.c.title,
            )
            .select_from(joined)
            .where(
                *mine,
                choices.c.state.in_(UNDECIDED),
                order_lines.c.status == "backordered",
            )
            .order_by(orders.c.placed_at, orders.c.id, order_lines.c.position, choices.c.id)
            .with_for_update(of=choices)
        )
    ).all()
    by_order: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_order[row.order_id].append(row)
    refs = await choice_store.settle_refs(
        conn,
        {
            order_id: next((row.short_ref for row in group if row.short_ref), None)
            for order_id, group in by_order.items()
        },
        now,
    )
    found = []
    for order_id, group in by_order.items():
        lines: dict[int, list[Any]] = defaultdict(list)
        for row in group:
            lines[row.order_line_id].append(row)
        found.append(
            conversation.OpenOrder(
                order_id,
                group[0].number,
                refs[order_id],
                tuple(
                    conversation.Line(
                        line[0].title,
                        tuple(r.id for r in line),
                        tuple(
                            (str(a.get("sku")), str(a.get("title") or a.get("sku")))
                            for a in line[-1].alternatives or []
                            if a.get("sku")
                        ),
                    )
                    for line in lines.values()
                ),
            )
        )
    locale = next((row.locale for row in reversed(rows) if row.locale), None)
    return found, locale


async def _settled(conn: AsyncConnection, brand_id: int, phone: str) -> list[conversation.Settled]:
    """Load the number's latest decided choices, one per order, to tell what happened."""
    joined, mine = _phone_choices(brand_id, phone)
    rows = (
        await conn.execute(
            select(
                choices.c.order_id,
                choices.c.short_ref,
                choices.c.state,
                choices.c.decision,
                choices.c.decided_at,
                choices.c.deadline,
                orders.c.number,
            )
            .select_from(joined)
            .where(
                *mine,
                choices.c.state.in_(("made", "defaulted")),
                choices.c.decision.is_not(None),
            )
            .order_by(choices.c.decided_at.desc(), choices.c.id.desc())
            .limit(_SETTLED_SHOWN)
        )
    ).all()
    seen: dict[int, conversation.Settled] = {}
    for row in rows:
        if row.order_id in seen:
            continue
        defaulted = row.state == "defaulted"
        seen[row.order_id] = conversation.Settled(
            row.order_id,
            row.number,
            row.short_ref,
            row.decision,
            defaulted,
            row.deadline if defaulted else row.decided_at,
        )
    return list(seen.values())


async def _locale(conn: AsyncConnection, brand: Any, phone: str, known: str | None) -> str:
    """The shopper's language: their customer record's, else the brand's default."""
    if known is None:
        known = (
            await conn.execute(
                select(customers.c.locale)
                .where(
                    customers.c.brand_id == brand.id,
                    customers.c.phone == phone,
                    customers.c.locale.is_not(None),
                )
                .order_by(customers.c.updated_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    return negotiate(None, known, None, brand.default_locale)
