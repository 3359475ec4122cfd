"""Dispatch benchmark: queued messages sent to local Twilio and SendGrid fakes, end to end.

    python bench/dispatch.py [--messages 20000] [--backend sqlite|postgresql|both] [--workers 1,2]

Data: a fresh migrated database per run with one brand (no coalescing window, quiet hours off,
a high daily cap) and `messages / 2` orders, each with one backordered line (20 SKUs with an
inbound purchase order, so every line has an ETA) and a customer with email, phone and SMS
consent. The orders go in through `app.storage.orders.upsert` in 1,000-order transactions, and
the outbox queues one email and one SMS per order. The dispatcher's clock is an hour after the
orders' clock, so every message is due.

End to end: the fakes (`python -m tests.fakes.twilio` and `tests.fakes.sendgrid`) run as
subprocesses on free ports, so they do not share the dispatcher's GIL. One worker is a
`messaging.dispatch.Dispatcher` in this process; two or more (PostgreSQL) are processes started
from this file, released together once all are ready. Each loops `run_once` until it claims
nothing; the figure is wall time from the first claim to the last worker's finish. Then every
message must be `sent` after one attempt, and each fake must have received each of our message
ids exactly once; a run that fails this is marked "check failed" (the ceiling is still measured,
so its figures can be read) and the benchmark exits 1. The dispatcher's steps are timed by
wrapping them on the instance, to say where each worker's time went.

The ceiling, measured right after each end-to-end run: the same requests (rebuilt from the
content the run stored, checked field by field against what the fakes received) posted straight
to fresh fakes through the same provider classes, with the same number of processes and requests
in flight, and no database.

`--profile DIR` afterwards runs a smaller dispatch under cProfile, with each SQL statement timed,
and prints where the CPU and the statements' time go (outside the figures).

`--messages 2000` takes under a minute here with both backends (36 s; loading the orders, outside
the timing, takes longer than sending them); the default 20,000 about ten, with its quiet waits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import datetime as dt
import functools
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import phonenumbers
from sqlalchemy import event, func, select

if __package__ in (None, ""):  # run as a script (`make bench`): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.api.models import OrderIn, SkuIn, SupplyIn
from app.brands import create_brand
from app.settings import Settings
from app.storage import catalog
from app.storage import orders as store
from app.storage.database import Database
from app.storage.migrate import migrate
from app.storage.schema import message_news, messages
from bench.common import (
    ROOT,
    BenchError,
    Server,
    code_revision,
    cpu_seconds,
    cpu_seconds_of,
    free_port,
    machine,
    machine_cpu_seconds,
    postgres_version,
    throwaway_postgres,
    wait_until_quiet,
)
from messaging.context import TRIGGERS
from messaging.dispatch import Dispatcher
from messaging.providers import Accepted, Email, ProviderError, Sms
from messaging.providers.sendgrid import SendGridProvider, build_payload
from messaging.providers.twilio import TwilioProvider
from messaging.worker import tune_gc
from tests.fakes.sendgrid import API_KEY
from tests.fakes.twilio import ACCOUNT_SID, AUTH_TOKEN

SCRIPT = Path(__file__).resolve()
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PACKAGES = (
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "aiohttp",
    "httpx",
    "jinja2",
    "css-inline",
    "uvicorn",
    "h11",
)
ORDERS_AT = dt.datetime(2026, 11, 2, 18, 0, tzinfo=dt.UTC)  # 10:00 in Los Angeles
SEND_AT = ORDERS_AT + dt.timedelta(hours=1)  # every message is due by then
CHUNK = 1000  # orders per upsert transaction
SKU_COUNT = 20
BRAND_NAME = "Bench Outfitters"
TIMEZONE = "America/Los_Angeles"
PUBLIC_URL = "https://track.bench.example"
EMAIL_FROM = "news@bench.example"
SUPPORT_EMAIL = "help@bench.example"
SMS_FROM = "+15557650000"
LINK_SECRET = "b" * 64
SEND_TIMEOUT = 30.0  # far above a healthy answer from a fake on loopback
AREA_CODES = (415, 510, 206, 503, 212, 646, 617, 312)
FIRST_NAMES = ("Ada", "Grace", "Alan", "Barbara", "Donald", "Frances", "Radia", "Katherine")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Liskov", "Knuth", "Allen", "Perlman", "Johnson")
# Dispatcher steps timed per run (wrapped on the instance; a renamed step is simply not timed).
STEPS = ("_deadlines", "claim", "_prepare_all", "_settle", "_record")


def _log(message: str = "") -> None:
    print(message, flush=True)


# Data ----------------------------------------------------------------------------------------


def phone_numbers(count: int) -> list[str]:
    """Return `count` distinct valid E.164 numbers, always the same ones."""
    found: list[str] = []
    for exchange in range(201, 1000):
        for area in AREA_CODES:
            for line in range(10_000):
                number = f"+1{area}{exchange}{line:04d}"
                if phonenumbers.is_valid_number(phonenumbers.parse(number, None)):
                    found.append(number)
                    if len(found) == count:
                        return found
    raise BenchError(f"could not make {count} phone numbers")


def order_payloads(count: int) -> list[OrderIn]:
    """Build the orders: one backordered line each, a customer who takes email and SMS."""
    placed = (ORDERS_AT - dt.timedelta(hours=2)).isoformat()
    phones = phone_numbers(count)
    payloads = []
    for n, phone in enumerate(phones):
        first, last = FIRST_NAMES[n % len(FIRST_NAMES)], LAST_NAMES[n // 8 % len(LAST_NAMES)]
        sku = f"LAMP-{n % SKU_COUNT:02d}"
        body = {
            "number": f"DB-{n:07d}",
            "placed_at": placed,
            "currency": "USD",
            "customer": {
                "id": f"C{n:07d}",
                "email": f"{first}.{last}.{n}@example.com".lower(),
                "phone": phone,
                "name": f"{first} {last}",
                "locale": "en-US",
                "timezone": TIMEZONE,
                "sms_consent": True,
            },
            "shipping": {"region": "US-CA", "city": "Oakland", "postal_code": "94607"},
            "lines": [
                {
                    "ref": "1",
                    "sku": sku,
                    "title": f"Oak desk lamp, style {n % SKU_COUNT}",
                    "quantity": 1,
                    "unit_price": 12900,
                    "status": "backordered",
                    "backorder_type": "standard",
                }
            ],
        }
        # Through JSON, exactly as the API would receive it.
        payloads.append(OrderIn.model_validate_json(json.dumps(body)))
    return payloads


async def load_orders(database_url: str, payloads: Sequence[OrderIn]) -> float:
    """Migrate a fresh database, create the brand and stock, upsert the orders; return seconds."""
    db = Database(database_url)
    try:
        await migrate(db)
        started = time.perf_counter()
        async with db.write() as conn:
            brand_id = await create_brand(
                conn,
                "bench",
                BRAND_NAME,
                ORDERS_AT,
                timezone=TIMEZONE,
                support_email=SUPPORT_EMAIL,
                email_from=EMAIL_FROM,
                sms_from=SMS_FROM,
                coalesce_minutes=0,
                quiet_hours_start="00:00",
                quiet_hours_end="00:00",
                messages_per_order_per_day=1000,
            )
            per_sku = -(-len(payloads) // SKU_COUNT)
            for k in range(SKU_COUNT):
                sku = f"LAMP-{k:02d}"
                await catalog.put_sku(
                    conn, brand_id, sku, SkuIn(title=f"Oak desk lamp {k}", on_hand=0), ORDERS_AT
                )
                supply = SupplyIn.model_validate_json(
                    json.dumps(
                        {
                            "ref": f"PO-{k:02d}",
                            "quantity": per_sku + 10,
                            "expected_date": (ORDERS_AT.date() + dt.timedelta(days=14)).isoformat(),
                        }
                    )
                )
                await catalog.add_supply(conn, brand_id, sku, supply, ORDERS_AT)
        for start in range(0, len(payloads), CHUNK):
            chunk = payloads[start : start + CHUNK]
            async with db.write() as conn:
                await store.upsert(conn, brand_id, chunk, ORDERS_AT, lambda i: f"orders[{i}].")
        seconds = time.perf_counter() - started
        queued = await message_counts(db)
        want = {("email", "queued"): len(payloads), ("sms", "queued"): len(payloads)}
        if queued != want:
            raise BenchError(f"the outbox queued {queued}, expected {want}")
        async with db.read() as conn:
            late = (
                await conn.execute(
                    select(func.count()).select_from(messages).where(messages.c.due_at > SEND_AT)
                )
            ).scalar_one()
        if late:
            raise BenchError(f"{late} messages are not due at {SEND_AT.isoformat()}")
        return seconds
    finally:
        await db.close()


async def message_counts(db: Database) -> dict[tuple[str, str], int]:
    """Count messages by (channel, state)."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(messages.c.channel, messages.c.state, func.count()).group_by(
                messages.c.channel, messages.c.state
            )
        )
        return {(r[0], r[1]): r[2] for r in rows}


# The fakes -----------------------------------------------------------------------------------


@dataclass
class Fakes:
    twilio: Server
    sendgrid: Server
    twilio_url: str
    sendgrid_url: str

    def cpu(self) -> float:
        return cpu_seconds(self.twilio.pid) + cpu_seconds(self.sendgrid.pid)


@contextlib.contextmanager
def fakes(workdir: Path, label: str) -> Iterator[Fakes]:
    """Run fresh Twilio and SendGrid fakes (each its own process) for the block."""
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[Server, str]] = {}
        for name in ("twilio", "sendgrid"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            argv = [sys.executable, "-m", f"tests.fakes.{name}", "--port", str(port)]
            log_path = workdir / f"fake-{name}-{label}.log"
            server = Server(argv, os.environ, f"{url}/_fake/received", log_path)
            servers[name] = (stack.enter_context(server), url)
        yield Fakes(
            servers["twilio"][0],
            servers["sendgrid"][0],
            servers["twilio"][1],
            servers["sendgrid"][1],
        )


async def received(url: str) -> list[dict[str, Any]]:
    """Read every request a fake recorded (GET /_fake/received)."""
    async with httpx.AsyncClient(timeout=600) as client:
        response = await client.get(f"{url}/_fake/received")
    response.raise_for_status()
    entries: list[dict[str, Any]] = response.json()
    return entries


def check_received(name: str, entries: Sequence[dict[str, Any]], ids: set[int]) -> list[str]:
    """Each of our ids exactly once, each accepted; return the problems found."""
    problems = []
    counts = collections.Counter(entry["message_id"] for entry in entries)
    twice = [i for i, n in counts.items() if n > 1]
    statuses = collections.Counter(entry["status"] for entry in entries)
    if len(entries) != len(ids):
        problems.append(f"{name} received {len(entries):,} requests, expected {len(ids):,}")
    if twice:
        problems.append(f"{name} received {len(twice):,} message ids more than once: {twice[:5]}")
    if set(counts) != ids:
        problems.append(f"{name}: {len(ids - set(counts)):,} of our ids never arrived")
    if set(statuses) - {201, 202}:
        problems.append(f"{name} answered {dict(statuses)}")
    return problems


# Workers ---------------------------------------------------------------------------------------


@dataclass
class StepTimes:
    """Wall time spent in each dispatcher step, in all and per batch."""

    seconds: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    batches: list[tuple[float, int]] = field(default_factory=list)  # (seconds, claimed)
    per_batch: list[dict[str, float]] = field(default_factory=list)  # step -> seconds


def instrument(dispatcher: Dispatcher) -> StepTimes:
    """Time the dispatcher's steps by wrapping them on the instance (a few µs a call)."""
    times = StepTimes()
    for name in STEPS:
        step = getattr(dispatcher, name, None)
        if step is None:
            continue

        @functools.wraps(step)
        async def timed(*args: Any, _step: Any = step, _name: str = name, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await _step(*args, **kwargs)
            finally:
                times.seconds[_name] += time.perf_counter() - started

        setattr(dispatcher, name, timed)
    return times


def make_providers(twilio_url: str, sendgrid_url: str) -> tuple[SendGridProvider, TwilioProvider]:
    """The providers aimed at the fakes, as tests/messaging/conftest.py aims them."""
    return (
        SendGridProvider(API_KEY, sendgrid_url, SEND_TIMEOUT),
        TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, twilio_url, SEND_TIMEOUT, from_number=SMS_FROM),
    )


def make_settings(database_url: str, batch: int, concurrency: int) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "PUBLIC_URL": PUBLIC_URL,
            "WORKER_BATCH": str(batch),
            "WORKER_CONCURRENCY": str(concurrency),
            "SEND_TIMEOUT_SECONDS": str(SEND_TIMEOUT),
            "LOG_LEVEL": "warning",
        }
    )


@dataclass
class Worker:
    """One dispatcher with its database, ready to drain the outbox."""

    db: Database
    dispatcher: Dispatcher
    times: StepTimes

    @classmethod
    async def start(cls, config: dict[str, Any], *, timed: bool = True) -> Worker:
        settings = make_settings(config["database_url"], config["batch"], config["concurrency"])
        db = Database(
            settings.database_url,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            pool_size=settings.db_pool_size,
        )
        async with db.read() as conn:  # open the pool before the clock starts
            await conn.execute(select(1))
        email, sms = make_providers(config["twilio_url"], config["sendgrid_url"])
        dispatcher = Dispatcher(
            db,
            settings,
            lambda: SEND_AT,
            link_secret=LINK_SECRET,
            email=email,
            sms=sms,
            name=config["name"],
        )
        tune_gc()  # as `whereabouts worker` does
        return cls(db, dispatcher, instrument(dispatcher) if timed else StepTimes())

    async def drain(self, deadline: float) -> int:
        """Run the dispatcher as a worker does (`run`, batches overlapping) until a claim
        comes back empty; return how many messages it claimed.

        Batch times are the spans from one claim to the next, with the steps that ran in them
        (with batches overlapping, a span also holds the record of an earlier batch).
        """
        stop = asyncio.Event()
        total = 0
        late = False
        claim = self.dispatcher.claim
        mark, before = time.perf_counter(), dict(self.times.seconds)

        async def counted(now: dt.datetime) -> list[Any]:
            nonlocal total, late, mark, before
            rows = await claim(now)
            total += len(rows)
            if rows:
                at = time.perf_counter()
                self.times.batches.append((at - mark, len(rows)))
                self.times.per_batch.append(
                    {k: v - before.get(k, 0.0) for k, v in self.times.seconds.items()}
                )
                mark, before = at, dict(self.times.seconds)
            if not rows or time.monotonic() > deadline:
                late = bool(rows)
                stop.set()
            return rows

        self.dispatcher.claim = counted  # type: ignore[method-assign]
        try:
            await self.dispatcher.run(stop)
        finally:
            self.dispatcher.claim = claim  # type: ignore[method-assign]
        if late:
            raise BenchError(f"gave up after --max-seconds with {total:,} messages claimed")
        return total

    async def close(self) -> None:
        await self.dispatcher.aclose()
        await self.db.close()


def pace(items: Sequence[Email | Sms], concurrency: int) -> Callable[..., Awaitable[int]]:
    """Return a coroutine function that posts the items with `concurrency` in flight."""

    async def post(email: SendGridProvider, sms: TwilioProvider) -> int:
        pending = iter(items)
        failures: list[str] = []

        async def sender() -> None:
            for item in pending:
                try:
                    if isinstance(item, Email):
                        result = await email.send_email(item)
                    else:
                        result = await sms.send_sms(item)
                except ProviderError as error:
                    failures.append(f"{error.code}: {error.detail}")
                    continue
                if not isinstance(result, Accepted):
                    failures.append(repr(result))

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        if failures:
            raise BenchError(f"{len(failures)} ceiling sends failed, first: {failures[0]}")
        return len(items)

    return post


def save_items(path: Path, items: Sequence[Email | Sms]) -> None:
    """Write requests for the ceiling's processes (JSON, one object per request)."""
    rows = [{"kind": type(item).__name__, **dataclasses.asdict(item)} for item in items]
    path.write_text(json.dumps(rows))


def load_items(path: Path, part: int, parts: int) -> list[Email | Sms]:
    """Read every `parts`-th request from `part` on, as written by `save_items`."""
    items: list[Email | Sms] = []
    for row in json.loads(path.read_text())[part::parts]:
        kind = row.pop("kind")
        if kind == "Email":
            items.append(Email(**{**row, "categories": tuple(row["categories"])}))
        else:
            items.append(Sms(**row))
    return items


def write_text(path: Path, text: str) -> None:
    path.write_text(text + "\n")


def write_json(path: Path, document: dict[str, Any]) -> None:
    def finite(value: Any) -> Any:
        if isinstance(value, float) and value != value:
            return None  # NaN is not JSON
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [finite(v) for v in value]
        return value

    write_text(path, json.dumps(finite(document), indent=2))


async def worker_entry(config: dict[str, Any]) -> None:
    """Entry of a worker process: get ready, say so, wait for "go", work, print a JSON result.

    The process then keeps its connections open until its stdin closes, so PostgreSQL's backends
    still exist when the parent reads their CPU time.
    """
    deadline = time.monotonic() + config["max_seconds"]
    loop = asyncio.get_running_loop()
    if config["role"] == "dispatch":
        worker = await Worker.start(config)
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        cpu, started = time.process_time(), time.monotonic()
        count = await worker.drain(deadline)
        finished = time.monotonic()
        cpu = time.process_time() - cpu
        steps, batches = dict(worker.times.seconds), worker.times.batches
        close = worker.close
    else:
        items = load_items(Path(config["payloads"]), config["part"], config["parts"])
        email, sms = make_providers(config["twilio_url"], config["sendgrid_url"])
        post = pace(items, config["concurrency"])
        tune_gc()  # the ceiling's processes get the workers' collector settings too
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        cpu, started = time.process_time(), time.monotonic()
        count = await post(email, sms)
        finished = time.monotonic()
        cpu = time.process_time() - cpu
        steps, batches = {}, []

        async def close() -> None:
            await email.aclose()
            await sms.aclose()

    result = {
        "started": started,
        "finished": finished,
        "count": count,
        "cpu": cpu,
        "steps": steps,
        "batches": batches,
    }
    print(json.dumps(result), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await close()


@dataclass
class Timed:
    """What a measured phase came to, from the outside."""

    seconds: float
    count: int
    worker_cpu: float
    fakes_cpu: float
    database_cpu: float
    machine_cpu: float
    steps: dict[str, float] = field(default_factory=dict)
    batches: list[tuple[float, int]] = field(default_factory=list)
    per_batch: list[dict[str, float]] = field(default_factory=list)


class Meter:
    """CPU counters of the fakes, PostgreSQL and the whole machine around a measurement."""

    def __init__(self, fake_servers: Fakes, backend: str) -> None:
        self.fakes = fake_servers
        self.backend = backend

    def __enter__(self) -> Meter:
        self.fakes_cpu = self.fakes.cpu()
        self.database_cpu = cpu_seconds_of("postgres") if self.backend == "postgresql" else 0.0
        self.machine_cpu = machine_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.machine_cpu = machine_cpu_seconds() - self.machine_cpu
        self.fakes_cpu = self.fakes.cpu() - self.fakes_cpu
        if self.backend == "postgresql":
            self.database_cpu = cpu_seconds_of("postgres") - self.database_cpu
            if self.database_cpu < 0:  # backends that exited took their CPU time with them
                self.database_cpu = float("nan")


async def run_processes(
    configs: Sequence[dict[str, Any]], fake_servers: Fakes, backend: str, workdir: Path
) -> Timed:
    """Start one process per config, release them together, wait for the last to finish."""
    processes: list[asyncio.subprocess.Process] = []
    logs = []
    try:
        for i, config in enumerate(configs):
            log_path = workdir / f"{config['role']}-{backend}-{len(configs)}-{i}.log"
            logs.append(log_path)
            with log_path.open("wb") as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        str(SCRIPT),
                        "--worker-entry",
                        json.dumps(config),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log,
                    )
                )
        for process, log_path in zip(processes, logs, strict=True):
            assert process.stdout is not None
            line = await process.stdout.readline()
            if line.strip() != b"ready":
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"a {configs[0]['role']} process did not start:\n{tail}")
        with Meter(fake_servers, backend) as meter:
            released = time.monotonic()
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            results = []
            for process, log_path in zip(processes, logs, strict=True):
                assert process.stdout is not None
                line = await process.stdout.readline()
                if not line:
                    await process.wait()
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise BenchError(f"a {configs[0]['role']} process failed:\n{tail}")
                results.append(json.loads(line))
        for process in processes:  # now they may close their connections and exit
            assert process.stdin is not None
            process.stdin.close()
        for process, log_path in zip(processes, logs, strict=True):
            if await process.wait() != 0:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"a {configs[0]['role']} process failed at exit:\n{tail}")
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    steps: dict[str, float] = collections.defaultdict(float)
    for result in results:
        for name, seconds in result["steps"].items():
            steps[name] += seconds
    return Timed(
        seconds=max(r["finished"] for r in results) - released,
        count=sum(r["count"] for r in results),
        worker_cpu=sum(r["cpu"] for r in results),
        fakes_cpu=meter.fakes_cpu,
        database_cpu=meter.database_cpu,
        machine_cpu=meter.machine_cpu,
        steps=dict(steps),
        batches=[(b[0], b[1]) for r in results for b in r["batches"]],
    )


async def dispatch_in_process(
    config: dict[str, Any], fake_servers: Fakes, backend: str, deadline: float
) -> Timed:
    """Drain the outbox with one Dispatcher in this process."""
    worker = await Worker.start(config)
    try:
        with Meter(fake_servers, backend) as meter:
            cpu, started = time.process_time(), time.perf_counter()
            count = await worker.drain(deadline)
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
    finally:
        await worker.close()
    return Timed(
        seconds,
        count,
        cpu,
        meter.fakes_cpu,
        meter.database_cpu,
        meter.machine_cpu,
        dict(worker.times.seconds),
        worker.times.batches,
        worker.times.per_batch,
    )


async def ceiling_in_process(
    items: Sequence[Email | Sms], concurrency: int, fake_servers: Fakes
) -> Timed:
    """Post the items straight to the fakes from this process."""
    email, sms = make_providers(fake_servers.twilio_url, fake_servers.sendgrid_url)
    post = pace(items, concurrency)
    tune_gc()
    try:
        with Meter(fake_servers, "-") as meter:
            cpu, started = time.process_time(), time.perf_counter()
            count = await post(email, sms)
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
    finally:
        await email.aclose()
        await sms.aclose()
    return Timed(seconds, count, cpu, meter.fakes_cpu, 0.0, meter.machine_cpu)


# Checks and the ceiling's payloads -------------------------------------------------------------


async def stored_messages(database_url: str) -> list[Email | Sms]:
    """Rebuild each sent message's request from what the run stored, in id order."""
    db = Database(database_url)
    try:
        async with db.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        messages.c.id, messages.c.channel, messages.c.address, messages.c.content
                    ).order_by(messages.c.id)
                )
            ).all()
            triggers: dict[int, list[str]] = collections.defaultdict(list)
            for news in await conn.execute(
                select(message_news.c.message_id, message_news.c.trigger)
            ):
                triggers[news.message_id].append(news.trigger)
    finally:
        await db.close()
    items: list[Email | Sms] = []
    for row in rows:
        content = row.content
        if row.channel == "email":
            lead = min(triggers[row.id], key=TRIGGERS.index)
            items.append(
                Email(
                    message_id=row.id,
                    to=row.address,
                    from_email=EMAIL_FROM,
                    from_name=BRAND_NAME,
                    subject=content["subject"],
                    text=content["text"],
                    html=content["html"],
                    categories=("whereabouts", lead),
                    headers=content["headers"],
                    reply_to=SUPPORT_EMAIL,
                )
            )
        else:
            items.append(
                Sms(
                    message_id=row.id,
                    to=row.address,
                    body=content["body"],
                    status_callback=f"{PUBLIC_URL}/hooks/twilio/status/{row.id}",
                    from_number=SMS_FROM,
                )
            )
    return items


def check_same_requests(
    items: Sequence[Email | Sms],
    twilio_entries: Sequence[dict[str, Any]],
    sendgrid_entries: Sequence[dict[str, Any]],
) -> list[str]:
    """Compare the ceiling's requests with what the dispatcher sent, field by field."""
    mails = {entry["message_id"]: entry["body"] for entry in sendgrid_entries}
    texts = {entry["message_id"]: entry["form"] for entry in twilio_entries}
    differ = []
    for item in items:
        if item.message_id not in (mails if isinstance(item, Email) else texts):
            continue  # never arrived: check_received says so
        if isinstance(item, Email):
            same = json.loads(json.dumps(build_payload(item))) == mails.get(item.message_id)
        else:
            form = {
                "To": item.to,
                "Body": item.body,
                "StatusCallback": item.status_callback,
                "From": item.from_number,
            }
            same = form == texts.get(item.message_id)
        if not same:
            differ.append(item.message_id)
    if differ:
        return [f"{len(differ):,} rebuilt requests differ from what was sent, e.g. {differ[:5]}"]
    return []


async def check_run(
    database_url: str, fake_servers: Fakes, messages_count: int
) -> tuple[list[Email | Sms], list[str]]:
    """Check that every message went exactly once; return the ceiling's requests, the problems."""
    half = messages_count // 2
    db = Database(database_url)
    try:
        states = await message_counts(db)
        async with db.read() as conn:
            retried = (
                await conn.execute(
                    select(func.count()).select_from(messages).where(messages.c.attempts != 1)
                )
            ).scalar_one()
            unsent = (
                await conn.execute(
                    select(
                        messages.c.id,
                        messages.c.channel,
                        messages.c.state,
                        messages.c.attempts,
                        messages.c.error_code,
                        messages.c.error_detail,
                    )
                    .where(messages.c.state != "sent")
                    .order_by(messages.c.id)
                    .limit(5)
                )
            ).all()
    finally:
        await db.close()
    problems = []
    if states != {("email", "sent"): half, ("sms", "sent"): half}:
        problems.append(f"message states {states}, expected all {messages_count:,} sent")
        problems += [f"  not sent: {tuple(row)}" for row in unsent]
    if retried:
        problems.append(f"{retried:,} messages took other than one attempt")
    items = await stored_messages(database_url)
    twilio_entries = await received(fake_servers.twilio_url)
    sendgrid_entries = await received(fake_servers.sendgrid_url)
    ids = ids_by_channel(items)
    problems += check_received("the Twilio fake", twilio_entries, ids["sms"])
    problems += check_received("the SendGrid fake", sendgrid_entries, ids["email"])
    problems += check_same_requests(items, twilio_entries, sendgrid_entries)
    return items, problems


def ids_by_channel(items: Sequence[Email | Sms]) -> dict[str, set[int]]:
    ids: dict[str, set[int]] = {"email": set(), "sms": set()}
    for item in items:
        ids["email" if isinstance(item, Email) else "sms"].add(item.message_id)
    return ids


async def check_ceiling(fake_servers: Fakes, items: Sequence[Email | Sms]) -> None:
    ids = ids_by_channel(items)
    problems = check_received(
        "the Twilio fake", await received(fake_servers.twilio_url), ids["sms"]
    )
    problems += check_received(
        "the SendGrid fake", await received(fake_servers.sendgrid_url), ids["email"]
    )
    if problems:
        raise BenchError("the ceiling did not check out:\n  " + "\n  ".join(problems))


# Runs and the report -----------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    backend: str
    workers: int
    timed: Timed
    load_seconds: float = float("nan")
    ceiling: Run | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.timed.count / self.timed.seconds

    @property
    def share(self) -> float:
        return self.rate / self.ceiling.rate if self.ceiling else float("nan")

    def cores(self, cpu: float) -> float:
        return cpu / self.timed.seconds

    @property
    def others(self) -> float:
        t = self.timed
        database = t.database_cpu if t.database_cpu == t.database_cpu else 0.0
        return max(0.0, t.machine_cpu - t.worker_cpu - t.fakes_cpu - database) / t.seconds

    def trend(self) -> str:
        """Messages per second over the first and the last tenth of the batches."""
        batches = self.timed.batches
        if self.workers != 1 or len(batches) < 20:
            return "-"
        tenth = len(batches) // 10

        def rate(part: Sequence[tuple[float, int]]) -> float:
            return sum(n for _, n in part) / sum(s for s, _ in part)

        return f"{rate(batches[:tenth]):,.0f} → {rate(batches[-tenth - 1 : -1]):,.0f}"

    def as_json(self) -> dict[str, Any]:
        t = self.timed
        return {
            "name": self.name,
            "backend": self.backend,
            "workers": self.workers,
            "messages": t.count,
            "seconds": t.seconds,
            "messages_per_second": self.rate,
            "vs_ceiling": self.share,
            "ceiling_per_second": self.ceiling.rate if self.ceiling else None,
            "load_seconds": self.load_seconds,
            "worker_cpu_seconds": t.worker_cpu,
            "fakes_cpu_seconds": t.fakes_cpu,
            "postgres_cpu_seconds": t.database_cpu,
            "others_cores": self.others,
            "steps_seconds": t.steps,
            "batches": len(t.batches),
            "longest_batch_seconds": max((s for s, _ in t.batches), default=None),
            "problems": self.problems,
        }


def _number(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def results_table(runs: Sequence[Run]) -> str:
    header = (
        "| measurement | backend | workers | seconds | messages/s | vs ceiling | "
        "per worker CPU-s | worker cores | fakes cores | postgres cores | others cores | "
        "msg/s first → last tenth |"
    )
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        t = run.timed
        share = "-" if run.ceiling is None else f"{run.share:.0%}"
        lines.append(
            f"| {run.name}{' (**check failed**)' if run.problems else ''} | {run.backend} | "
            f"{run.workers} | {t.seconds:,.1f} | "
            f"**{run.rate:,.0f}** | {share} | {t.count / t.worker_cpu:,.0f} | "
            f"{run.cores(t.worker_cpu):.2f} | {run.cores(t.fakes_cpu):.2f} | "
            f"{_number(run.cores(t.database_cpu), 2) if run.backend == 'postgresql' else '-'} | "
            f"{run.others:.2f} | {run.trend()} |"
        )
    return "\n".join(lines)


def steps_table(runs: Sequence[Run]) -> str:
    """Where each worker's wall time went, as shares and milliseconds per message.

    Sends overlap the next batch's claim, prepare and settle, so "the rest" is the time
    spent only waiting on requests.
    """
    lines = [
        "| end to end | claim (+ reap, deadlines) | prepare: read + render | settle | "
        "the rest: sends not overlapped | record | prepare ms/message | "
        "requests/s in the rest |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        steps, t = run.timed.steps, run.timed
        if not steps:
            continue
        busy = t.seconds * run.workers
        claim = steps.get("claim", 0) + steps.get("reap", 0) + steps.get("_deadlines", 0)
        prepare, settle, record = (steps.get(k, 0) for k in ("_prepare_all", "_settle", "_record"))
        send_wall = max(0.0, busy - claim - prepare - settle - record)
        lines.append(
            f"| {run.backend}, {run.workers} worker{'s' if run.workers > 1 else ''} | "
            f"{claim / busy:.0%} | {prepare / busy:.0%} | {settle / busy:.0%} | "
            f"{send_wall / busy:.0%} | {record / busy:.0%} | "
            f"{prepare * 1000 / t.count:.2f} | "
            f"{f'{t.count / send_wall:,.0f}' if send_wall > 0.05 * busy else '-'} |"
        )
    return "\n".join(lines)


def trend_table(runs: Sequence[Run]) -> str:
    """Milliseconds per message in each step, first tenth of the batches against the last."""
    lines = [
        "| end to end, 1 worker: ms per message, first → last tenth | claim (+ reap, deadlines) "
        "| prepare | settle | send phase | record | all |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        t = run.timed
        if len(t.per_batch) != len(t.batches):
            continue  # steps per batch are kept for the in-process worker only
        done = [(b, p) for b, p in zip(t.batches, t.per_batch, strict=True) if b[1]]
        if len(done) < 20:
            continue
        tenth = len(done) // 10
        shares: list[list[float]] = []
        for part in (done[:tenth], done[-tenth:]):
            count = sum(b[1] for b, _ in part)
            total = sum(b[0] for b, _ in part)
            claim = sum(p.get("claim", 0) + p.get("_deadlines", 0) for _, p in part)
            prepare, settle, record = (sum(p.get(k, 0) for _, p in part) for k in STEPS[2:])
            send = total - claim - prepare - settle - record
            shares.append([x * 1000 / count for x in (claim, prepare, settle, send, record, total)])
        cells = [f"{a:.2f} → {b:.2f}" for a, b in zip(shares[0], shares[1], strict=True)]
        lines.append(f"| {run.backend} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


# Profile -----------------------------------------------------------------------------------------


class StatementLog:
    """Time each SQL statement at the driver (in aiosqlite's thread on SQLite)."""

    def __init__(self, db: Database) -> None:
        self.totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
        engine = db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        entry = self.totals[" ".join(statement.split())[:110]]
        entry[0] += 1
        entry[1] += time.perf_counter() - conn.info.pop("bench_started")


def _package(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if filename.startswith(str(ROOT)):
        return "/".join(Path(filename).relative_to(ROOT).parts[:2])
    if filename == "~":
        return "idle: waiting in epoll" if "poll" in function else f"builtin {function}"
    return "stdlib " + Path(filename).stem


def time_renderer(dispatcher: Dispatcher) -> dict[str, float]:
    """Time the dispatcher's renderer calls (plain functions) by wrapping them on the instance."""
    spent = {"seconds": 0.0}
    renderer = dispatcher.renderer
    for name in ("email", "sms"):
        render = getattr(renderer, name)

        def timed(*args: Any, _render: Any = render, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _render(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - started

        setattr(renderer, name, timed)
    return spent


def own_time_by_package(path: Path) -> collections.Counter[str]:
    """Add up a cProfile dump's own (exclusive) time per package."""
    stats = pstats.Stats(str(path))
    packages: collections.Counter[str] = collections.Counter()
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        packages[_package(filename, function)] += row[2]
    return packages


def render_seconds(path: Path) -> float:
    """Return the inclusive time of MessageRenderer.email and .sms (plain functions)."""
    stats = pstats.Stats(str(path))
    return sum(
        row[3]
        for (filename, _line, function), row in stats.stats.items()  # type: ignore[attr-defined]
        if filename.endswith("messaging/render.py") and function in ("email", "sms")
    )


async def profile(args: argparse.Namespace, workdir: Path, out_dir: Path, deadline: float) -> str:
    """Profile a smaller dispatch on SQLite, then its ceiling; return the summary.

    Two passes on two fresh databases: one times each SQL statement at the driver, the other
    runs under cProfile (without the step timers), and the ceiling follows under cProfile too.
    """
    count = min(args.messages, args.profile_messages)
    payloads = order_payloads(count // 2)
    statements_url = f"sqlite:///{workdir}/profile-statements.db"
    await load_orders(statements_url, payloads)
    with fakes(workdir, "profile-statements") as fake_servers:
        worker = await Worker.start(_config(args, statements_url, fake_servers, "p"), timed=False)
        statements = StatementLog(worker.db)
        rendering = time_renderer(worker.dispatcher)
        started = time.perf_counter()
        try:
            sent = await worker.drain(deadline)
        finally:
            await worker.close()
        plain_seconds = time.perf_counter() - started
    url = f"sqlite:///{workdir}/profile.db"
    await load_orders(url, payloads)
    dispatch_path, ceiling_path = out_dir / "dispatch.pstats", out_dir / "ceiling.pstats"
    with fakes(workdir, "profile") as fake_servers:
        worker = await Worker.start(_config(args, url, fake_servers, "profile"), timed=False)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        try:
            sent = await worker.drain(deadline)
        finally:
            profiler.disable()
            await worker.close()
        seconds = time.perf_counter() - started
        profiler.dump_stats(dispatch_path)
        items, problems = await check_run(url, fake_servers, count)
        if problems:
            raise BenchError("the profiled dispatch did not check out: " + "; ".join(problems))
    with fakes(workdir, "profile-ceiling") as fake_servers:
        email, sms = make_providers(fake_servers.twilio_url, fake_servers.sendgrid_url)
        profiler = cProfile.Profile()
        profiler.enable()
        await pace(items, args.concurrency)(email, sms)
        profiler.disable()
        await email.aclose()
        await sms.aclose()
        profiler.dump_stats(ceiling_path)
    dispatch, ceiling = own_time_by_package(dispatch_path), own_time_by_package(ceiling_path)
    names = [name for name, _ in dispatch.most_common(20)]
    names += [name for name, _ in ceiling.most_common(12) if name not in names]
    lines = [
        f"profile: SQLite, 1 worker, {sent:,} messages: {sent / plain_seconds:,.0f}/s with SQL "
        f"statements timed, {sent / seconds:,.0f}/s under cProfile (which inflates every figure "
        f"below); {dispatch_path}, {ceiling_path}",
        f"render (MessageRenderer.email and .sms): {rendering['seconds'] * 1000 / sent:.2f} ms "
        f"per message timed plainly, {render_seconds(dispatch_path) * 1000 / sent:.2f} ms under "
        f"cProfile",
        "own time per message by package under cProfile, end to end | ceiling (ms):",
    ]
    for name in names:
        lines.append(
            f"  {dispatch[name] * 1000 / sent:7.2f} | {ceiling[name] * 1000 / len(items):7.2f}  "
            f"{name}"
        )
    lines.append(
        f"  {sum(dispatch.values()) * 1000 / sent:7.2f} | "
        f"{sum(ceiling.values()) * 1000 / len(items):7.2f}  in all (idle included)"
    )
    sql = sum(entry[1] for entry in statements.totals.values())
    lines.append(
        f"SQL at the driver (no cProfile): "
        f"{sum(e[0] for e in statements.totals.values()) / sent:.1f} statements and "
        f"{sql * 1000 / sent:.2f} ms per message; the biggest:"
    )
    ranked = sorted(statements.totals.items(), key=lambda item: -item[1][1])
    for statement, (calls, spent) in ranked[:12]:
        lines.append(
            f"  {spent / sql:6.1%}  {calls / sent:4.2f}/msg  {spent * 1e6 / calls:7.0f} µs each  "
            f"{statement}"
        )
    return "\n".join(lines)


# Main ------------------------------------------------------------------------------------------


def _config(
    args: argparse.Namespace, url: str, fake_servers: Fakes | None, name: str
) -> dict[str, Any]:
    return {
        "role": "dispatch",
        "database_url": url,
        "twilio_url": fake_servers.twilio_url if fake_servers else "",
        "sendgrid_url": fake_servers.sendgrid_url if fake_servers else "",
        "batch": args.batch,
        "concurrency": args.concurrency,
        "name": name,
        "max_seconds": args.max_seconds,
    }


async def _settle(args: argparse.Namespace, deadline: float) -> None:
    budget = min(args.quiet_wait, (deadline - time.monotonic()) / 4)
    if budget <= 0:
        return
    load = await wait_until_quiet(budget)
    if load > 0.3:
        _log(f"  (the machine stays busy: {load:.1f} cores in use by others; measuring anyway)")


@contextlib.asynccontextmanager
async def fresh_database(
    backend: str, args: argparse.Namespace, workdir: Path, label: str
) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir}/dispatch-{label}.db"
        return
    async with throwaway_postgres(args.postgres_url, prefix="wa_bench_dispatch") as url:
        yield url


async def measure(
    backend: str,
    workers: int,
    args: argparse.Namespace,
    payloads: Sequence[OrderIn],
    workdir: Path,
    deadline: float,
) -> list[Run]:
    """Load a fresh database, dispatch it end to end, check it, then measure the ceiling."""
    label = f"{backend}-{workers}"
    async with fresh_database(backend, args, workdir, label) as url:
        load_seconds = await load_orders(url, payloads)
        _log(
            f"  {backend}, {workers} worker(s): loaded {len(payloads):,} orders "
            f"({2 * len(payloads):,} messages queued) in {load_seconds:.1f} s"
        )
        await _settle(args, deadline)
        with fakes(workdir, label) as fake_servers:
            configs = [_config(args, url, fake_servers, f"bench-{i}") for i in range(workers)]
            if workers == 1:
                timed = await dispatch_in_process(configs[0], fake_servers, backend, deadline)
            else:
                timed = await run_processes(configs, fake_servers, backend, workdir)
            run = Run("end to end", backend, workers, timed, load_seconds)
            _log(
                f"  {backend}, {workers} worker(s): {run.rate:,.0f} messages/s "
                f"({timed.seconds:.1f} s, {len(timed.batches)} batches, the longest "
                f"{max(s for s, _ in timed.batches):.1f} s)"
            )
            if timed.count != args.messages:
                raise BenchError(f"the workers claimed {timed.count:,} of {args.messages:,}")
            items, run.problems = await check_run(url, fake_servers, args.messages)
    if run.problems:
        # Say so loudly, and still measure the ceiling so the figures can be read.
        _log(f"  {backend}, {workers} worker(s): CHECK FAILED:\n    " + "\n    ".join(run.problems))
    else:
        _log(
            f"  {backend}, {workers} worker(s): checked: all sent once, each id received once, "
            f"requests rebuilt for the ceiling match what was sent"
        )
    await _settle(args, deadline)
    with fakes(workdir, f"ceiling-{label}") as fake_servers:
        if workers == 1:
            ceiling = await ceiling_in_process(items, args.concurrency, fake_servers)
        else:
            payload_path = workdir / f"payloads-{label}.json"
            save_items(payload_path, items)
            configs = []
            for part in range(workers):
                config = _config(args, "", fake_servers, f"ceiling-{part}")
                config.update(role="ceiling", payloads=str(payload_path), part=part, parts=workers)
                configs.append(config)
            ceiling = await run_processes(configs, fake_servers, "-", workdir)
        await check_ceiling(fake_servers, items)
    run.ceiling = Run("ceiling: providers → fakes, no database", "-", workers, ceiling)
    _log(
        f"  ceiling, {workers} process(es) x {args.concurrency} in flight: "
        f"{run.ceiling.rate:,.0f} requests/s; end to end is {run.share:.0%} of it"
    )
    return [run, run.ceiling]


async def main_async(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.max_seconds
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    described = machine(PACKAGES)
    if "postgresql" in backends:
        described["postgresql"] = await postgres_version(args.postgres_url)
    _log(
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n"
        f"code: {code_revision()}\n"
        "machine: " + "; ".join(f"{k} {v}" for k, v in described.items())
    )
    started = time.perf_counter()
    payloads = order_payloads(args.messages // 2)
    _log(
        f"{len(payloads):,} orders ({args.messages:,} messages: one email and one SMS each), "
        f"built in {time.perf_counter() - started:.1f} s; WORKER_BATCH {args.batch}, "
        f"WORKER_CONCURRENCY {args.concurrency}"
    )
    plan = [("sqlite", 1)] if "sqlite" in backends else []
    plan += [("postgresql", w) for w in args.workers] if "postgresql" in backends else []
    runs: list[Run] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wa-dispatch-") as tmp:
        workdir = Path(tmp)
        for backend, workers in plan:
            try:
                runs += await measure(backend, workers, args, payloads, workdir, deadline)
            except BenchError as exc:
                failures.append(f"{backend}, {workers} worker(s): {exc}")
                _log(f"  {backend}, {workers} worker(s): FAILED: {exc}")
        report(runs, args)
        failures += [
            f"{run.backend}, {run.workers} worker(s): " + "; ".join(run.problems)
            for run in runs
            if run.problems
        ]
        if args.json:
            document = {
                "command": sys.argv,
                "code": code_revision(),
                "machine": described,
                "messages": args.messages,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "runs": [run.as_json() for run in runs],
                "failures": failures,
            }
            write_json(Path(args.json), document)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            summary = await profile(args, workdir, args.profile, deadline)
            write_text(args.profile / "profile.txt", summary)
            _log("\n" + summary)
    for failure in failures:
        _log(f"FAILED: {failure}")
    return 1 if failures else 0


def report(runs: Sequence[Run], args: argparse.Namespace) -> None:
    """Print the tables, the noise warnings and the verdict on the targets."""
    _log("\n" + results_table(runs))
    _log("\n" + steps_table([r for r in runs if r.name == "end to end"]))
    trends = trend_table([r for r in runs if r.name == "end to end"])
    if trends:
        _log("\n" + trends)
    for run in runs:
        if run.others > 0.3:
            _log(
                f"NOISY: {run.name} {run.backend} x{run.workers}: other work kept "
                f"{run.others:.1f} cores busy meanwhile; its figures are pessimistic"
            )
    for run in runs:
        if run.name == "end to end" and run.backend == "sqlite" and run.workers == 1:
            fast = run.rate >= args.target
            close = run.share >= args.target_share
            _log(
                f"\nSQLite, 1 worker: {run.rate:,.0f} messages/s "
                f"({'meets' if fast else 'MISSES'} >= {args.target:,}/s), "
                f"{run.share:.0%} of the ceiling "
                f"({'meets' if close else 'MISSES'} >= {args.target_share:.0%})"
            )


def _workers(raw: str) -> list[int]:
    values = [int(part) for part in raw.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("give worker counts like 1,2")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/dispatch.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=20_000, help="messages to send, an even number (20000)"
    )
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="both", help="(both)"
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=[1, 2],
        help="worker processes on PostgreSQL (1,2); SQLite always runs one",
    )
    parser.add_argument("--batch", type=int, default=200, help="WORKER_BATCH (200)")
    parser.add_argument("--concurrency", type=int, default=32, help="WORKER_CONCURRENCY (32)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WHEREABOUTS_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="an admin URL; a throwaway database is created there and dropped afterwards",
    )
    parser.add_argument("--target", type=int, default=1000, help="SQLite messages/s (1000)")
    parser.add_argument(
        "--target-share", type=float, default=0.6, help="share of the ceiling (0.6)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each measurement, wait up to this long for other work on the machine to "
        "calm down (30 s from 10,000 messages up, else 0)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=3600, help="give up after this long (3600)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="afterwards, profile a dispatch on SQLite (cProfile and SQL timings) into DIR",
    )
    parser.add_argument(
        "--profile-messages", type=int, default=2000, help="messages for --profile (2000)"
    )
    parser.add_argument("--worker-entry", help=argparse.SUPPRESS)
    return parser


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker_entry:
        asyncio.run(worker_entry(json.loads(args.worker_entry)))
        return 0
    if args.messages < 2 or args.messages % 2:
        parser.error("--messages must be an even number: one email and one SMS per order")
    if args.quiet_wait is None:
        args.quiet_wait = 30.0 if args.messages >= 10_000 else 0.0
    # Stop cleanly (fakes and workers stopped, throwaway databases dropped) on Ctrl-C or a plain
    # kill, even when started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return asyncio.run(main_async(args))
    except BenchError as exc:
        print(f"bench/dispatch.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
