"""SIGKILL a worker process mid-batch, again and again: nothing is lost, nothing is sent twice.

Real processes (`python -m app.cli worker`) on a real SQLite file, sending to local servers
that speak Twilio's and SendGrid's wire formats and answer slowly, so kills land while
requests are in flight. Every message must end `sent` (received exactly once) or `unknown`
(received at most once: the request may have left before the kill).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from sqlalchemy import select

from app.settings import Settings
from app.storage.database import Database
from app.storage.schema import messages
from tests.eta.helpers import Api, backordered
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.server import Fault
from tests.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
KILLS = 20
ORDERS = 150


def _worker(
    settings: Settings, twilio: FakeTwilio, sendgrid: FakeSendGrid, log_level: str = "warning"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PUBLIC_URL": settings.public_url,
        "SECRET_KEY": "s" * 64,
        "SMS_PROVIDER": "twilio",
        "TWILIO_ACCOUNT_SID": twilio.account_sid,
        "TWILIO_AUTH_TOKEN": twilio.auth_token,
        "TWILIO_BASE_URL": twilio.url,
        "TWILIO_FROM": "+15557650000",
        "EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_KEY": sendgrid.api_key,
        "SENDGRID_BASE_URL": sendgrid.url,
        "WORKER_BATCH": "8",
        "WORKER_CONCURRENCY": "4",
        "WORKER_LEASE_SECONDS": "2",
        "WORKER_POLL_SECONDS": "0.1",
        "LOG_LEVEL": log_level,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _received(twilio: FakeTwilio, sendgrid: FakeSendGrid) -> int:
    return len(twilio.received) + len(sendgrid.received)


async def _states(db: Database) -> dict[int, tuple[str, str]]:
    async with db.read() as conn:
        rows = await conn.execute(select(messages.c.id, messages.c.channel, messages.c.state))
        return {row.id: (row.channel, row.state) for row in rows}


def _kill_and_restart(
    db_path: str, settings: Settings, twilio: FakeTwilio, sendgrid: FakeSendGrid
) -> None:
    """Start and SIGKILL workers KILLS times, then let a last one drain the queue."""
    rng = random.Random(20)
    for _ in range(KILLS):
        before = _received(twilio, sendgrid)
        worker = _worker(settings, twilio, sendgrid)
        deadline = time.monotonic() + 20
        while _received(twilio, sendgrid) == before and time.monotonic() < deadline:
            if worker.poll() is not None:
                pytest.fail(f"worker exited: {worker.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.02)  # poll
        # A deliberate pause, so kills land at random moments of a batch.
        time.sleep(rng.uniform(0.0, 0.3))  # poll
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        worker.stderr.close()  # type: ignore[union-attr]
    # A last worker finishes the queue and is stopped politely, once it is listening.
    worker = _worker(settings, twilio, sendgrid, log_level="info")
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode() for line in worker.stderr),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM messages WHERE state IN ('queued', 'sending')"
            ).fetchone()[0]
        if pending == 0 and any("started" in line for line in list(lines)):
            break
        time.sleep(0.2)  # poll
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, "".join(lines)[-2000:]
    reader.join(5)
    worker.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_killed_workers_never_lose_or_repeat_a_message(
    api: Api, db: Database, settings: Settings
) -> None:
    await api.patch_brand(coalesce_minutes=0, quiet_hours_start="00:00", quiet_hours_end="00:00")
    await api.sku("LAMP", 0)
    for n in range(ORDERS):
        shopper = {
            "email": f"s{n}@example.com",
            "phone": f"+1415555{n:04d}",
            "sms_consent": True,
        }
        await api.place(f"K-{n}", [backordered("1", "LAMP")], customer=shopper)
    queued = await _states(db)
    assert len(queued) == 2 * ORDERS
    with FakeTwilio() as twilio, FakeSendGrid() as sendgrid:
        # Every answer takes a while, so a kill finds requests in flight.
        twilio.fail_next(Fault.hang(0.15), times=10_000)
        sendgrid.fail_next(Fault.hang(0.15), times=10_000)
        path = settings.database_url.removeprefix("sqlite:///")
        await anyio.to_thread.run_sync(_kill_and_restart, path, settings, twilio, sendgrid)
        states = await _states(db)
        assert set(states) == set(queued), "a message was lost"
        outcome = {state for _, state in states.values()}
        assert outcome <= {"sent", "unknown"}, outcome
        assert "sent" in outcome
        for message_id, (channel, state) in states.items():
            fake = twilio if channel == "sms" else sendgrid
            received = fake.count(message_id)
            if state == "sent":
                assert received == 1, (message_id, state, received)
            else:
                assert received <= 1, (message_id, state, received)
