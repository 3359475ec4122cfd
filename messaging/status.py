"""Delivery reports from providers: what each one means for a message, and recording it.

Twilio status callbacks and SendGrid events arrive late, repeated and out of order. Each report
is stored once (deduplicated on the provider's own id for it) and can only move a message
forward: queued/sending/unknown < sent < delivered | undelivered | failed | bounced. The first
final word wins; later reports are kept in `message_statuses` but change nothing. A message
settled this way also learns its provider id when it had none (a send whose reply was lost).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage import events
from app.storage.dialect import insert_ignore
from app.storage.schema import message_statuses, messages
from messaging import consent

TWILIO = "twilio"
SENDGRID = "sendgrid"
SOURCE_CHANNELS = {TWILIO: "sms", SENDGRID: "email"}

# Reports only ever raise a message's rank. `suppressed` and `dropped` messages never reached a
# provider, so no report applies to them and they are left out.
RANK: Mapping[str, int] = {
    "queued": 0,
    "sending": 0,
    "unknown": 0,
    "sent": 1,
    "delivered": 2,
    "undelivered": 2,
    "failed": 2,
    "bounced": 2,
}
FAILED_STATES = frozenset({"undelivered", "failed", "bounced"})

# Twilio's own queue states all mean "Twilio has it", which is our `sent`.
TWILIO_STATES: Mapping[str, str] = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}

# SendGrid drops a message for these reasons because of the message, not the address, so the
# address stays writable.
_MESSAGE_LEVEL_DROPS = ("invalid smtpapi header", "spam content", "quota")
# Reports that end all mail to the address (the event type and the suppression's reason).
_EMAIL_SUPPRESSING: Mapping[str, str] = {
    "spamreport": "spamreport",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
}

# What a stored report keeps: enough to explain a state, nothing about the recipient (SendGrid
# events carry the address, IP and user agent; Twilio callbacks carry both numbers).
_KEPT_FIELDS: Mapping[str, frozenset[str]] = {
    TWILIO: frozenset(
        {"MessageSid", "MessageStatus", "SmsStatus", "ErrorCode", "ErrorMessage", "AccountSid"}
        | {"MessagingServiceSid", "RawDlrDoneDate", "ChannelStatusMessage"}
    ),
    SENDGRID: frozenset(
        {"event", "sg_event_id", "sg_message_id", "timestamp", "reason", "status", "type"}
        | {"bounce_classification", "attempt", "category", "asm_group_id"}
    ),
}


@dataclass(frozen=True)
class Outcome:
    """What one report means: a state to move to (if any), why it failed, whom to suppress."""

    state: str | None
    error_code: str | None = None
    error_detail: str | None = None
    suppress_reason: str | None = None


def advances(current: str, new: str) -> bool:
    """Tell whether moving a message from `current` to `new` goes forward."""
    if current not in RANK or new not in RANK:
        return False
    return RANK[new] > RANK[current]


def _text(value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


def interpret(source: str, status: str, data: Mapping[str, Any]) -> Outcome:
    """Map a provider's status (Twilio MessageStatus, SendGrid event type) to an outcome."""
    if source == TWILIO:
        state = TWILIO_STATES.get(status.lower())
        if state in FAILED_STATES:
            return Outcome(
                state,
                error_code=_text(data.get("ErrorCode"), 32),
                error_detail=_text(data.get("ErrorMessage"), 500),
            )
        return Outcome(state)
    if source != SENDGRID:
        return Outcome(None)
    reason = _text(data.get("reason"), 500)
    if status == "processed":
        return Outcome("sent")
    if status == "delivered":
        return Outcome("delivered")
    if status == "bounce":
        code = _text(data.get("status"), 32) or "bounce"
        # A block is the receiving server refusing this message (often our reputation), not
        # proof that the address is dead: SendGrid does not suppress it either.
        if str(data.get("type", "")).lower() == "blocked":
            return Outcome("undelivered", error_code=code, error_detail=reason)
        return Outcome("bounced", error_code=code, error_detail=reason, suppress_reason="bounce")
    if status == "dropped":
        address_level = not any(part in (reason or "").lower() for part in _MESSAGE_LEVEL_DROPS)
        return Outcome(
            "failed",
            error_code="dropped",
            error_detail=reason,
            suppress_reason="dropped" if address_level else None,
        )
    if status in _EMAIL_SUPPRESSING:
        return Outcome(None, suppress_reason=_EMAIL_SUPPRESSING[status])
    # deferred, open, click and anything new: kept as a record, no change of state.
    return Outcome(None)


def report_data(source: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the fields of a raw report worth storing; drop the recipient's details."""
    kept = _KEPT_FIELDS.get(source, frozenset())
    return {key: value for key, value in raw.items() if key in kept}


async def apply_report(
    conn: AsyncConnection,
    *,
    source: str,
    external_id: str,
    message_id: int,
    status: str,
    data: Mapping[str, Any],
    occurred_at: dt.datetime,
    now: dt.datetime,
    provider_id: str | None = None,
) -> bool:
    """Record one provider report and move its message forward; False for repeats and strays.

    `status` is the provider's own word (Twilio's MessageStatus, SendGrid's event type) and is
    stored as given. A report about a message we do not have, or one on another channel, is
    ignored: the provider is still answered with success, so it stops retrying.
    """
    message = (
        await conn.execute(
            select(
                messages.c.id,
                messages.c.brand_id,
                messages.c.order_id,
                messages.c.channel,
                messages.c.address,
            ).where(messages.c.id == message_id)
        )
    ).first()
    if message is None or message.channel != SOURCE_CHANNELS.get(source):
        return False
    inserted = await conn.execute(
        insert_ignore(conn, message_statuses, ["source", "external_id"])
        .values(
            message_id=message_id,
            source=source,
            external_id=external_id[:200],
            status=status[:32],
            data=dict(data),
            occurred_at=occurred_at,
            created_at=now,
        )
        .returning(message_statuses.c.id)
    )
    if inserted.first() is None:
        return False
    outcome = interpret(source, status, data)
    if outcome.state is not None:
        await _move(conn, message, outcome, provider_id, occurred_at, now)
    elif provider_id:
        await _learn_provider_id(conn, message_id, provider_id, now)
    if outcome.suppress_reason is not None:
        await consent.suppress(
            conn, message.brand_id, "email", message.address, outcome.suppress_reason, now
        )
    return True


async def _move(
    conn: AsyncConnection,
    message: Any,
    outcome: Outcome,
    provider_id: str | None,
    occurred_at: dt.datetime,
    now: dt.datetime,
) -> None:
    """Move the message to the outcome's state if that is forward; note a failure as an event."""
    new = outcome.state
    assert new is not None
    behind = [state for state in RANK if advances(state, new)]
    values: dict[str, Any] = {"state": new, "status_at": occurred_at, "updated_at": now}
    if provider_id:
        values["provider_id"] = func.coalesce(messages.c.provider_id, provider_id)
    if new in FAILED_STATES:
        values["error_code"] = outcome.error_code
        values["error_detail"] = outcome.error_detail
    # The state test sits in the UPDATE itself: two reports racing on PostgreSQL cannot both
    # read the old state and then write over each other's.
    moved = await conn.execute(
        update(messages)
        .where(messages.c.id == message.id, messages.c.state.in_(behind))
        .values(values)
        .returning(messages.c.id)
    )
    if moved.first() is None:
        if provider_id:
            await _learn_provider_id(conn, message.id, provider_id, now)
        return
    if new in FAILED_STATES:
        await events.record(
            conn,
            message.brand_id,
            [
                events.NewEvent(
                    message.order_id,
                    "message_failed",
                    {
                        "message": message.id,
                        "channel": message.channel,
                        "state": new,
                        "error_code": outcome.error_code,
                    },
                )
            ],
            now,
        )


async def _learn_provider_id(
    conn: AsyncConnection, message_id: int, provider_id: str, now: dt.datetime
) -> None:
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.provider_id.is_(None))
        .values(provider_id=provider_id, updated_at=now)
    )
