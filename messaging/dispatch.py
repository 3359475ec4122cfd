"""The dispatcher: claim due messages, render them, send them, record what happened.

A worker claims a batch with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so workers on
several machines never take the same message; SQLite's single writer does the same). For each
message it settles what to do now: send it, hold it (quiet hours, the daily cap), mark it
`suppressed` (no consent, opted out) with no provider call, or drop it (all its news was
superseded). Messages to send are marked `sending` and committed before any request leaves.

The guarantee: a message is sent at most once by us, and never lost.
- A lease that expires before `sending` returns its messages to the queue.
- A message left in `sending` (the worker died after the request may have left, or the reply
  never came) becomes `unknown`: it is never sent again on our own; the provider's status
  callback settles it, or an operator retries it through the API.
- Retryable failures (429, 5xx, a connection that never opened) come back with exponential,
  jittered backoff that honours Retry-After; permanent ones fail at once with the reason kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.settings import Settings
from app.storage import choices as choice_store
from app.storage import events, late_parcels
from app.storage.database import Database
from app.storage.schema import (
    message_news,
    messages,
)
from app.themes.registry import Theme, load_themes
from messaging import consent, links, webhooks
from messaging.compose import Batch
from messaging.context import OPTIONAL_EMAIL_TRIGGERS
from messaging.outbox import chunks, open_key
from messaging.providers import (
    Accepted,
    Email,
    EmailProvider,
    ProviderError,
    Sms,
    SmsProvider,
    build_email_provider,
    build_sms_provider,
)
from messaging.reconcile import LIMIT as RECONCILE_LIMIT
from messaging.reconcile import reconcile
from messaging.render import NO_OVERRIDES, MessageRenderer, RenderTooSlow
from messaging.safe_http import public_only_transport
from messaging.schedule import (
    WEBHOOK_RETRY_WINDOW,
    day_start,
    next_day_start,
    parse_clock,
    quiet_until,
    retry_delay,
    zone,
)

log = logging.getLogger("whereabouts.dispatch")

Clock = Callable[[], dt.datetime]
_ETA_TOPIC = "eta_updates"
_DEADLINE_BATCH = 500
# Late parcels are looked for this often: a due date is a day, a stall days.
_LATE_EVERY = dt.timedelta(minutes=10)
# Messages sent since the earliest local midnight anywhere count against the daily cap.
_CAP_LOOKBACK = dt.timedelta(days=2)
_LOOKUP_RUNS = 20
# Stale sends are looked for at a claim at most this often: a lease runs for minutes, and the
# query (with its write transaction) at every claim cost a busy worker a few percent.
_REAP_EVERY = dt.timedelta(seconds=5)


@dataclass
class _Plan:
    """What to do with one claimed message now."""

    row: Any
    action: str  # send | hold | suppress | drop | fail
    due: dt.datetime | None = None
    reason: str | None = None
    detail: str | None = None
    content: dict[str, Any] | None = None
    outgoing: Email | Sms | None = None
    secrets: Sequence[str] = ()


def worker_name() -> str:
    """Name this worker in leases: host, process and a random suffix."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(3)}"


class Dispatcher:
    """Sends what the outbox holds; `run` loops until stopped, `run_once` does one batch."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        *,
        link_secret: str,
        email: EmailProvider | None = None,
        sms: SmsProvider | None = None,
        renderer: MessageRenderer | None = None,
        themes: Mapping[str, Theme] | None = None,
        name: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.link_secret = link_secret
        self.email = email or build_email_provider(settings)
        self.sms = sms or build_sms_provider(settings)
        self.renderer = renderer or MessageRenderer()
        self.themes = themes or load_themes()
        self.name = name or worker_name()
        # Brands' webhook URLs: connections only to the public addresses vetted as they open
        # (messaging.safe_http), unless private targets are allowed for development.
        self.http = httpx.AsyncClient(
            timeout=settings.send_timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            transport=None if settings.webhook_allow_private else public_only_transport(),
        )
        self._limit = asyncio.Semaphore(settings.worker_concurrency)
        self._deadlines_at: dt.datetime | None = None
        self._late_at: dt.datetime | None = None
        self._lookups_at: dt.datetime | None = None
        self._reap_at: dt.datetime | None = None

    async def aclose(self) -> None:
        """Close the provider clients."""
        await self.email.aclose()
        await self.sms.aclose()
        await self.http.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop` is set; the batch in flight is finished (sent and recorded) first.

        Batches overlap where it is safe: while one batch's requests are out, the next is
        claimed, read and rendered, but it is marked `sending` only once the batch before has
        finished, so a worker killed at any moment leaves at most one batch `unknown`; the
        next one, still `queued` under its lease, returns to the queue when the lease runs out.
        """
        flying: asyncio.Task[None] | None = None
        looking: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                if looking is None or looking.done():
                    looking = self._start_lookups(self.clock())
                try:
                    claimed, plans = await self._claim_and_prepare(self.clock())
                except Exception:
                    log.exception("dispatch batch failed; retrying after a pause")
                    claimed, plans = 0, []
                if flying is not None:
                    await flying
                    flying = None
                if stop.is_set():
                    break  # what was claimed but not settled is given back by `release`
                if plans:
                    try:
                        sending = await self._settle(plans, self.clock())
                    except Exception:
                        log.exception("settling a batch failed; its lease will return it")
                        sending = []
                    if sending:
                        flying = asyncio.create_task(self._send_all(sending))
                if claimed == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.worker_poll_seconds)
        finally:
            if flying is not None:
                await flying
            if looking is not None:
                # A lookup cut short leaves its messages leased a while, then asks again.
                looking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await looking

    def _start_lookups(self, now: dt.datetime) -> asyncio.Task[None] | None:
        """Once a minute, ask the providers about `unknown` sends, off the sending path."""
        if self._lookups_at is not None and now < self._lookups_at:
            return None
        self._lookups_at = now + dt.timedelta(minutes=1)
        return asyncio.create_task(self.lookups(now))

    async def lookups(self, now: dt.datetime) -> None:
        """Settle `unknown` sends by asking their provider (messaging.reconcile), in runs of
        `reconcile.LIMIT` until one comes back short (at most `_LOOKUP_RUNS` a minute)."""
        try:
            for _ in range(_LOOKUP_RUNS):
                done = await reconcile(
                    self.db,
                    self.email,
                    self.sms,
                    now,
                    max_attempts=self.settings.max_send_attempts,
                    owner=self.name,
                )
                if done.total:
                    log.info("looked up unknown sends: %s", done)
                if done.total < RECONCILE_LIMIT:
                    return
        except Exception:
            log.exception("looking up unknown sends failed; trying again in a minute")

    async def run_once(self) -> int:
        """Reap stale sends, apply due choice deadlines, then claim and finish one batch."""
        claimed, plans = await self._claim_and_prepare(self.clock())
        if plans:
            sending = await self._settle(plans, self.clock())
            if sending:
                await self._send_all(sending)
        return claimed

    async def _claim_and_prepare(self, now: dt.datetime) -> tuple[int, list[_Plan]]:
        """Claim a batch and decide (rendering what goes) for each message."""
        await self._deadlines(now)
        await self._late_parcels(now)
        claimed = await self.claim(now)
        if not claimed:
            return 0, []
        return len(claimed), await self._prepare_all(claimed, now)

    async def _send_all(self, sending: list[_Plan]) -> None:
        """Make the batch's requests and record what each came to."""
        results = await asyncio.gather(*(self._send(p) for p in sending))
        try:
            await self._record(list(zip(sending, results, strict=True)), self.clock())
        except Exception:
            # The rows stay `sending`; when their lease runs out they become `unknown`.
            log.exception("recording %d sends failed", len(sending))

    async def _reap(self, conn: AsyncConnection, now: dt.datetime) -> int:
        """Mark sends whose lease ran out as `unknown`: their request may have left."""
        result = await conn.execute(
            update(messages)
            .where(messages.c.state == "sending", messages.c.lease_until < now)
            .values(
                state="unknown",
                error_code="lease_expired",
                error_detail="the worker stopped after the request may have left",
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
        )
        return int(result.rowcount or 0)

    async def _deadlines(self, now: dt.datetime) -> None:
        """Apply the brand's default action to choices past their deadline, once a minute."""
        if self._deadlines_at is not None and now < self._deadlines_at:
            return
        self._deadlines_at = now + dt.timedelta(minutes=1)
        applied = _DEADLINE_BATCH
        while applied == _DEADLINE_BATCH:  # a long backlog goes in several short transactions
            async with self.db.write() as conn:
                applied = await choice_store.apply_deadlines(conn, now, _DEADLINE_BATCH)

    async def _late_parcels(self, now: dt.datetime) -> None:
        """Tell parcels that missed their date or stopped moving (app.storage.late_parcels)."""
        last = self._late_at
        if last is not None and last - _LATE_EVERY <= now < last:  # not due, nor the clock back
            return
        self._late_at = now + _LATE_EVERY
        try:
            told = late_parcels.BATCH
            while told == late_parcels.BATCH:
                async with self.db.write() as conn:
                    told = await late_parcels.tell_late_parcels(conn, now)
        except Exception:  # sending must go on; the next sweep tries again
            log.exception("looking for late parcels failed; trying again in %s", _LATE_EVERY)

    async def claim(self, now: dt.datetime) -> list[Any]:
        """Lease a batch of due messages to this worker (after reaping stale sends)."""
        due = (
            select(messages.c.id)
            .where(
                messages.c.state == "queued",
                messages.c.due_at <= now,
                or_(messages.c.lease_until.is_(None), messages.c.lease_until < now),
            )
            .order_by(messages.c.due_at, messages.c.id)
            .limit(self.settings.worker_batch)
            .with_for_update(skip_locked=True)
        )
        lease = now + dt.timedelta(seconds=self.settings.worker_lease_seconds)
        async with self.db.write() as conn:
            last = self._reap_at
            if last is None or not last - _REAP_EVERY <= now < last:  # due, or the clock went back
                self._reap_at = now + _REAP_EVERY
                await self._reap(conn, now)
            rows = (
                await conn.execute(
                    update(messages)
                    .where(messages.c.id.in_(due.scalar_subquery()))
                    .values(lease_owner=self.name, lease_until=lease, open_key=None, updated_at=now)
                    .returning(*messages.c)
                )
            ).all()
        return sorted(rows, key=lambda r: (r.due_at, r.id))

    async def _prepare_all(self, rows: Sequence[Any], now: dt.datetime) -> list[_Plan]:
        """Read what the batch needs in one go, then decide (and render) each message."""
        hooks = [r for r in rows if r.channel == "webhook"]
        notices = [r for r in rows if r.channel != "webhook"]
        keys: dict[int, list[str]] = {}
        async with self.db.read() as conn:
            for endpoint in sorted({r.endpoint_id for r in hooks}):
                keys[endpoint] = await webhooks.active_secrets(conn, endpoint, now)
            batch = await Batch.load(conn, notices, now - _CAP_LOOKBACK)
        plans = []
        for row in rows:
            try:
                if row.channel == "webhook":
                    plans.append(self._prepare_webhook(row, keys.get(row.endpoint_id, []), now))
                else:
                    try:
                        plans.append(self._prepare_notice(batch, row, now))
                    except RenderTooSlow:
                        # Maybe the machine, not the brand's template: once more, caches warm.
                        plans.append(self._prepare_notice(batch, row, now))
                    if plans[-1].action == "send":
                        batch.going(row, now)
            except Exception as error:  # a brand template that fails on this data, or a bug
                log.exception("message %s could not be prepared", row.id)
                detail = f"{type(error).__name__}: {error}"[:500]
                plans.append(_Plan(row, "fail", reason="prepare_failed", detail=detail))
        return plans

    def _prepare_webhook(self, row: Any, keys: Sequence[str], now: dt.datetime) -> _Plan:
        if now - row.created_at > WEBHOOK_RETRY_WINDOW:
            return _Plan(row, "fail", reason="retry window of 24 hours ran out")
        if not keys:
            return _Plan(row, "fail", reason="the endpoint is gone or disabled")
        return _Plan(row, "send", content=row.content, secrets=keys)

    def _prepare_notice(self, batch: Batch, row: Any, now: dt.datetime) -> _Plan:
        """Decide what to do with a claimed email or SMS, rendering it if it goes now."""
        brand = batch.brands[row.brand_id]
        person = batch.orders[row.order_id]
        news = batch.news.get(row.id, [])
        tz = zone(row.timezone, brand.timezone)
        triggers = {n.trigger for n in news}
        optional = bool(triggers) and triggers <= OPTIONAL_EMAIL_TRIGGERS
        why = batch.suppressed(row, _ETA_TOPIC if optional else consent.ALL)
        if row.channel == "sms" and not person.sms_consent:
            why = why or "no_sms_consent"
        if row.channel == "email" and optional and person.email_consent is False:
            why = why or "no_email_consent"
        if why:
            return _Plan(row, "suppress", reason=why)
        if row.channel == "sms":
            quiet = quiet_until(
                now, tz, parse_clock(brand.quiet_hours_start), parse_clock(brand.quiet_hours_end)
            )
            if quiet is not None:
                return _Plan(row, "hold", due=quiet, reason="quiet_hours")
        if batch.sent_since(row, day_start(now, tz)) >= brand.messages_per_order_per_day:
            due = next_day_start(now, tz)
            if row.channel == "sms":
                start, end = (
                    parse_clock(brand.quiet_hours_start),
                    parse_clock(brand.quiet_hours_end),
                )
                due = quiet_until(due, tz, start, end) or due
            return _Plan(row, "hold", due=due, reason="daily_cap")
        public = self.settings.public_url
        unsubscribe = None
        if row.channel == "email" and triggers & OPTIONAL_EMAIL_TRIGGERS:
            unsubscribe = links.unsubscribe_url(public, self.link_secret, row.id)
        context = batch.context(
            row,
            self.themes,
            f"{public}/t/{person.tracking_token}",
            now,
            unsubscribe,
            sms_url=f"{public}/s/{person.sms_code}" if person.sms_code else None,
        )
        if context is None:
            return _Plan(row, "drop", reason="superseded")
        overrides = batch.overrides.get(row.brand_id, NO_OVERRIDES)
        if row.channel == "sms":
            sms = self.renderer.sms(context, overrides)
            return _Plan(
                row,
                "send",
                content={
                    "body": sms.body,
                    "segments": sms.segments,
                    "encoding": sms.encoding,
                    "units": sms.units,
                    # The brand's sender as it was: a lookup must ask for this one, even if the
                    # brand has changed it since (none: the provider's default).
                    "from": brand.sms_from or None,
                },
                outgoing=Sms(
                    message_id=row.id,
                    to=row.address,
                    body=sms.body,
                    status_callback=f"{public}/hooks/twilio/status/{row.id}",
                    from_number=brand.sms_from,
                ),
            )
        mail = self.renderer.email(context, overrides)
        headers: dict[str, str] = {}
        if unsubscribe is not None:
            headers = {
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        return _Plan(
            row,
            "send",
            content={
                "subject": mail.subject,
                "text": mail.text,
                "html": mail.html,
                "headers": headers,
            },
            outgoing=Email(
                message_id=row.id,
                to=row.address,
                from_email=brand.email_from or self.settings.email_from,
                from_name=brand.name,
                subject=mail.subject,
                text=mail.text,
                html=mail.html,
                categories=("whereabouts", context.lead.trigger),
                headers=headers,
                reply_to=brand.support_email,
            ),
        )

    async def _settle(self, plans: list[_Plan], now: dt.datetime) -> list[_Plan]:
        """Store every decision and mark the sends `sending` before any request leaves.

        Only messages still leased to this worker are settled (renewing the lease): a lease
        that ran out while the batch was being prepared may have gone to another worker.
        Returns the plans to send.
        """
        lease = now + dt.timedelta(seconds=self.settings.worker_lease_seconds)
        async with self.db.write() as conn:
            owned: set[int] = set()
            ids = [plan.row.id for plan in plans]
            for chunk in chunks(ids):
                owned.update(
                    (
                        await conn.execute(
                            update(messages)
                            .where(
                                messages.c.id.in_(chunk),
                                messages.c.lease_owner == self.name,
                                messages.c.state == "queued",
                            )
                            .values(lease_until=lease, updated_at=now)
                            .returning(messages.c.id)
                        )
                    ).scalars()
                )
            if len(owned) < len(ids):
                log.warning(
                    "%d claimed messages were no longer ours to send", len(ids) - len(owned)
                )
            plans = [plan for plan in plans if plan.row.id in owned]
            sending = [plan for plan in plans if plan.action == "send"]
            if sending:
                await conn.execute(
                    update(messages)
                    .where(messages.c.id == bindparam("_id"))
                    .values(
                        state="sending",
                        content=bindparam("_content", type_=messages.c.content.type),
                        attempts=messages.c.attempts + 1,
                        provider=bindparam("_provider"),
                        updated_at=now,
                    ),
                    [
                        {
                            "_id": plan.row.id,
                            "_content": plan.content,
                            "_provider": self._provider_name(plan.row.channel),
                        }
                        for plan in sending
                    ],
                )
            for plan in plans:
                row = plan.row
                if plan.action == "send":
                    continue
                if plan.action == "hold":
                    await self._hold(conn, row, plan.due or now, plan.reason, now)
                else:
                    state = {"suppress": "suppressed", "drop": "dropped", "fail": "failed"}[
                        plan.action
                    ]
                    reason = plan.reason or plan.action
                    await self._finish(conn, row, state, reason, plan.detail or reason, now)
        return sending

    async def _hold(
        self,
        conn: AsyncConnection,
        row: Any,
        due: dt.datetime,
        reason: str | None,
        now: dt.datetime,
    ) -> None:
        """Put a message back until `due`; it takes news again unless another one already does."""
        slot = open_key(row.order_id, row.channel)
        taken = (
            await conn.execute(select(messages.c.id).where(messages.c.open_key == slot))
        ).first()
        if taken is not None:
            # News arrived meanwhile and opened another message: move ours into it.
            await conn.execute(
                update(message_news)
                .where(message_news.c.message_id == row.id)
                .values(message_id=taken.id)
            )
            await conn.execute(
                update(messages)
                .where(messages.c.id == taken.id)
                .values(
                    due_at=func.max(messages.c.due_at, due)
                    if conn.dialect.name == "sqlite"
                    else func.greatest(messages.c.due_at, due)
                )
            )
            await self._finish(conn, row, "dropped", "merged", "merged into a later message", now)
            return
        await conn.execute(
            update(messages)
            .where(messages.c.id == row.id)
            .values(
                due_at=due,
                open_key=slot,
                lease_owner=None,
                lease_until=None,
                error_code=reason,
                updated_at=now,
            )
        )

    async def _finish(
        self,
        conn: AsyncConnection,
        row: Any,
        state: str,
        code: str,
        detail: str | None,
        now: dt.datetime,
    ) -> None:
        await conn.execute(
            update(messages)
            .where(messages.c.id == row.id)
            .values(
                state=state,
                error_code=code[:32],
                error_detail=detail,
                lease_owner=None,
                lease_until=None,
                status_at=now,
                updated_at=now,
            )
        )
        if state == "failed" and row.channel != "webhook":
            await self._tell_failure(conn, row, state, code, now)

    async def _tell_failure(
        self, conn: AsyncConnection, row: Any, state: str, code: str | None, now: dt.datetime
    ) -> None:
        await events.record(
            conn,
            row.brand_id,
            [
                events.NewEvent(
                    row.order_id,
                    "message_failed",
                    {"message": row.id, "channel": row.channel, "state": state, "error_code": code},
                )
            ],
            now,
        )

    def _provider_name(self, channel: str) -> str:
        if channel == "email":
            return self.email.name
        if channel == "sms":
            return self.sms.name
        return "webhook"

    async def _send(self, plan: _Plan) -> Accepted | ProviderError:
        """Make one provider request; every failure comes back as a ProviderError."""
        async with self._limit:
            try:
                if isinstance(plan.outgoing, Email):
                    return await self.email.send_email(plan.outgoing)
                if isinstance(plan.outgoing, Sms):
                    return await self.sms.send_sms(plan.outgoing)
                now_ts = int(self.clock().timestamp())
                return await webhooks.deliver(
                    self.http,
                    plan.row.address,
                    plan.content or {},
                    plan.secrets,
                    now_ts,
                    allow_private=self.settings.webhook_allow_private,
                )
            except ProviderError as error:
                return error
            except Exception as error:  # a bug or an unexpected library error: keep the row honest
                log.exception("send of message %s raised", plan.row.id)
                return ProviderError(str(error)[:200], code="internal", unknown=True)

    async def _record(
        self, outcomes: list[tuple[_Plan, Accepted | ProviderError]], now: dt.datetime
    ) -> None:
        """Store what each request came to."""
        if not outcomes:
            return
        sent: list[dict[str, Any]] = []
        async with self.db.write() as conn:
            for plan, result in outcomes:
                row = plan.row
                if isinstance(result, Accepted):
                    sent.append(
                        {
                            "_id": row.id,
                            "_state": result.state,
                            "_provider_id": result.provider_id,
                        }
                    )
                    continue
                attempts = row.attempts + 1
                detail = result.detail[:500]
                if result.unknown:
                    values: dict[str, Any] = {"state": "unknown"}
                elif result.permanent or (
                    row.channel != "webhook" and attempts >= self.settings.max_send_attempts
                ):
                    values = {"state": "failed", "status_at": now}
                else:
                    wait = retry_delay(attempts, result.retry_after)
                    values = {"state": "queued", "due_at": now + dt.timedelta(seconds=wait)}
                await conn.execute(
                    update(messages)
                    .where(messages.c.id == row.id, messages.c.state.in_(("sending", "unknown")))
                    .values(
                        **values,
                        error_code=result.code[:32],
                        error_detail=detail,
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    )
                )
                if values["state"] == "failed" and row.channel != "webhook":
                    await self._tell_failure(conn, row, "failed", result.code, now)
            if sent:
                # A status callback may have arrived first; never move a state backwards.
                await conn.execute(
                    update(messages)
                    .where(
                        messages.c.id == bindparam("_id"),
                        or_(messages.c.state == "sending", messages.c.state == "unknown"),
                    )
                    .values(
                        state=bindparam("_state"),
                        provider_id=bindparam("_provider_id"),
                        sent_at=now,
                        status_at=now,
                        error_code=None,
                        error_detail=None,
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    ),
                    sent,
                )

    async def release(self) -> int:
        """Give back messages this worker claimed but has not started sending."""
        now = self.clock()
        async with self.db.write() as conn:
            result = await conn.execute(
                update(messages)
                .where(
                    messages.c.lease_owner == self.name,
                    messages.c.state == "queued",
                )
                .values(lease_owner=None, lease_until=None, updated_at=now)
            )
        return int(result.rowcount or 0)
