"""Settle sends whose outcome is unknown by asking the provider what it holds.

A message is `unknown` when its request may have reached the provider but the answer was lost
(see messaging.dispatch). It is never sent again on our own: the provider's status report
settles it, or this lookup does, once the provider has had time to show it (the grace period,
counted from `updated_at`, when the message became unknown):

    found     the provider holds a message that fits (same recipient and content, taken within
              our attempt's time, its id recorded on no other message of ours): the message
              takes the provider's id and state as a status report would (messaging.status,
              never backwards), at least `sent`
    absent    the provider can look and holds none: it never took the request, so the message
              is queued to go now; the lost attempt stays counted, and a message whose
              attempts are used up (MAX_SEND_ATTEMPTS) fails instead. A mail counts as absent
              only once SendGrid's feed, which can lag, still lacks it EMAIL_ABSENT after it
              became unknown (before that: unsure, `lookup:not-yet`)
    unsure    the provider cannot look (SendGrid without its Email Activity add-on, the dev
              inbox), the lookup failed, or the provider holds a message that fits in all but
              its content (Twilio may rewrite a body; it may be ours, so sending again could
              repeat it): the message stays `unknown`, error_detail says why,
              and it is not asked about again for `interval`

The lost attempt stays counted so that something that loses every answer (a proxy dropping
them, say) ends in `failed` after MAX_SEND_ATTEMPTS instead of looping.

Workers share the work through leases, as the dispatcher does: a run claims at most `limit`
messages (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and leases them to itself while it asks; a
message whose lookup failed is leased to nobody until it may be asked about again, and keeps
its `updated_at` (the lookups' window ends there). A provider id is matched to one message of
one address at a time (a transaction-scoped advisory lock on PostgreSQL; SQLite has one writer),
so two identical texts to one number never take the same Twilio SID, and a message whose SID
belongs to another is never marked sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage import events
from app.storage.database import Database
from app.storage.schema import brands, messages
from messaging import status
from messaging.providers import Attempt, EmailProvider, ProviderError, Sighting, SmsProvider

log = logging.getLogger("whereabouts.reconcile")

SMS_GRACE = dt.timedelta(minutes=10)
# SendGrid's activity feed shows a mail minutes after it was taken.
EMAIL_GRACE = dt.timedelta(minutes=30)
INTERVAL = dt.timedelta(hours=1)
# ... but now and then much later: a mail is taken for never received only when the feed still
# lacks it this long after it became unknown, so after two lookups an interval apart.
EMAIL_ABSENT = EMAIL_GRACE + INTERVAL
LIMIT = 50
# Our clock against the provider's, both ways.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Long enough for a run's lookups at the providers' timeouts; a worker that dies lets go then.
LEASE = dt.timedelta(minutes=10)
NOT_RECEIVED = "not_received"
_CONCURRENT_LOOKUPS = 4


@dataclass
class Reconciled:
    """What one run did: how many messages were found, sent again, failed, left unknown."""

    found: int = 0  # the provider has it: it took the provider's id and state
    requeued: int = 0  # the provider never got it: queued to send again
    failed: int = 0  # never got it and its attempts are used up
    unsure: int = 0  # the provider could not tell: still unknown, asked again after `interval`
    settled: int = 0  # a status report or an operator settled it while we asked

    @property
    def total(self) -> int:
        """Count the messages the run claimed."""
        return self.found + self.requeued + self.failed + self.unsure + self.settled


async def reconcile(
    db: Database,
    email_provider: EmailProvider,
    sms_provider: SmsProvider,
    now: dt.datetime,
    *,
    max_attempts: int,
    sms_grace: dt.timedelta = SMS_GRACE,
    email_grace: dt.timedelta = EMAIL_GRACE,
    interval: dt.timedelta = INTERVAL,
    limit: int = LIMIT,
    owner: str | None = None,
) -> Reconciled:
    """Look up at most `limit` unknown emails and SMS at their provider, and settle each.

    Only messages sent through the provider configured now are looked up (another provider
    cannot know them), once `updated_at` is older than the channel's grace period and not
    within `interval` of a lookup that could not tell. `owner` names the run in leases.
    """
    owner = owner or f"reconcile:{secrets.token_hex(4)}"
    providers = {"email": email_provider.name, "sms": sms_provider.name}
    graces = {"email": email_grace, "sms": sms_grace}
    rows = await _claim(db, now, providers, graces, limit, owner)
    done = Reconciled()
    if not rows:
        return done
    senders = await _sms_senders(db, rows)
    gate = asyncio.Semaphore(_CONCURRENT_LOOKUPS)

    async def ask(row: Any) -> list[Sighting] | ProviderError:
        async with gate:
            return await _look_up(row, senders, email_provider, sms_provider)

    answers = await asyncio.gather(*(ask(row) for row in rows))
    for row, answer in zip(rows, answers, strict=True):
        try:
            outcome = await _settle(db, row, answer, now, owner, max_attempts, interval)
        except Exception:  # one message's trouble must not keep the others unsettled
            log.exception("reconciling message %s failed; its lease will return it", row.id)
            continue
        setattr(done, outcome, getattr(done, outcome) + 1)
    log.info(
        "reconciled %d unknown messages: %d found, %d requeued, %d failed, %d unsure",
        done.total,
        done.found,
        done.requeued,
        done.failed,
        done.unsure,
    )
    return done


async def _claim(
    db: Database,
    now: dt.datetime,
    providers: Mapping[str, str],
    graces: Mapping[str, dt.timedelta],
    limit: int,
    owner: str,
) -> list[Any]:
    """Lease up to `limit` unknown messages that are due a lookup to `owner`."""
    due = (
        select(messages.c.id)
        .where(
            messages.c.state == "unknown",
            or_(
                *(
                    and_(
                        messages.c.channel == channel,
                        messages.c.provider == providers[channel],
                        messages.c.updated_at <= now - graces[channel],
                    )
                    for channel in ("email", "sms")
                )
            ),
            or_(messages.c.lease_until.is_(None), messages.c.lease_until < now),
        )
        .order_by(messages.c.updated_at, messages.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    async with db.write() as conn:
        rows = (
            await conn.execute(
                update(messages)
                .where(messages.c.id.in_(due.scalar_subquery()))
                .values(lease_owner=owner, lease_until=now + LEASE)
                .returning(
                    messages.c.id,
                    messages.c.brand_id,
                    messages.c.order_id,
                    messages.c.channel,
                    messages.c.address,
                    messages.c.provider,
                    messages.c.provider_id,
                    messages.c.content,
                    messages.c.attempts,
                    messages.c.due_at,
                    messages.c.updated_at,
                )
            )
        ).all()
    return sorted(rows, key=lambda row: (row.updated_at, row.id))


async def _sms_senders(db: Database, rows: Sequence[Any]) -> dict[int, str | None]:
    """Read each brand's own SMS sender, for messages whose content does not say which it was."""
    ids = sorted({row.brand_id for row in rows if row.channel == "sms"})
    if not ids:
        return {}
    async with db.read() as conn:
        found = await conn.execute(
            select(brands.c.id, brands.c.sms_from).where(brands.c.id.in_(ids))
        )
        return {brand_id: sms_from or None for brand_id, sms_from in found}


async def _look_up(
    row: Any,
    senders: Mapping[int, str | None],
    email_provider: EmailProvider,
    sms_provider: SmsProvider,
) -> list[Sighting] | ProviderError:
    """Ask the provider what it holds that fits the message's last attempt."""
    if row.provider_id:
        # A report without a state taught us the provider's id: the provider has the message.
        return [Sighting(row.provider_id, status="")]
    content = row.content if isinstance(row.content, dict) else {}
    attempt = Attempt(
        message_id=row.id,
        to=row.address,
        # The attempt left after the message was due, and before it became unknown.
        since=row.due_at - CLOCK_SKEW,
        until=row.updated_at + CLOCK_SKEW,
        body=str(content.get("body") or ""),
        subject=str(content.get("subject") or ""),
        # The sender the send used, kept with its content; the brand's own now for messages
        # sent before it was kept.
        from_number=content["from"] if "from" in content else senders.get(row.brand_id),
    )
    try:
        if row.channel == "sms":
            if not attempt.body:
                return ProviderError("no stored body to look it up by", code="no_content")
            return await sms_provider.find_sms(attempt)
        return await email_provider.find_email(attempt)
    except ProviderError as error:
        return error
    except Exception as error:  # a bug or an unexpected library error: leave the row unknown
        log.exception("looking up message %s raised", row.id)
        return ProviderError(f"{type(error).__name__}"[:200], code="internal")


async def _settle(
    db: Database,
    row: Any,
    answer: list[Sighting] | ProviderError,
    now: dt.datetime,
    owner: str,
    max_attempts: int,
    interval: dt.timedelta,
) -> str:
    """Record what the lookup came to; return the Reconciled field it counts in."""
    async with db.write() as conn:
        if isinstance(answer, ProviderError):
            return await _note(conn, row, answer, now, owner, interval)
        await _lock_address(conn, row.channel, row.address)
        # Locked, so a status report arriving now waits for this transaction, then finds the
        # message settled and moves it only forward.
        current = (
            await conn.execute(
                select(messages.c.state, messages.c.lease_owner)
                .where(messages.c.id == row.id)
                .with_for_update()
            )
        ).first()
        if current is None or current.state != "unknown" or current.lease_owner != owner:
            await _let_go(conn, row.id, owner)
            return "settled"
        free = await _not_taken(conn, row, answer)
        exact = [sighting for sighting in free if sighting.exact]
        if exact:
            await _found(conn, row, exact[0], now)
            return "found"
        if free:
            # Taken in our window, to our recipient, from our sender, with other content (the
            # provider may rewrite a body): it may be ours, so sending again may repeat it.
            unsure = ProviderError(
                "the provider holds a message for this address from our sender in the "
                "attempt's time whose content differs from ours: cannot tell",
                code="lookup:ambiguous",
            )
            return await _note(conn, row, unsure, now, owner, interval)
        if row.channel == "email" and now - row.updated_at < EMAIL_ABSENT:
            lagging = ProviderError(
                "the provider's activity feed does not show it yet; it can lag, so it is asked "
                "again before the mail goes a second time",
                code="lookup:not-yet",
            )
            return await _note(conn, row, lagging, now, owner, interval)
        return await _absent(conn, row, now, max_attempts)


async def _lock_address(conn: AsyncConnection, channel: str, address: str) -> None:
    """Match provider ids to one message of this address at a time (see the module)."""
    if conn.dialect.name != "postgresql":
        return  # SQLite runs one write transaction at a time
    digest = hashlib.blake2b(f"reconcile:{channel}:{address}".encode(), digest_size=8).digest()
    await conn.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest, signed=True))))


async def _not_taken(
    conn: AsyncConnection, row: Any, sightings: Sequence[Sighting]
) -> list[Sighting]:
    """Keep the sightings whose provider id no other message of ours has."""
    if not sightings:
        return []
    taken = set(
        (
            await conn.execute(
                select(messages.c.provider_id).where(
                    messages.c.provider == row.provider,
                    messages.c.provider_id.in_([s.provider_id for s in sightings]),
                    messages.c.id != row.id,
                )
            )
        ).scalars()
    )
    return [sighting for sighting in sightings if sighting.provider_id not in taken]


async def _found(conn: AsyncConnection, row: Any, sighting: Sighting, now: dt.datetime) -> None:
    """Give the message the provider's id and state, as a status report would."""
    at = sighting.at or now
    if sighting.status:
        await status.apply_report(
            conn,
            source=row.provider,
            external_id=f"lookup:{sighting.provider_id}:{sighting.status}"[:200],
            message_id=row.id,
            status=sighting.status,
            data=_report_data(row.provider, sighting),
            occurred_at=at,
            now=now,
            provider_id=sighting.provider_id,
        )
    # The provider holds it, so it is at least sent, whatever word the provider used.
    await conn.execute(
        update(messages)
        .where(messages.c.id == row.id, messages.c.state == "unknown")
        .values(state="sent", status_at=at)
    )
    state = (
        await conn.execute(select(messages.c.state).where(messages.c.id == row.id))
    ).scalar_one()
    values: dict[str, Any] = {
        "provider_id": func.coalesce(messages.c.provider_id, sighting.provider_id),
        "sent_at": func.coalesce(messages.c.sent_at, at),
        "lease_owner": None,
        "lease_until": None,
        "updated_at": now,
    }
    if state not in status.FAILED_STATES:
        values.update(error_code=None, error_detail=None)  # why it was unknown no longer holds
    await conn.execute(update(messages).where(messages.c.id == row.id).values(values))


def _report_data(provider: str, sighting: Sighting) -> dict[str, Any]:
    """Word the lookup's answer as the provider's status report would, to be stored alike."""
    if provider == status.TWILIO:
        data = {"MessageSid": sighting.provider_id, "MessageStatus": sighting.status}
        if sighting.error_code:
            data["ErrorCode"] = sighting.error_code
        if sighting.error_detail:
            data["ErrorMessage"] = sighting.error_detail
        return data
    return {"sg_message_id": sighting.provider_id, "event": sighting.status}


async def _absent(conn: AsyncConnection, row: Any, now: dt.datetime, max_attempts: int) -> str:
    """Queue a message the provider never took, or fail it when its attempts are used up."""
    used_up = row.attempts >= max_attempts
    if used_up:
        detail = f"{row.provider} never received it, and its {row.attempts} attempts are used up"
        values: dict[str, Any] = {"state": "failed", "status_at": now}
    else:
        detail = f"{row.provider} never received it: queued to send again"
        values = {"state": "queued", "due_at": now}
    await conn.execute(
        update(messages)
        .where(messages.c.id == row.id)
        .values(
            **values,
            error_code=NOT_RECEIVED,
            error_detail=detail,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
    )
    if not used_up:
        return "requeued"
    await events.record(
        conn,
        row.brand_id,
        [
            events.NewEvent(
                row.order_id,
                "message_failed",
                {
                    "message": row.id,
                    "channel": row.channel,
                    "state": "failed",
                    "error_code": NOT_RECEIVED,
                },
            )
        ],
        now,
    )
    return "failed"


async def _note(
    conn: AsyncConnection,
    row: Any,
    error: ProviderError,
    now: dt.datetime,
    owner: str,
    interval: dt.timedelta,
) -> str:
    """Leave the message unknown with the reason, not to be asked about before `interval`."""
    log.warning("message %s could not be looked up (%s)", row.id, error.code)
    when = now.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    detail = f"lookup at {when} UTC could not tell ({error.code}): {error.detail}"
    result = await conn.execute(
        update(messages)
        .where(
            messages.c.id == row.id,
            messages.c.state == "unknown",
            messages.c.lease_owner == owner,
        )
        # updated_at stays: it bounds the window the lookups search (see the module).
        .values(error_detail=detail[:500], lease_owner=None, lease_until=now + interval)
    )
    if result.rowcount:
        return "unsure"
    await _let_go(conn, row.id, owner)
    return "settled"


async def _let_go(conn: AsyncConnection, message_id: int, owner: str) -> None:
    """Drop our lease on a message someone else settled meanwhile."""
    await conn.execute(
        update(messages)
        .where(messages.c.id == message_id, messages.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )
