"""Languages: ?lang= beats the customer's locale beats Accept-Language beats the brand default."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal

import pytest
from babel.dates import format_date
from babel.numbers import format_currency

from app.demo import demo_orders
from app.i18n import translations
from tests.web.support import API, get_order, parse, patch_brand

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]
BRAND_TZ = zoneinfo.ZoneInfo("America/Los_Angeles")


def tr(locale: str, message: str) -> str:
    return translations(locale).gettext(message)


async def shown_language(client, path, accept=None):
    headers = {"Accept-Language": accept} if accept else {}
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    html = parse(response.text).find("html")
    assert response.headers["content-language"] == html.attrs["lang"], path
    return html.attrs["lang"]


async def new_order(client, demo, number, customer):
    payload = {
        "number": number,
        "placed_at": (demo.now - dt.timedelta(days=1)).isoformat(),
        "currency": "EUR",
        "customer": customer,
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
    response = await client.post(f"{API}/orders", json=payload, headers=demo.headers)
    assert response.status_code == 201, response.text
    return "/t/" + response.json()["tracking_url"].rsplit("/t/", 1)[1]


async def test_the_query_beats_the_customer_beats_the_browser_beats_the_brand(client, demo):
    english_customer = demo.page("D-1001")  # the demo's shoppers are en-US
    assert await shown_language(client, english_customer) == "en"
    assert await shown_language(client, english_customer, "fr-FR,fr;q=0.9") == "en"
    assert await shown_language(client, english_customer + "?lang=fr", "de") == "fr"
    assert await shown_language(client, english_customer + "?lang=xx", "de") == "en"

    spanish_customer = await new_order(client, demo, "L-1", {"id": "L-C1", "locale": "es-MX"})
    assert await shown_language(client, spanish_customer, "de-DE,de;q=0.9") == "es"
    assert await shown_language(client, spanish_customer + "?lang=de", "fr") == "de"

    unknown_locale = await new_order(client, demo, "L-2", {"id": "L-C2"})
    assert await shown_language(client, unknown_locale) == "en"  # the brand's default
    assert await shown_language(client, unknown_locale, "de-DE,de;q=0.9,en;q=0.5") == "de"
    assert await shown_language(client, unknown_locale, "pt-BR, es;q=0.8, fr;q=0.9") == "fr"
    assert await shown_language(client, unknown_locale, "en;q=0, ar") == "ar"
    changed = await patch_brand(client, demo, default_locale="fr")
    assert changed.status_code == 200, changed.text
    assert await shown_language(client, unknown_locale) == "fr"
    assert await shown_language(client, unknown_locale, "pt-BR") == "fr"
    assert await shown_language(client, unknown_locale, "de") == "de"
    assert await shown_language(client, unknown_locale + "?lang=es", "de") == "es"


async def test_arabic_pages_read_right_to_left(client, demo):
    for path in (demo.page("D-1001") + "?lang=ar", "/demo/track?lang=ar"):
        response = await client.get(path)
        html = parse(response.text).find("html")
        assert (html.attrs["lang"], html.attrs["dir"]) == ("ar", "rtl"), path
    arabic = await client.get(demo.page("D-1001") + "?lang=ar")
    assert arabic.headers["content-language"] == "ar"
    page = parse(arabic.text)
    assert page.by_id("waiting-title").text == tr("ar", "Still to come")
    assert tr("ar", "Still to come") != "Still to come"
    english = parse((await client.get(demo.page("D-1001"))).text).find("html")
    assert (english.attrs["lang"], english.attrs["dir"]) == ("en", "ltr")


async def test_french_page_formats_dates_and_money_the_french_way(client, demo):
    response = await client.get(demo.page("D-1005") + "?lang=fr")
    assert response.headers["content-language"] == "fr"
    assert "Accept-Language" in [v.strip() for v in response.headers["vary"].split(",")]
    page = parse(response.text)
    order = await get_order(client, demo, "D-1005")
    placed = dt.datetime.fromisoformat(order["placed_at"]).astimezone(BRAND_TZ).date()
    french_date = format_date(placed, "medium", locale="fr")  # e.g. "16 nov. 2026"
    assert french_date.split()[1].endswith(".")
    head = page.find("section", cls="order-head").find("p", cls="muted").text
    assert head.startswith(tr("fr", "Placed on %(date)s") % {"date": french_date})
    assert tr("fr", "Placed on %(date)s") != "Placed on %(date)s"
    labels = [label.text for label in page.find("section", cls="choice").find_all("label")]
    price = format_currency(Decimal("449.00"), "USD", locale="fr")  # "449,00 $US"
    assert price.startswith("449,00")
    assert labels[1] == (
        tr("fr", "Switch to %(title)s") % {"title": "Compact espresso machine"} + f" · {price}"
    )
    assert "$449.00" not in response.text
    assert page.by_id("waiting-title").text == tr("fr", "Still to come")


async def test_german_dates_follow_the_german_pattern(client, demo):
    page = parse((await client.get(demo.page("D-1008") + "?lang=de")).text)
    order = await get_order(client, demo, "D-1008")
    promised = dt.date.fromisoformat(order["shipments"][0]["promised_date"])
    assert format_date(promised, "medium", locale="de") == promised.strftime("%d.%m.%Y")
    when = page.find(cls="parcel__when").text
    assert promised.strftime("%d.%m.%Y") in when


async def test_tracking_pages_say_which_language_they_chose_and_that_it_varies(client, demo):
    for accept, expected in ((None, "en"), ("de", "en")):
        headers = {"Accept-Language": accept} if accept else {}
        response = await client.get(demo.page("D-1002"), headers=headers)
        assert response.headers["content-language"] == expected
        assert "Accept-Language" in [v.strip() for v in response.headers["vary"].split(",")]
    french = await client.get(demo.page("D-1002") + "?lang=fr")
    assert french.headers["content-language"] == "fr"


async def test_every_negotiated_html_response_names_its_language_and_varies(client, demo):
    """The lookup form and the message pages pick a language from Accept-Language too."""
    unknown = "/t/" + "A" * 32
    for path in ("/demo/track", unknown, "/nope/track"):
        for accept, expected in (("fr", "fr"), ("de", "de")):
            response = await client.get(path, headers={"Accept-Language": accept})
            assert parse(response.text).find("html").attrs["lang"] == expected, path
            assert response.headers.get("content-language") == expected, path
            vary = [v.strip() for v in response.headers.get("vary", "").split(",")]
            assert "Accept-Language" in vary, path
    french = parse((await client.get(unknown, headers={"Accept-Language": "fr"})).text)
    assert french.find("h1").text == tr("fr", "Tracking link not found")


async def test_a_customer_locale_changed_by_the_brand_takes_effect(client, demo):
    path = demo.page("D-1002")
    assert await shown_language(client, path) == "en"
    (payload,) = [o for o in demo_orders(demo.now.date()) if o["number"] == "D-1002"]
    payload["customer"]["locale"] = "fr-FR"
    updated = await client.post(f"{API}/orders", json=payload, headers=demo.headers)
    assert updated.status_code == 200, updated.text
    assert (await get_order(client, demo, "D-1002"))["customer"]["locale"] == "fr-FR"
    assert await shown_language(client, path) == "fr"
