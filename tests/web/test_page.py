"""What the tracking page shows for the demo orders, and what it never shows."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from babel.dates import format_date, format_interval

from tests.web.support import API, add_checkpoint, get_order, parse

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
BRAND_TZ = zoneinfo.ZoneInfo("America/Los_Angeles")  # the demo brand's timezone
TIMES = "\u00d7"  # the multiplication sign before a quantity


def day(value: str | dt.date) -> str:
    return format_date(
        dt.date.fromisoformat(value) if isinstance(value, str) else value, "medium", locale="en"
    )


def span(start: str, end: str) -> str:
    a, b = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return format_interval(a, b, "yMMMd" if a.year != b.year else "MMMd", locale="en")


async def page_of(client, demo, number):
    response = await client.get(demo.page(number))
    assert response.status_code == 200, response.text
    return parse(response.text)


def glance_counts(page):
    """The at-a-glance line's counts for an order with nothing delivered yet.

    A clause whose count is zero is left out, so the line opens with what is happening.
    """
    text = page.find("p", cls="glance").text
    assert "delivered" not in text, text
    found = re.findall(
        r"(\d+) (parcels? on (?:its|their) way|items? being prepared|items? waiting for stock)",
        text,
    )
    return {phrase: int(count) for count, phrase in found}


def waiting_items(page):
    """(title, explanation, promise badge or None) for each waiting line, in page order."""
    found = []
    for item in page.by_id("main").find_all("li", cls="item--waiting"):
        badges = item.find_all("span", cls="badge")
        found.append(
            (
                item.find(cls="item__title").text,
                item.find("p", cls="item__why").text,
                badges[0].text if badges else None,
            )
        )
    return found


async def test_the_summary_line_says_what_arrived_what_travels_and_what_waits(client, demo):
    page = await page_of(client, demo, "D-1001")
    assert page.find("p", cls="glance").text == (
        "2 items of 4 delivered, 1 parcel on its way, and 1 item waiting for stock"
    )


async def test_split_order_shows_each_parcel_and_what_is_still_to_come(client, demo):
    page = await page_of(client, demo, "D-1001")
    order = await get_order(client, demo, "D-1001")
    assert page.by_id("order-title").text == "Order D-1001"
    assert re.match(r"Another (package|parcel) is still coming", page.find("p", cls="notice").text)
    placed = dt.datetime.fromisoformat(order["placed_at"]).astimezone(BRAND_TZ).date()
    assert page.find("section", cls="order-head").find("p", cls="muted").text == (
        f"Placed on {day(placed)} · Going to Oakland 946…"
    )
    assert page.by_id("parcels-title").text == "Your 2 parcels"
    moving, delivered = page.find_all("article", cls="parcel")
    # Parcels are numbered in the order they left (UPS first); the one still moving is shown first.
    assert moving.find("h3").text == "Parcel 2 · USPS"
    assert [b.text for b in moving.find_all(cls="badge")] == ["On its way"]
    assert "Tracking number: 9400111899223856928499" in moving.find(cls="parcel__tracking").text
    assert [i.find(cls="item__title").text for i in moving.find_all("li", cls="item")] == [
        "Organic tee, size M"
    ]
    assert delivered.find("h3").text == "Parcel 1 · UPS"
    assert [b.text for b in delivered.find_all(cls="badge")] == ["Delivered"]
    delivered_at = dt.datetime.fromisoformat(order["shipments"][0]["delivered_at"])
    assert delivered.find(cls="parcel__when").text == (
        f"Delivered on {day(delivered_at.astimezone(BRAND_TZ).date())}"
    )
    assert delivered.find("li", cls="item").text == f"Stoneware mug, blue {TIMES} 2"
    # What is still to come, and when.
    lamp = order["lines"][2]["eta"]
    assert page.by_id("waiting-title").text == "Still to come"
    (group,) = page.find_all("article", cls="waiting")
    assert group.find(cls="eta").text == (
        f"Estimated delivery {span(lamp['delivery']['earliest'], lamp['delivery']['latest'])}"
    )
    assert waiting_items(page) == [
        (
            "Oak desk lamp",
            f"Back in stock around {day(lamp['available_from'])}.",
            "Within our promise",
        )
    ]


async def test_parcel_card_links_to_the_carrier_and_lists_scans_newest_first(client, demo):
    link = "https://tools.usps.com/go/TrackConfirmAction?tLabels=9400111899223856928499&x=1"
    patched = await client.patch(
        f"{API}/orders/D-1001/shipments/P2", json={"tracking_url": link}, headers=demo.headers
    )
    assert patched.status_code == 200, patched.text
    await add_checkpoint(client, demo, "Picked up", ago=dt.timedelta(hours=10))
    await add_checkpoint(client, demo, "Arrived at Oakland hub", ago=dt.timedelta(hours=1))
    page = await page_of(client, demo, "D-1001")
    moving, delivered = page.find_all("article", cls="parcel")
    (anchor,) = moving.find(cls="parcel__tracking").find_all("a")
    assert anchor.attrs["href"] == link
    assert anchor.text == "Follow it on the carrier's site"
    assert "noreferrer" in (anchor.attrs.get("rel") or "").split()
    assert delivered.find(cls="parcel__tracking").find_all("a") == []  # no link given: none shown
    scans = moving.find("details", cls="timeline").find("ol").find_all("li")
    assert [s.find_all("span")[0].text for s in scans] == [
        "Arrived at Oakland hub",
        "Departed regional facility",
        "Picked up",
    ]
    stamps = [dt.datetime.fromisoformat(s.find("time").attrs["datetime"]) for s in scans]
    assert stamps == sorted(stamps, reverse=True)
    assert scans[1].find_all("span")[1].text == "· Sacramento, CA, US"


async def test_a_parcel_whose_carrier_eta_passed_the_promise_is_marked_delayed(client, demo):
    order = await get_order(client, demo, "D-1008")
    (shipment,) = order["shipments"]
    page = await page_of(client, demo, "D-1008")
    (card,) = page.find_all("article", cls="parcel")
    assert card.find("h3").text == "Parcel 1 · FEDEX"
    assert [b.text for b in card.find_all(cls="badge")] == ["On its way", "Delayed"]
    when = card.find(cls="parcel__when").text
    assert when.startswith(f"Expected {day(shipment['carrier_eta'])}")
    assert when.endswith(f"· first promised for {day(shipment['promised_date'])}")
    assert glance_counts(page) == {"parcel on its way": 1}
    # An in-transit parcel ahead of its promise is not delayed.
    on_time = (await page_of(client, demo, "D-1001")).find_all("article", cls="parcel")[0]
    assert "Delayed" not in on_time.text


async def test_a_parcel_past_its_last_date_says_so_instead_of_a_date_gone_by(client, demo):
    today = demo.now.date()
    dates = {
        "promised_date": (today - dt.timedelta(days=3)).isoformat(),
        "carrier_eta": (today - dt.timedelta(days=1)).isoformat(),
    }
    patched = await client.patch(
        f"{API}/orders/D-1001/shipments/P2", json=dates, headers=demo.headers
    )
    assert patched.status_code == 200, patched.text
    page = await page_of(client, demo, "D-1001")
    moving, _ = page.find_all("article", cls="parcel")
    assert [b.text for b in moving.find_all(cls="badge")] == ["On its way", "Delayed"]
    assert " ".join(moving.find(cls="parcel__when").text.split()) == (
        f"Promised for {day(dates['carrier_eta'])} · The carrier has not given a new date yet. "
        "We are following it closely."
    )
    # Its last day is not late yet.
    dates = {"promised_date": today.isoformat(), "carrier_eta": None}
    patched = await client.patch(
        f"{API}/orders/D-1001/shipments/P2", json=dates, headers=demo.headers
    )
    assert patched.status_code == 200, patched.text
    moving, _ = (await page_of(client, demo, "D-1001")).find_all("article", cls="parcel")
    assert [b.text for b in moving.find_all(cls="badge")] == ["On its way"]
    assert moving.find(cls="parcel__when").text.strip().startswith(f"Expected {day(today)}")


async def test_a_parcel_the_carrier_stopped_scanning_says_since_when(client, demo):
    # D-1010's newest scan is 5 days old; the brand's threshold is 4 days.
    order = await get_order(client, demo, "D-1010")
    (scan,) = order["shipments"][0]["checkpoints"]
    brand_zone = zoneinfo.ZoneInfo("America/Los_Angeles")  # the demo brand's: its pages' days
    scanned = dt.datetime.fromisoformat(scan["occurred_at"]).astimezone(brand_zone).date()
    (card,) = (await page_of(client, demo, "D-1010")).find_all("article", cls="parcel")
    assert [b.text for b in card.find_all(cls="badge")] == ["On its way", "Delayed"]
    assert card.find(cls="parcel__quiet").text == f"No news from the carrier since {day(scanned)}."
    # Scanned hours ago: nothing to say.
    (fresh, _) = (await page_of(client, demo, "D-1001")).find_all("article", cls="parcel")
    assert fresh.find_all(cls="parcel__quiet") == []
    # A brand that waits longer says nothing yet (its pages are rendered anew on the change).
    patched = await client.patch(f"{API}/brand", json={"stall_after_days": 6}, headers=demo.headers)
    assert patched.status_code == 200, patched.text
    (card,) = (await page_of(client, demo, "D-1010")).find_all("article", cls="parcel")
    assert [b.text for b in card.find_all(cls="badge")] == ["On its way"]
    assert card.find_all(cls="parcel__quiet") == []


async def test_each_backorder_type_says_where_its_date_comes_from(client, demo):
    today = demo.now.date()  # the demo dates its supply from this day
    expected = {}
    for number in ("D-1002", "D-1003", "D-1004", "D-1005", "D-1006", "D-1007"):
        order = await get_order(client, demo, number)
        expected[number] = next(line["eta"] for line in order["lines"] if line["eta"])
    preorder, custom, dropship, maker, seasonal, _ = expected.values()
    assert preorder["available_from"] == (today + dt.timedelta(days=20)).isoformat()  # release
    assert seasonal["available_from"] == (today + dt.timedelta(days=15)).isoformat()  # season
    placed_1003 = dt.date.fromisoformat((await get_order(client, demo, "D-1003"))["placed_at"][:10])
    assert custom["available_from"] == (placed_1003 + dt.timedelta(days=28)).isoformat()
    explanations = {
        "D-1002": (
            "Handheld console X",
            f"Releases on {day(preorder['available_from'])} and ships then.",
            "Within our promise",
        ),
        "D-1003": (
            "Linen sofa, made to order",
            f"Being made for you; ready around {day(custom['available_from'])}.",
            "Within our promise",
        ),
        "D-1004": (
            "Touring kayak",
            f"Ships from our partner around {day(dropship['ship_by'])}.",
            "Within our promise",
        ),
        "D-1006": (
            "Ski wax kit",
            f"Ships when the season starts, on {day(seasonal['available_from'])}.",
            "Within our promise",
        ),
        "D-1007": (
            "Reissue vinyl box set",
            "No date yet: we are waiting for confirmed stock. You are number 1 in line. "
            "You can cancel at any time.",
            None,
        ),
    }
    for number, line in explanations.items():
        page = await page_of(client, demo, number)
        assert page.by_id("waiting-title").text == "Still to come", number
        assert waiting_items(page) == [line], number
    # The manufacturer's date is less certain: a range, not a day.
    ((title, why, badge),) = waiting_items(await page_of(client, demo, "D-1005"))
    assert (title, badge) == ("Espresso machine", "Later than we promised")
    assert why.startswith("Waiting on the manufacturer: expected ")
    assert why.endswith(f"{span(maker['available_from'], maker['delivery']['latest'])}.")
    undated = (await page_of(client, demo, "D-1007")).find("article", cls="waiting")
    assert undated.find("h3").text == "No date yet"
    assert undated.find_all(cls="eta") == []
    seasonal_page = await page_of(client, demo, "D-1006")
    assert glance_counts(seasonal_page) == {"items waiting for stock": 3}


async def test_cancelled_and_switched_lines_are_listed_apart(client, demo):
    order = {
        "number": "W-2001",
        "placed_at": (demo.now - dt.timedelta(days=2)).isoformat(),
        "currency": "USD",
        "customer": {"id": "W-C1", "email": "ada@example.com", "locale": "en-GB"},
        "shipping": {"region": "GB", "city": "London", "postal_code": "SW1A 2AA"},
        "lines": [
            {
                "ref": "1",
                "sku": "MUG-BLUE",
                "title": "Stoneware mug, blue",
                "quantity": 1,
                "unit_price": 1800,
            },
            {
                "ref": "2",
                "sku": "TEE-ORG-M",
                "title": "Organic tee, size M",
                "quantity": 2,
                "unit_price": 3200,
                "status": "cancelled",
            },
            {
                "ref": "3",
                "sku": "LAMP-OAK",
                "title": "Oak desk lamp",
                "quantity": 1,
                "unit_price": 12900,
                "status": "substituted",
            },
        ],
    }
    created = await client.post(f"{API}/orders", json=order, headers=demo.headers)
    assert created.status_code == 201, created.text
    token = created.json()["tracking_url"].rsplit("/t/", 1)[1]
    page = parse((await client.get(f"/t/{token}")).text)
    assert glance_counts(page) == {"item being prepared": 1}
    assert page.by_id("closed-title").text == "Cancelled or switched"
    closed = [
        (li.find(cls="item__title").text, li.find(cls="item__qty").text, li.find(cls="badge").text)
        for li in page.find_all("li", cls="item--closed")
    ]
    assert closed == [
        ("Organic tee, size M", f"{TIMES} 2", "Cancelled"),
        ("Oak desk lamp", f"{TIMES} 1", "Switched to another item"),
    ]
    assert page.by_id("preparing-title").text == "Being prepared"


async def test_no_personal_data_in_any_page_or_json(client, demo):
    named = {
        "number": "W-2002",
        "placed_at": (demo.now - dt.timedelta(days=1)).isoformat(),
        "currency": "GBP",
        "customer": {
            "id": "W-C2",
            "email": "Grace.Hopper@example.org",
            "phone": "+442079460123",
            "name": "Grace Hopper",
            "locale": "en-GB",
        },
        "shipping": {"region": "GB", "city": "London", "postal_code": "SW1A 2AA"},
        "lines": [
            {
                "ref": "1",
                "sku": "MUG-BLUE",
                "title": "Stoneware mug, blue",
                "quantity": 1,
                "unit_price": 1800,
            }
        ],
    }
    created = await client.post(f"{API}/orders", json=named, headers=demo.headers)
    assert created.status_code == 201, created.text
    numbers = [*demo.tokens, "W-2002"]
    tokens = {**demo.tokens, "W-2002": created.json()["tracking_url"].rsplit("/t/", 1)[1]}
    assert len(numbers) == 11  # the demo's ten orders and one with a named customer
    for number in numbers:
        order = await get_order(client, demo, number)
        customer, postal = order["customer"], order["shipping"]["postal_code"]
        secrets = [customer["email"], customer["email"].lower(), customer["phone"]]
        secrets.append(customer["phone"].lstrip("+"))
        secrets.append(customer["email"].split("@")[0])
        if customer["name"]:
            secrets += [customer["name"], *customer["name"].split()]
        compact = postal.replace(" ", "")
        secrets += [postal, compact]
        html = (await client.get(f"/t/{tokens[number]}")).text
        data = await client.get(f"/t/{tokens[number]}.json")
        assert data.json()["order"]["number"] == number
        assert f"{compact[:3]}…" in html
        for shown, where in ((html, "page"), (data.text, "json")):
            for secret in secrets:
                assert secret.lower() not in shown.lower(), (number, where, secret)
            if number == "W-2002":
                assert "SW1A" not in shown, where  # only the first 3 characters: "SW1…"
