"""Tracking page benchmark: repeat views and cold renders of /t/{token} under wrk, beside a ceiling.

    python bench/page.py [--orders 100000] [--backend sqlite|postgresql] [--duration 15]
                         [--profile DIR] [--json FILE]

`--orders` realistic orders (bench/ingest.py's seeded generator) are loaded through the batch API
of a real `whereabouts serve` into a fresh database (`--data-dir DIR` keeps the SQLite file and
reuses it next time). Their tracking tokens are read from the database and shuffled. Two servers
then run side by side on 127.0.0.1, and wrk (`--connections` 64, one thread, a Lua script
rotating through a list of URLs) measures each phase for `--duration` seconds after a
`--warmup`, with the server's CPU and memory and what the rest of the machine used:

- ceiling: a bare Starlette endpoint returning a small HTML string, under `uvicorn.run` with the
  options `whereabouts serve` passes (one worker, no access log, no proxy headers); measured
  first and last, and the ratios are taken against the mean;
- repeat views: `whereabouts serve --no-migrate` (WEB_CONCURRENCY=1) answering the pages of
  `--repeat-set` orders (100), each viewed once beforehand: full 200 answers from the page
  cache, then the same requests with their If-None-Match (304 answers);
- cold renders: the same server, every request an order never requested before; wrk reports
  whether it ran out of fresh orders and started over (it must not);
- reference: the issue's "minimal page with two queries" (the order by token, then its lines,
  through the app's `Database`) on the ceiling's server, on other fresh orders.

wrk's counts prove what was answered: non-2xx/3xx responses and socket errors must be 0, and the
bytes per response tell full pages from 304s. Since the machine may be shared, the table also
gives requests per second of server CPU. `--profile DIR` then, outside the figures, samples the
server with py-spy during a repeat and a cold run and replays cold renders in-process with every
SQL statement and aiosqlite thread round trip counted, and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    BenchError,
    Profiler,
    Server,
    busy_cores,
    code_revision,
    cpu_seconds,
    cpu_seconds_of,
    executable,
    free_port,
    machine,
    machine_cpu_seconds,
    postgres_version,
    run_command,
    throwaway_postgres,
)
from bench.ingest import DEFAULT_POSTGRES, describe, make_dataset, post_batches

PACKAGES = ("starlette", "uvicorn", "h11", "jinja2", "sqlalchemy", "aiosqlite", "asyncpg")
TARGETS = {"repeat views": 0.50, "repeat views, 304": 0.50, "cold renders": 0.25}
REFERENCE = "reference: bare Starlette + 2 queries"
P99_TARGET_MS = 100.0
PROFILE_RATE = 200  # py-spy samples per second
BARE_BODY = "<!doctype html><html lang=en><meta charset=utf-8><title>ok</title><p>ok</p></html>"

# wrk rotates through a file of requests, one "path<TAB>If-None-Match" a line (the tag may be
# empty); thread k of n takes lines k, k+n, ... Each thread counts how often it ran out and
# started over, so a cold run can prove that no order was requested twice.
WRK_SCRIPT = r"""
local threads = {}
local made = 0

function setup(thread)
  made = made + 1
  thread:set("id", made)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1]))
  local step = tonumber(args[2])
  queue = {}
  local n = 0
  for line in file:lines() do
    n = n + 1
    if (n - id) % step == 0 then
      local path, tag = line:match("^([^\t]*)\t?(.*)$")
      local headers = {}
      if tag ~= "" then headers["If-None-Match"] = tag end
      queue[#queue + 1] = wrk.format("GET", path, headers)
    end
  end
  file:close()
  position = 0
  wraps = 0
end

function request()
  position = position + 1
  if position > #queue then
    position = 1
    wraps = wraps + 1
  end
  return queue[position]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do wrapped = wrapped + thread:get("wraps") end
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d " ..
    "timeout=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%d wraps=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, wrapped))
end
"""


# The ceiling ---------------------------------------------------------------------------------


def bare_app() -> Starlette:
    """Build a bare Starlette app: one route answering a small HTML string, and /healthz.

    With DATABASE_URL set it also answers `/two/{token}`, the reference the issue quotes: a
    minimal page from two queries (the order by token, then its lines) through the app's own
    `Database` (SQLAlchemy on aiosqlite or asyncpg), without the page's code.
    """

    async def page(request: Request) -> Response:
        return HTMLResponse(BARE_BODY)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [Route("/", page), Route("/healthz", health)]
    url = os.environ.get("DATABASE_URL")
    if not url:
        return Starlette(routes=routes)

    from sqlalchemy import select

    from app.storage.database import Database
    from app.storage.schema import order_lines, orders

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        db = Database(url)
        try:
            yield {"db": db}
        finally:
            await db.close()

    async def two_queries(request: Request) -> Response:
        db: Any = request.state.db
        async with db.read() as conn:
            order = (
                await conn.execute(
                    select(orders.c.id, orders.c.number, orders.c.version).where(
                        orders.c.tracking_token == request.path_params["token"]
                    )
                )
            ).one()
            lines = (
                await conn.execute(select(order_lines).where(order_lines.c.order_id == order.id))
            ).all()
        items = "".join(f"<li>{line.title} x {line.quantity}</li>" for line in lines)
        return HTMLResponse(f"<!doctype html><title>{order.number}</title><ul>{items}</ul>")

    routes.append(Route("/two/{token}", two_queries))
    return Starlette(routes=routes, lifespan=lifespan)


def serve_bare() -> None:
    """Serve `bare_app` with the uvicorn options `whereabouts serve` uses (see app/cli.py)."""
    import uvicorn

    uvicorn.run(
        "bench.page:bare_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        workers=1,
        log_level=os.environ.get("LOG_LEVEL", "warning"),
        access_log=False,
        proxy_headers=False,
    )


# Measuring -----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    connections: int
    seconds: float = float("nan")
    requests: int = 0
    bytes: int = 0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    non_2xx_3xx: int = 0
    socket_errors: int = 0
    wraps: int = 0
    server_cores: float = float("nan")
    client_cores: float = float("nan")
    other_cores: float = float("nan")
    database_cores: float = 0.0  # every postgres process on the machine (PostgreSQL runs only)
    rss_mib: float = float("nan")
    distinct_urls: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    @property
    def bytes_per_response(self) -> float:
        return self.bytes / self.requests if self.requests else float("nan")


_WRK_LINE = re.compile(r"^WRK_RESULT (.*)$", re.M)


def _rss_mib(pid: int) -> float:
    """Current resident memory of one process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_wrk(
    base_url: str,
    requests_file: Path,
    script: Path,
    seconds: float,
    connections: int,
    threads: int,
    server_pid: int,
    postgres: bool,
) -> dict[str, Any]:
    """Run wrk once; return its figures with the CPU the server, wrk and others used meanwhile."""
    argv = [
        shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency", "--timeout", "10s", "-s", str(script), base_url,
        "--", str(requests_file), str(threads),
    ]  # fmt: skip
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = cpu_seconds(server_pid)
    database_cpu = cpu_seconds_of("postgres") if postgres else 0.0
    machine_cpu = machine_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    wall = time.monotonic() - started
    machine_cpu = machine_cpu_seconds() - machine_cpu
    server_cpu = cpu_seconds(server_pid) - server_cpu
    database_cpu = cpu_seconds_of("postgres") - database_cpu if postgres else 0.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    found = _WRK_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise BenchError(f"wrk exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = {k: int(v) for k, v in (p.split("=") for p in found[1].split())}
    figures.update(
        server_cores=server_cpu / wall,
        client_cores=client_cpu / wall,
        database_cores=database_cpu / wall,
        other_cores=max(0.0, machine_cpu - server_cpu - client_cpu - database_cpu) / wall,
    )
    return figures


@dataclass
class Bench:
    """What every measured phase shares: wrk's options, the files, the deadline."""

    args: argparse.Namespace
    workdir: Path
    deadline: float

    def check_time(self, needed: float) -> None:
        if time.monotonic() + needed > self.deadline:
            raise BenchError("out of time (see --max-seconds)")

    def write_requests(self, name: str, lines: Sequence[str]) -> Path:
        path = self.workdir / f"{name}.txt"
        path.write_text("".join(line + "\n" for line in lines))
        return path

    async def settle(self) -> float:
        """Wait briefly for other work on the machine to calm down; return its load."""
        budget = min(self.args.quiet_wait, max(0.0, (self.deadline - time.monotonic()) / 8))
        end = time.monotonic() + budget
        load = await busy_cores(1.0)
        while load > 0.3 and time.monotonic() < end:
            load = await busy_cores(1.0)
        return load

    async def measure(
        self,
        name: str,
        base_url: str,
        server_pid: int,
        requests: Sequence[str],
        warmup: Sequence[str] | None = None,
        profile: Path | None = None,
    ) -> Phase:
        """Warm up (on `warmup`, else the same requests), then measure with wrk.

        With `profile`, py-spy samples the server during the measured part only.
        """
        args = self.args
        self.check_time(args.warmup + args.duration + 30)
        script = self.workdir / "rotate.lua"
        script.write_text(WRK_SCRIPT)
        slug = re.sub(r"\W+", "-", name)
        warm_file = self.write_requests(slug + "-warmup", warmup if warmup else requests)
        measured_file = self.write_requests(slug, requests)
        load = await self.settle()
        if args.warmup > 0:
            await asyncio.to_thread(
                run_wrk, base_url, warm_file, script, args.warmup, args.connections,
                args.threads, server_pid, args.backend == "postgresql",
            )  # fmt: skip
        with contextlib.ExitStack() as stack:
            if profile is not None:
                stack.enter_context(Profiler(server_pid, profile, PROFILE_RATE, idle=True))
            figures = await asyncio.to_thread(
                run_wrk, base_url, measured_file, script, args.duration, args.connections,
                args.threads, server_pid, args.backend == "postgresql",
            )  # fmt: skip
        phase = Phase(
            name=name,
            connections=args.connections,
            seconds=figures["duration_us"] / 1e6,
            requests=figures["requests"],
            bytes=figures["bytes"],
            p50_ms=figures["p50_us"] / 1000,
            p90_ms=figures["p90_us"] / 1000,
            p99_ms=figures["p99_us"] / 1000,
            max_ms=figures["max_us"] / 1000,
            non_2xx_3xx=figures["status"],
            socket_errors=sum(figures[k] for k in ("connect", "read", "write", "timeout")),
            wraps=figures["wraps"],
            server_cores=figures["server_cores"],
            client_cores=figures["client_cores"],
            other_cores=figures["other_cores"],
            database_cores=figures["database_cores"],
            rss_mib=_rss_mib(server_pid),
            distinct_urls=len(set(requests)),
        )
        if phase.non_2xx_3xx or phase.socket_errors:
            phase.problems.append(
                f"{phase.non_2xx_3xx} non-2xx/3xx answers, {phase.socket_errors} socket errors"
            )
        if load > 0.3:
            phase.problems.append(f"machine busy before the run ({load:.1f} cores)")
        _log(
            f"  {name}: {phase.rps:,.0f} req/s, p50 {phase.p50_ms:.1f} ms, p99 "
            f"{phase.p99_ms:.1f} ms, {phase.bytes_per_response:,.0f} B/response, server "
            f"{phase.server_cores:.2f} cores, wrk {phase.client_cores:.2f}, others "
            f"{phase.other_cores:.2f}, RSS {phase.rss_mib:.0f} MiB"
            + (f", postgres {phase.database_cores:.2f} cores" if phase.database_cores else "")
            + (f" [{'; '.join(phase.problems)}]" if phase.problems else "")
        )
        return phase


def _log(message: str) -> None:
    print(message, flush=True)


# Data ----------------------------------------------------------------------------------------


async def tokens_of(database_url: str) -> list[str]:
    """Read every order's tracking token, in id order."""
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            return [r[0] for r in db.execute("SELECT tracking_token FROM orders ORDER BY id")]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT tracking_token FROM orders ORDER BY id")
    finally:
        await conn.close()
    return [r[0] for r in rows]


async def load_orders(args: argparse.Namespace, url: str, workdir: Path, deadline: float) -> None:
    """Generate the orders and load them through the batch API of a real `whereabouts serve`."""
    data = make_dataset(args.orders, 1000, args.seed)
    _log(describe(data, 1000))
    port = free_port()
    env = _page_env(url, port)
    cli = executable("whereabouts")
    run_command([cli, "brand", "create", "bench", "Bench Outfitters"], env)
    key = run_command([cli, "apikey", "create", "bench", "--name", "bench"], env).split()[0]
    base_url = f"http://127.0.0.1:{port}"
    with Server([cli, "serve"], env, base_url + "/healthz", workdir / "load.log"):
        load = await post_batches(base_url, key, data.bodies, 1, deadline)
    if load.outcomes != Counter(created=args.orders):
        raise BenchError(f"expected {args.orders} orders created, got {dict(load.outcomes)}")
    _log(
        f"  loaded through the batch API in {load.seconds:.0f} s "
        f"({args.orders / load.seconds:,.0f} orders/s)"
    )


def _page_env(database_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "warning",
        "WEB_CONCURRENCY": "1",
    }


async def warm_pages(base_url: str, tokens: Sequence[str]) -> list[str]:
    """View each page once, check it, and return its ETag; check that the ETag gives a 304."""
    tags = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for token in tokens:
            page = await client.get(f"/t/{token}")
            if page.status_code != 200 or "text/html" not in page.headers["content-type"]:
                raise BenchError(f"/t/{token}: HTTP {page.status_code}: {page.text[:300]}")
            tag = page.headers["etag"]
            again = await client.get(f"/t/{token}", headers={"If-None-Match": tag})
            if again.status_code != 304:
                raise BenchError(f"/t/{token} with If-None-Match {tag}: HTTP {again.status_code}")
            tags.append(tag)
    return tags


# Where the time goes (--profile) -------------------------------------------------------------


# Inclusive time is shown for the app's own functions and the library calls that cost the most.
_WORTH_SHOWING = re.compile(
    r"\(app/|Template\.render|Response\.__call__|H11Protocol\.data_received|"
    r"AsyncConnection\.execute|Connection\._execute \(aiosqlite|BaseModel\.__init__|"
    r"_SelectorSocketTransport\.write|Environment\.get_template|AsyncEngine\.connect|"
    r"AsyncConnection\.close|AsyncConnection\.__aexit__|_generate_cache_key|_compiler"
)
_IDLE = re.compile(r"selectors\.py|aiosqlite/core\.py:59\)|threading\.py|queue\.py")


def summarize_profile(raw: Path, seconds: float, rate: int, top: int = 12) -> str:
    """Sum py-spy's raw stacks: how busy each kind of thread was, and the top functions."""
    samples: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    own: dict[str, Counter[str]] = defaultdict(Counter)
    inclusive: Counter[str] = Counter()
    threads: set[str] = set()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) < 2 or not count_text.isdigit():
            continue
        count = int(count_text)
        kind = "event loop" if "MainThread" in frames[1] else "other threads (aiosqlite)"
        samples[kind] += count
        threads.add(frames[1])
        leaf = frames[-1] if len(frames) > 2 else "(no Python frame)"
        if _IDLE.search(leaf):
            continue
        busy[kind] += count
        names = [re.sub(r":\d+\)$", ")", f) for f in frames[2:]] or [leaf]
        own[kind][names[-1]] += count
        if kind == "event loop":
            for name in set(names):
                if _WORTH_SHOWING.search(name):
                    inclusive[name] += count
    lines = [
        f"{len(threads)} threads sampled at {rate} Hz for {seconds:g} s; share of wall time "
        "not idle in select or a queue (waiting for the GIL counts as not idle):"
    ]
    for kind in samples:
        share = busy[kind] / (rate * seconds)
        lines.append(f"  {kind}: {share:.0%}" + (" (summed over threads)" if share > 1 else ""))
    for kind, counter in own.items():
        total = sum(counter.values())
        lines.append(f"{kind}, top own time (of {total} samples not idle):")
        lines += [f"  {n / total:6.1%}  {name}" for name, n in counter.most_common(top)]
    total = busy["event loop"] or 1
    lines.append("event loop, inclusive time of the app's functions and costly library calls:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def _shape(statement: str) -> str:
    """Name a SQL statement by its verb and tables, without parameters."""
    text = " ".join(statement.split())
    verb = text.split(" ", 1)[0].upper()
    tables = re.findall(r"\b(?:FROM|JOIN)\s+\"?(\w+)", text, flags=re.I)
    columns = len(text.split(" FROM ", 1)[0].split(","))
    return f"{verb} {'+'.join(dict.fromkeys(tables))} ({columns} cols)" if tables else verb


async def cold_breakdown(database_url: str, tokens: Sequence[str]) -> str:
    """Replay cold renders in-process: time each stage and every SQL statement they run."""
    from sqlalchemy import event

    from app.services import Services, utc_now
    from app.settings import Settings
    from app.storage.database import Database
    from app.web.pages import Pages
    from app.web.tracking import _urls

    settings = Settings.from_env({"DATABASE_URL": database_url})
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    pages = Pages(Services(settings=settings, db=db, clock=utc_now))
    today = dt.datetime.now(dt.UTC).date()
    statements: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, list[float]] = defaultdict(list)

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    @event.listens_for(db.engine.sync_engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements[_shape(statement)].append(time.perf_counter() - conn.info["bench_started"].pop())

    def timed(stage: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return await call(*a, **k)
            finally:
                stages[stage].append(time.perf_counter() - started)

        return wrapper

    # Every call aiosqlite hands to its connection thread (cursor, execute, fetch, close, begin,
    # rollback) is a round trip between threads; count them.
    hops = Counter[str]()
    patched: list[tuple[Any, Any]] = []
    if db.is_sqlite:
        import aiosqlite.core

        original: Any = aiosqlite.core.Connection._execute

        async def counted(self: Any, fn: Any, *a: Any, **k: Any) -> Any:
            hops["aiosqlite"] += 1
            return await original(self, fn, *a, **k)

        aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]
        patched.append((aiosqlite.core.Connection, original))

    # Instance attributes shadow the methods, so `tracking` calls the timed `load_view`.
    pages.load_view = timed("load_view (SQL + view)", pages.load_view)  # type: ignore[method-assign,assignment]
    try:
        first = await pages.find(tokens[0])  # warm the brand and the templates
        assert first is not None
        brand = await pages.brand(first.brand_id)
        await pages.tracking(
            first, brand, "en", today, _urls(brand, first.token, "en"), lambda: "x"
        )
        statements.clear()
        stages.clear()
        hops.clear()
        started = time.perf_counter()
        for token in tokens[1:]:
            t0 = time.perf_counter()
            meta = await pages.find(token)
            assert meta is not None
            t1 = time.perf_counter()
            brand = await pages.brand(meta.brand_id)
            await pages.tracking(meta, brand, "en", today, _urls(brand, token, "en"), lambda: "x")
            t2 = time.perf_counter()
            stages["find (SQL)"].append(t1 - t0)
            stages["tracking (load_view + render)"].append(t2 - t1)
        wall = time.perf_counter() - started
    finally:
        await db.close()
        for owner, method in patched:
            owner._execute = method
    n = len(tokens) - 1
    lines = [f"{n} cold renders in-process: {wall / n * 1000:.2f} ms each (no HTTP)"]
    for stage, values in stages.items():
        lines.append(f"  {stage}: {sum(values) / n * 1000:.2f} ms per render")
    per_render = sum(len(v) for v in statements.values()) / n
    sql_time = sum(sum(v) for v in statements.values()) / n
    lines.append(
        f"  SQL: {per_render:.1f} statements per render, {sql_time * 1000:.2f} ms per render "
        "(cursor execute + fetch as the loop sees it)"
    )
    if hops:
        lines.append(
            f"  aiosqlite thread round trips: {hops['aiosqlite'] / n:.1f} per render "
            "(cursor, execute, fetch and close per statement; begin and rollback per connection)"
        )
    for shape, values in sorted(statements.items(), key=lambda kv: -sum(kv[1])):
        lines.append(
            f"    {len(values) / n:4.1f} x {sum(values) / len(values) * 1000:6.3f} ms  {shape}"
        )
    return "\n".join(lines)


# Reporting -----------------------------------------------------------------------------------


def table(phases: Sequence[Phase], ceiling: float) -> str:
    ceilings = [p for p in phases if p.name.startswith("ceiling")]
    per_cpu = sum(p.requests for p in ceilings) / sum(p.server_cores * p.seconds for p in ceilings)
    rows = [
        "| measurement | requests/s | vs ceiling | target | per server CPU-second: requests, "
        "vs ceiling | p50 ms | p99 ms | p99 target | "
        "non-2xx/3xx, socket errors | bytes/response | server CPU (cores) | server RSS MiB | "
        "others on the machine (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        ratio = p.rps / ceiling if ceiling else float("nan")
        target = TARGETS.get(p.name)
        verdict = f"≥ {target:.0%} ({'meets' if ratio >= target else 'MISSES'})" if target else "-"
        p99 = (
            f"< {P99_TARGET_MS:.0f} ({'meets' if p.p99_ms < P99_TARGET_MS else 'MISSES'})"
            if target
            else "-"
        )
        rows.append(
            f"| {p.name} | {p.rps:,.0f} | {ratio:.0%} | {verdict} | "
            f"{p.rps / p.server_cores:,.0f}, {p.rps / p.server_cores / per_cpu:.0%} | "
            f"{p.p50_ms:.1f} | "
            f"{p.p99_ms:.1f} | {p99} | {p.non_2xx_3xx}, {p.socket_errors} | "
            f"{p.bytes_per_response:,.0f} | {p.server_cores:.2f} | {p.rss_mib:.0f} | "
            f"{p.other_cores:.2f} |"
        )
    return "\n".join(rows)


# The run -------------------------------------------------------------------------------------


async def measure_all(
    args: argparse.Namespace, url: str, workdir: Path, deadline: float
) -> dict[str, Any]:
    """Measure the ceiling, repeat views, 304s, cold renders and the ceiling again."""
    bench = Bench(args, workdir, deadline)
    tokens = await tokens_of(url)
    if len(tokens) < args.orders:
        raise BenchError(f"the database holds {len(tokens)} orders, want {args.orders}")
    random.Random(args.seed).shuffle(tokens)  # a fair mix of old and new, big and small orders
    repeat, cold = tokens[: args.repeat_set], tokens[args.repeat_set :]
    phases: list[Phase] = []
    profiles: dict[str, str] = {}

    # Both servers run side by side (the idle one costs nothing), so the ceiling is measured
    # both before and after the service: on a shared machine that shows the drift.
    bare_port, page_port = free_port(), free_port()
    bare_env = {**_page_env(url, bare_port), "HOST": "127.0.0.1"}
    bare_argv = [sys.executable, str(ROOT / "bench" / "page.py"), "--serve-bare"]
    bare_url, page_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{page_port}"
    page_argv = [executable("whereabouts"), "serve", "--no-migrate"]
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(
            Server(bare_argv, bare_env, bare_url + "/healthz", workdir / "bare.log")
        )
        page = stack.enter_context(
            Server(
                page_argv, _page_env(url, page_port), page_url + "/healthz", workdir / "serve.log"
            )
        )
        phases.append(await bench.measure("ceiling: bare Starlette", bare_url, bare.pid, ["/"]))
        ceiling = phases[0].rps

        started = time.monotonic()
        tags = await warm_pages(page_url, repeat)
        each = (time.monotonic() - started) * 1000 / len(tags)
        _log(f"  viewed the {len(tags)} repeat pages once ({each:.0f} ms each with its 304)")
        paths = [f"/t/{t}" for t in repeat]
        phases.append(await bench.measure("repeat views", page_url, page.pid, paths))
        tagged = [f"{p}\t{tag}" for p, tag in zip(paths, tags, strict=True)]
        phases.append(await bench.measure("repeat views, 304", page_url, page.pid, tagged))

        # Cold: the warm-up and the measurement each take orders nobody asked for yet.
        split = min(int(args.warmup * ceiling) + args.connections, len(cold) // 4)
        warm_cold, measured = cold[:split], cold[split:]
        phase = await bench.measure(
            "cold renders", page_url, page.pid, [f"/t/{t}" for t in measured],
            warmup=[f"/t/{t}" for t in warm_cold],
        )  # fmt: skip
        if phase.wraps or phase.requests + args.connections > len(measured):
            phase.problems.append(f"ran out of fresh orders ({len(measured):,}); some repeated")
        phases.append(phase)
        unused = measured[phase.requests + args.connections :]
        # The reference point, on orders the page server never saw (it has its own
        # process; the operating system's file cache is shared and warm for both).
        reference, unused = unused[: len(unused) * 2 // 3], unused[len(unused) * 2 // 3 :]
        split = min(int(args.warmup * ceiling) + args.connections, len(reference) // 8)
        phase = await bench.measure(
            REFERENCE, bare_url, bare.pid, [f"/two/{t}" for t in reference[split:]],
            warmup=[f"/two/{t}" for t in reference[:split]],
        )  # fmt: skip
        if phase.wraps:
            phase.problems.append("ran out of fresh orders; some repeated")
        phases.append(phase)
        phases.append(await bench.measure("ceiling, again", bare_url, bare.pid, ["/"]))

        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            seconds = args.profile_seconds
            profiled = Bench(
                argparse.Namespace(**{**vars(args), "duration": seconds, "warmup": 1}),
                workdir,
                deadline,
            )
            spare, unused = unused[: -(args.breakdown + 1)], unused[-(args.breakdown + 1) :]
            split = min(int(ceiling) + args.connections, len(spare) // 4)
            runs = (
                ("repeat views", paths, None),
                ("cold renders", [f"/t/{t}" for t in spare[split:]],
                 [f"/t/{t}" for t in spare[:split]]),
            )  # fmt: skip
            for name, requests, warmup in runs:
                raw = args.profile / f"py-spy-{name.replace(' ', '-')}.txt"
                await profiled.measure(
                    f"(profiled) {name}", page_url, page.pid, requests, warmup, profile=raw
                )
                profiles[name] = summarize_profile(raw, seconds, PROFILE_RATE)
                _log(f"\nWhere the time goes, {name} (py-spy, {raw}):\n{profiles[name]}\n")
    if args.profile is not None:
        profiles["cold breakdown"] = await cold_breakdown(url, unused)
        _log(profiles["cold breakdown"])
    ceilings = [p.rps for p in phases if p.name.startswith("ceiling")]
    return {
        "phases": phases,
        "ceiling": sum(ceilings) / len(ceilings),
        "profiles": profiles,
        "tokens": len(tokens),
    }


def write_json(
    path: Path, described: dict[str, str], args: argparse.Namespace, result: dict[str, Any]
) -> None:
    """Keep the figures for later comparison."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ceiling = result["ceiling"]
    document = {
        "machine": described,
        "code": result["code"],
        "argv": sys.argv,
        "orders": result["tokens"],
        "backend": args.backend,
        "wrk": {"threads": args.threads, "connections": args.connections},
        "ceiling_rps": ceiling,
        "targets": {"ratio": TARGETS, "p99_ms": P99_TARGET_MS},
        "phases": [
            {
                **dataclasses.asdict(p),
                "rps": p.rps,
                "ratio": p.rps / ceiling,
                "bytes_per_response": p.bytes_per_response,
            }
            for p in result["phases"]
        ],
        "profiles": result["profiles"],
    }
    path.write_text(json.dumps(document, indent=2, default=str))


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.split(" Copyright")[0].strip() or "not installed"


async def main_async(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.max_seconds
    described = {**machine(PACKAGES), "wrk": _wrk_version()}
    code = code_revision()  # at the start: the tree may change while this runs
    if args.backend == "postgresql":
        described["postgresql"] = await postgres_version(args.postgres_url)
    _log(
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n"
        f"code: {code}\n"
        "machine: " + "; ".join(f"{k} {v}" for k, v in described.items())
    )
    with tempfile.TemporaryDirectory(prefix="wa-page-") as tmp:
        workdir = Path(tmp)
        if args.backend == "postgresql":
            async with throwaway_postgres(args.postgres_url) as url:
                await load_orders(args, url, workdir, deadline)
                result = await measure_all(args, url, workdir, deadline)
        else:
            folder = args.data_dir or workdir
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"page-{args.orders}-{args.seed}.db"
            url = f"sqlite:///{path}"
            if path.exists() and len(await tokens_of(url)) == args.orders:
                _log(f"reusing {path} ({args.orders:,} orders)")
            else:
                for stale in folder.glob(path.name + "*"):
                    stale.unlink()
                await load_orders(args, url, workdir, deadline)
            result = await measure_all(args, url, workdir, deadline)
    result["code"] = code
    phases: list[Phase] = result["phases"]
    _log(
        f"\n{result['tokens']:,} orders ({args.backend}); wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration:g}s after a {args.warmup:g} s warm-up; "
        f"ratios against the mean of both ceiling runs ({result['ceiling']:,.0f} req/s)\n"
    )
    _log(table(phases, result["ceiling"]))
    failed = False
    for p in phases:
        for problem in p.problems:
            noisy = problem.startswith("machine busy")
            failed = failed or not noisy
            _log(f"{'NOISY' if noisy else 'FAILED'}: {p.name}: {problem}")
    if args.json:
        write_json(Path(args.json), described, args, result)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/page.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=100_000, help="orders to load (100000)")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql"), default="sqlite", help="(sqlite)"
    )
    parser.add_argument("--seed", type=int, default=20261101, help="data generator seed")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WHEREABOUTS_BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="an admin URL; a throwaway database is created there and dropped afterwards",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the SQLite database here and reuse it when it holds the orders",
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (1; the server gets the other core)"
    )
    parser.add_argument(
        "--duration", type=float, default=15, help="seconds measured per phase (15)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of warm-up before each phase (3)"
    )
    parser.add_argument(
        "--repeat-set", type=int, default=100, help="pages viewed again and again (100)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20,
        help="before each phase, wait up to this long for the machine to calm down (20)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=900, help="give up after this long (900)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="afterwards, profile repeat views and cold renders with py-spy, and replay cold "
        "renders in-process with every SQL statement timed",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=10, help="seconds per profiled run (10)"
    )
    parser.add_argument(
        "--breakdown",
        type=int,
        default=300,
        help="cold renders replayed in-process with --profile (300)",
    )
    parser.add_argument(
        "--serve-bare",
        action="store_true",
        help="serve the ceiling app (HOST, PORT from the environment) and nothing else",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_bare:
        serve_bare()
        return 0
    try:
        return asyncio.run(main_async(args))
    except BenchError as exc:
        print(f"bench/page.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
