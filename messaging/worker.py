"""`whereabouts worker`: run the dispatcher until SIGTERM or SIGINT, then stop cleanly.

On a stop signal the worker finishes the batch in hand (its sends are awaited, so nothing is
left half-recorded) and gives back any messages it claimed but did not start sending.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from app.services import utc_now
from app.settings import Settings, provider_warnings
from app.storage.database import Database
from app.storage.instance import LINK_SECRET, shared_secret
from messaging.dispatch import Dispatcher

log = logging.getLogger("whereabouts.worker")


# A worker makes and drops many short-lived objects per message (rows, contexts, requests).
# At the default threshold (700 new objects) the collector runs thousands of times a second,
# and its older passes walk everything startup left (modules, compiled templates) each time.
# Measured on bench/dispatch.py: 5-15 % more messages/s with this tuning.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze what exists now out of the collector's way and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def run_worker(settings: Settings, db: Database, stop: asyncio.Event | None = None) -> None:
    """Dispatch messages until `stop` is set (or a signal arrives)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for warning in provider_warnings(settings):
        log.warning(warning)
    # Without SECRET_KEY, the key every process shares through the database signs the links.
    link_secret = settings.secret_key or await shared_secret(db, LINK_SECRET, utc_now())
    dispatcher = Dispatcher(db, settings, utc_now, link_secret=link_secret)
    tune_gc()
    log.info("worker %s started", dispatcher.name)
    try:
        await dispatcher.run(stop)
    finally:
        released = await dispatcher.release()
        await dispatcher.aclose()
        log.info("worker %s stopped; %d claimed messages given back", dispatcher.name, released)
