"""Live updates: the event stream pushes the new order section after each change, from anywhere."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time

import pytest

from app.i18n import translations
from tests.web.support import (
    add_checkpoint,
    event_stream,
    get_order,
    parse,
    update_data,
)

pytestmark = pytest.mark.anyio
PROMPT = 2.0  # seconds within which a change must reach an open page


async def current_version(client, demo):
    return (await get_order(client, demo, "D-1001"))["version"]


async def test_a_change_reaches_an_open_stream_and_a_reconnect_catches_up(client, server, demo):
    events = demo.page("D-1001") + "/events?lang=en"
    version = await current_version(client, demo)
    async with event_stream(server, events, {"Last-Event-ID": str(version)}) as (response, live):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        await live.quiet_for(0.5)  # up to date: nothing to send
        await add_checkpoint(client, demo, "Arrived at the Oakland delivery station")
        data = update_data(await live.next(PROMPT))
    new = await current_version(client, demo)
    assert new > version
    assert data["version"] == new
    fragment = parse(data["html"])
    assert fragment.find_all("html") == []
    assert fragment.find_all("script") == []
    assert fragment.by_id("order-title").text == "Order D-1001"
    scans = fragment.find("details", cls="timeline").find_all("li")
    assert scans[0].find("span").text == "Arrived at the Oakland delivery station"

    # A page that was left behind gets the current section at once when it reconnects.
    for behind in ({"Last-Event-ID": str(version)}, None):
        path = events if behind else f"{events}&v={version}"
        async with event_stream(server, path, behind) as (_, live):
            caught_up = update_data(await live.next(PROMPT))
            assert caught_up["version"] == new
            assert "Arrived at the Oakland delivery station" in caught_up["html"]

    # A page that is current hears nothing until the next change.
    for current in ({"Last-Event-ID": str(new)}, None):
        path = events if current else f"{events}&v={new}"
        async with event_stream(server, path, current) as (_, live):
            await live.quiet_for(0.5)
            text = f"Out for delivery (via {'header' if current else 'query'})"
            await add_checkpoint(client, demo, text)
            data = update_data(await live.next(PROMPT))
            assert data["version"] > new
            assert text in data["html"]
            new = data["version"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_open_stream_of_the_order_hears_the_change(client, server, demo):
    events = demo.page("D-1001") + "/events"
    version = await current_version(client, demo)
    headers = {"Last-Event-ID": str(version)}
    async with (
        event_stream(server, events + "?lang=en", headers) as (_, english),
        event_stream(server, events + "?lang=fr", headers) as (_, french),
        event_stream(server, demo.page("D-1002") + "/events", headers) as (_, other),
    ):
        await english.quiet_for(0.3)
        await add_checkpoint(client, demo, "Loaded on the delivery van")
        in_english, in_french = await asyncio.gather(english.next(PROMPT), french.next(PROMPT))
        assert update_data(in_english)["version"] == update_data(in_french)["version"]
        english_title = parse(update_data(in_english)["html"]).by_id("waiting-title").text
        french_title = parse(update_data(in_french)["html"]).by_id("waiting-title").text
        assert english_title == "Still to come"
        assert french_title == translations("fr").gettext("Still to come") != english_title
        await other.quiet_for(0.3)  # another order's page has nothing new


WRITER = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    from app.api.models import CheckpointIn
    from app.brands import brand_id
    from app.storage import parcels
    from app.storage.database import Database

    async def main(url, text):
        db = Database(url)
        try:
            async with db.write() as conn:
                now = dt.datetime.now(dt.UTC)
                scan = CheckpointIn.model_validate(
                    {"occurred_at": now - dt.timedelta(minutes=1), "status": "in_transit",
                     "description": text, "city": "Oakland", "region": "CA", "country": "US"}
                )
                await parcels.add_checkpoint(
                    conn, await brand_id(conn, "demo"), "D-1001", "P2", scan, now
                )
        finally:
            await db.close()
        print("committed", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_change_committed_by_another_process_reaches_the_stream(
    settings, client, server, demo
):
    """PostgreSQL tells through LISTEN/NOTIFY; SQLite through change_log polling."""
    version = await current_version(client, demo)
    events = demo.page("D-1001") + "/events?lang=en"
    text = "Handed over by another process"
    async with event_stream(server, events, {"Last-Event-ID": str(version)}) as (_, live):
        await live.quiet_for(0.3)
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            settings.database_url,
            text,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        line = await asyncio.wait_for(writer.stdout.readline(), 30)
        committed = time.monotonic()
        assert line == b"committed\n", (await writer.stderr.read()).decode()
        event = await live.next(PROMPT)
        waited = time.monotonic() - committed
        _out, err = await asyncio.wait_for(writer.communicate(), 30)
        assert writer.returncode == 0, err.decode()
    data = update_data(event)
    assert data["version"] > version
    assert text in data["html"]
    assert waited < PROMPT
