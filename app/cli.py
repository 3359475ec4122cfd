"""The `whereabouts` command: serve, migrate, brands, API keys, the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from sqlalchemy import select

from app.api.keys import create_key, revoke_key
from app.brands import BrandError, brand_id, create_brand
from app.services import utc_now
from app.settings import Settings, SettingsError
from app.storage import etas
from app.storage.database import Database
from app.storage.migrate import migrate
from app.storage.schema import brands
from messaging import simulate
from messaging.worker import run_worker


def _database(settings: Settings) -> Database:
    if settings.database_url.startswith("sqlite:///"):
        path = settings.database_url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)


async def _migrate(settings: Settings) -> None:
    db = _database(settings)
    try:
        await migrate(db)
    finally:
        await db.close()


async def _brand_create(settings: Settings, args: argparse.Namespace) -> None:
    db = _database(settings)
    try:
        async with db.write() as conn:
            await create_brand(
                conn,
                args.slug,
                args.name,
                utc_now(),
                timezone=args.timezone,
                default_locale=args.locale,
                fulfillment_window_days=args.window_days,
            )
        print(f"created brand {args.slug}")
    finally:
        await db.close()


async def _apikey_create(settings: Settings, args: argparse.Namespace) -> None:
    db = _database(settings)
    try:
        async with db.write() as conn:
            key = await create_key(conn, await brand_id(conn, args.brand), args.name, utc_now())
        print(key.secret)
        print(f"(prefix {key.prefix}; shown once, store it now)", file=sys.stderr)
    finally:
        await db.close()


async def _apikey_revoke(settings: Settings, args: argparse.Namespace) -> None:
    db = _database(settings)
    try:
        async with db.write() as conn:
            revoked = await revoke_key(conn, args.prefix, utc_now())
    finally:
        await db.close()
    if not revoked:
        raise BrandError(f"no active key with prefix {args.prefix!r}")
    print(f"revoked key {args.prefix}")


async def _eta_recompute(settings: Settings, args: argparse.Namespace) -> None:
    db = _database(settings)
    try:
        async with db.read() as conn:
            query = select(brands.c.id, brands.c.slug).order_by(brands.c.slug)
            if args.brand:
                query = query.where(brands.c.slug == args.brand)
            targets = (await conn.execute(query)).all()
        if args.brand and not targets:
            raise BrandError(f"no brand {args.brand!r}")
        for brand in targets:
            summary = await etas.recompute_brand(db, brand.id, utc_now())
            print(
                f"{brand.slug}: {summary.lines} waiting lines, {summary.changed_lines} changed, "
                f"{summary.served_lines} served from stock, {summary.events} events"
            )
    finally:
        await db.close()


async def _worker(settings: Settings) -> None:
    await _migrate(settings)
    db = _database(settings)
    try:
        await run_worker(settings, db)
    finally:
        await db.close()


def serve(settings: Settings, *, migrate_first: bool = True) -> None:
    """Run the service under uvicorn (migrating first unless told not to)."""
    if migrate_first:
        asyncio.run(_migrate(settings))
    if settings.web_concurrency > 1 and settings.database_url.startswith("sqlite"):
        logging.getLogger("whereabouts").warning(
            "several workers on SQLite share one file; use PostgreSQL to scale out"
        )
    # uvicorn imports app.asgi, which reads the environment: hand it these settings.
    os.environ.update(settings.as_env())
    uvicorn.run(
        "app.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
    )


def build_parser() -> argparse.ArgumentParser:
    """Declare the command line."""
    parser = argparse.ArgumentParser(prog="whereabouts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the web service")
    serve_cmd.add_argument("--no-migrate", action="store_true", help="do not migrate first")
    sub.add_parser("migrate", help="bring the database schema up to date")

    brand = sub.add_parser("brand", help="manage brands").add_subparsers(
        dest="action", required=True
    )
    create = brand.add_parser("create", help="create a brand")
    create.add_argument("slug")
    create.add_argument("name")
    create.add_argument("--timezone", default="UTC")
    create.add_argument("--locale", default="en")
    create.add_argument("--window-days", type=int, default=30)

    apikey = sub.add_parser("apikey", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    key_create = apikey.add_parser("create", help="mint a key for a brand (printed once)")
    key_create.add_argument("brand", help="the brand's slug")
    key_create.add_argument("--name", default="")
    key_revoke = apikey.add_parser("revoke", help="revoke a key by its prefix")
    key_revoke.add_argument("prefix")

    eta = sub.add_parser("eta", help="the ETA engine").add_subparsers(dest="action", required=True)
    recompute = eta.add_parser(
        "recompute", help="re-date every waiting line (repair, and the nightly run)"
    )
    recompute.add_argument("--brand", help="only this brand's slug")

    sub.add_parser("worker", help="send queued messages (email, SMS, brand webhooks)")
    sms = sub.add_parser("sms", help="SMS tools").add_subparsers(dest="action", required=True)
    reply = sms.add_parser("reply", help="send a signed, simulated shopper reply; print the answer")
    reply.add_argument("--from", dest="from_number", required=True, help="the shopper's number")
    reply.add_argument("--body", required=True, help="the reply's text")
    reply.add_argument("--to", help="our number (default: TWILIO_FROM)")
    reply.add_argument("--url", help="where the service runs (default: PUBLIC_URL)")
    demo = sub.add_parser(
        "demo", help="fresh demo database, an API key and tracking links, then serve"
    )
    demo.add_argument("--no-serve", action="store_true", help="load the demo and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"whereabouts: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            serve(settings, migrate_first=not args.no_migrate)
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "brand":
            asyncio.run(_migrate(settings))
            asyncio.run(_brand_create(settings, args))
        elif args.command == "apikey" and args.action == "create":
            asyncio.run(_apikey_create(settings, args))
        elif args.command == "apikey":
            asyncio.run(_apikey_revoke(settings, args))
        elif args.command == "eta":
            asyncio.run(_eta_recompute(settings, args))
        elif args.command == "worker":
            asyncio.run(_worker(settings))
        elif args.command == "sms":
            return simulate.run(settings, args.from_number, args.body, args.to, args.url)
        elif args.command == "demo":
            from app.demo import run_demo

            settings = run_demo(settings)
            if not args.no_serve:
                serve(settings, migrate_first=False)
    except BrandError as exc:
        print(f"whereabouts: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
