"""Shopper-facing routes: the tracking page, its JSON and live stream, lookup, choices, styles."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from app.api.problems import NotFound
from app.i18n import LOCALES, N_, RTL_LOCALES, negotiate, translations
from app.services import Services
from app.storage import choices as choice_store
from app.storage import lookups
from app.storage.schema import customers, orders
from app.themes.registry import css_tokens
from app.web.pages import BrandLook, OrderMeta, Pages
from app.web.security import NONCE_PLACEHOLDER, Signer, new_nonce, page_headers, plain_headers

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"
_FORM_LIMIT = 4096
_KEEPALIVE_SECONDS = 15.0
# Any code the column can hold; the shape only spares the database a lookup of junk.
SMS_CODE_SHAPE = re.compile(r"^[A-Za-z0-9]{1,16}$")


def _pages(request: Request) -> Pages:
    pages: Pages = request.state.pages
    return pages


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _signer(request: Request) -> Signer:
    signer: Signer = request.state.signer
    return signer


def _locale(request: Request, meta: OrderMeta | None, brand: BrandLook) -> str:
    return negotiate(
        request.query_params.get("lang"),
        meta.customer_locale if meta else None,
        request.headers.get("accept-language"),
        brand.default_locale,
    )


def _build_fingerprint() -> str:
    """Hash what shapes a page besides its data: static files, templates, themes, catalogs."""
    digest = hashlib.sha256()
    roots = (STATIC_DIR, STATIC_DIR.parent / "templates", STATIC_DIR.parent / "themes")
    files = [path for root in roots for path in sorted(root.rglob("*")) if path.is_file()]
    files += sorted((STATIC_DIR.parent / "locale").rglob("*.mo"))
    for path in files:
        digest.update(str(path.relative_to(STATIC_DIR.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


BUILD = _build_fingerprint()


def _urls(brand: BrandLook, token: str | None, locale: str) -> dict[str, str]:
    urls = {
        "base_css": f"/static/base.css?v={BUILD}",
        "brand_css": f"/b/{brand.slug}/theme.css?v={brand.theme_key}.{BUILD}",
        "live_js": f"/static/live.js?v={BUILD}",
        "lookup": f"/{brand.slug}/track",
    }
    if token:
        urls.update(
            events=f"/t/{token}/events?lang={locale}",
            fragment=f"/t/{token}?lang={locale}",
            choice=f"/t/{token}/choices/{{id}}?lang={locale}",
        )
    return urls


async def _message(
    request: Request, brand: BrandLook | None, status: int, heading: str, text: str
) -> Response:
    """A plain page (not found, gone, too many requests) in the shopper's language."""
    pages = _pages(request)
    if brand is None:
        locale = negotiate(
            request.query_params.get("lang"), None, request.headers.get("accept-language"), "en"
        )
        catalog = translations(locale)
        direction = "rtl" if locale in RTL_LOCALES else "ltr"
        body = (
            f'<!doctype html><html lang="{locale}" dir="{direction}"><meta charset="utf-8">'
            f"<title>{catalog.gettext(heading)}</title><h1>{catalog.gettext(heading)}</h1>"
            f"<p>{catalog.gettext(text)}</p></html>"
        )
        headers = {**page_headers(new_nonce(), ()), **_language_headers(locale)}
        return HTMLResponse(body, status_code=status, headers=headers)
    locale = _locale(request, None, brand)
    catalog = translations(locale)
    context = {
        **pages.context(brand, locale, _urls(brand, None, locale)),
        "heading": catalog.gettext(heading),
        "message": catalog.gettext(text),
    }
    nonce = new_nonce()
    html = pages.render(brand, "page/message.html", context).replace(NONCE_PLACEHOLDER, nonce)
    headers = {**page_headers(nonce, brand.frame_ancestors), **_language_headers(locale)}
    return HTMLResponse(html, status_code=status, headers=headers)


def _language_headers(locale: str) -> dict[str, str]:
    """Headers of a page whose language came from the request; not for shared caches."""
    return {"Content-Language": locale, "Vary": "Accept-Language", "Cache-Control": "no-store"}


NOT_FOUND = (
    N_("Tracking link not found"),
    N_("Check the link in your message, or look your order up."),
)


async def tracking_page(request: Request) -> Response:
    pages = _pages(request)
    meta = await pages.find(request.path_params["token"])
    if meta is None:
        return await _message(request, None, 404, *NOT_FOUND)
    brand = await pages.brand(meta.brand_id)
    locale = _locale(request, meta, brand)
    today = _services(request).clock().astimezone(brand.timezone).date()
    etag = f'W/"{meta.version}.{locale}.{brand.theme_key}.{today.isoformat()}.{BUILD}"'
    nonce = new_nonce()
    headers = {
        **page_headers(nonce, brand.frame_ancestors),
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "Vary": "Accept-Language",
        "Content-Language": locale,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    signer = _signer(request)
    rendered = await pages.tracking(
        meta,
        brand,
        locale,
        today,
        _urls(brand, meta.token, locale),
        lambda: signer.token("choice:" + meta.token),
    )
    html = rendered.page.replace(NONCE_PLACEHOLDER, nonce)
    # The render may have found a newer version than the cached meta knew.
    headers["ETag"] = f'W/"{meta.version}.{locale}.{brand.theme_key}.{today.isoformat()}.{BUILD}"'
    return HTMLResponse(html, headers=headers)


async def short_link(request: Request) -> Response:
    """Send an SMS's short link on to the tracking page it stands for."""
    code = request.path_params["code"]
    token = None
    if SMS_CODE_SHAPE.match(code):
        async with _services(request).db.read() as conn:
            token = (
                await conn.execute(select(orders.c.tracking_token).where(orders.c.sms_code == code))
            ).scalar_one_or_none()
    if token is None:
        return await _message(request, None, 404, *NOT_FOUND)
    # The Location carries the order's secret token: no cache along the way may keep it.
    headers = {**plain_headers(), "Cache-Control": "no-store"}
    return RedirectResponse(f"/t/{token}", status_code=302, headers=headers)


def _unknown_link() -> Response:
    """The one answer for unknown and malformed tokens outside the HTML page."""
    response = NotFound("No such tracking link.").response()
    response.headers.update(plain_headers())
    return response


async def tracking_json(request: Request) -> Response:
    pages = _pages(request)
    meta = await pages.find(request.path_params["token"])
    if meta is None:
        return _unknown_link()
    brand = await pages.brand(meta.brand_id)
    view = await pages.load_view(meta, brand)
    body = {
        "brand": {"name": brand.name, "slug": brand.slug, "support_url": brand.support_url},
        "order": _jsonable(view),
    }
    headers = {
        **plain_headers(),
        "Cache-Control": "private, no-cache",
        "ETag": f'W/"{view.version}.{brand.theme_key}"',
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return JSONResponse(body, headers=headers)


def _jsonable(value: object) -> object:
    """Turn the page's view (dataclasses, dates) into JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("within_promise", "together", "moving", "trouble", "open"):
            if hasattr(type(value), name) and isinstance(getattr(type(value), name), property):
                out[name] = getattr(value, name)
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


async def tracking_events(request: Request) -> Response:
    pages = _pages(request)
    meta = await pages.find(request.path_params["token"])
    if meta is None:
        return _unknown_link()
    brand = await pages.brand(meta.brand_id)
    locale = _locale(request, meta, brand)
    raw_last = request.headers.get("last-event-id") or request.query_params.get("v") or "0"
    last = int(raw_last) if raw_last.isdigit() else 0
    hub = _services(request).hub
    signer = _signer(request)
    services = _services(request)

    async def stream() -> AsyncIterator[str]:
        nonlocal last
        with hub.subscribe(meta.order_id) as queue:
            yield "retry: 2000\n\n"
            check = True
            while True:
                if check:
                    version = await pages.current_version(meta)
                    if version > last:
                        current_brand = await pages.brand(meta.brand_id)
                        today = services.clock().astimezone(current_brand.timezone).date()
                        rendered = await pages.tracking(
                            meta,
                            current_brand,
                            locale,
                            today,
                            _urls(current_brand, meta.token, locale),
                            lambda: signer.token("choice:" + meta.token),
                        )
                        last = meta.version
                        payload = json.dumps({"version": last, "html": rendered.fragment})
                        yield f"id: {last}\nevent: update\ndata: {payload}\n\n"
                try:
                    version = await asyncio.wait_for(queue.get(), _KEEPALIVE_SECONDS)
                    check = version == 0 or version > last
                except TimeoutError:
                    yield ": keepalive\n\n"
                    check = True  # the database is the truth; a missed notice costs one interval

    del brand
    headers = {**plain_headers(), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


async def _form(request: Request) -> dict[str, str] | None:
    if (
        request.headers.get("content-type", "").split(";")[0].strip()
        != "application/x-www-form-urlencoded"
    ):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_LIMIT:
            return None
    try:
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


def _same_origin(request: Request) -> bool:
    """Refuse cross-site form posts; the signed form token is checked as well.

    Pages send `Referrer-Policy: no-referrer` (the token is in the URL), under which browsers
    post forms with `Origin: null`; they then also say `Sec-Fetch-Site`, which is trusted.
    """
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if origin == "null":
        return site == "same-origin"
    if site is not None and site not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    public = _services(request).settings.public_url
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin in (public, own)


async def choose(request: Request) -> Response:
    pages = _pages(request)
    meta = await pages.find(request.path_params["token"])
    if meta is None:
        return await _message(request, None, 404, *NOT_FOUND)
    brand = await pages.brand(meta.brand_id)
    form = await _form(request)
    csrf_ok = (
        form is not None
        and _same_origin(request)
        and _signer(request).check("choice:" + meta.token, form.get("csrf", ""))
    )
    if form is None or not csrf_ok:
        return await _message(
            request,
            brand,
            403,
            N_("This form has expired"),
            N_("Reload the page and send your choice again."),
        )
    raw = form.get("decision", "")
    decision, _, alternative = raw.partition(":")
    choice_id = request.path_params["choice_id"]
    services = _services(request)
    try:
        async with services.db.write() as conn:
            await choice_store.decide(
                conn,
                meta.brand_id,
                meta.order_id,
                int(choice_id),
                decision,
                alternative or None,
                "page",
                services.clock(),
            )
    except choice_store.ChoiceError:
        return await _message(
            request,
            brand,
            422,
            N_("That choice is not available"),
            N_("Reload the page to see your options."),
        )
    lang = request.query_params.get("lang")
    suffix = f"?lang={lang}" if lang in LOCALES else ""
    return RedirectResponse(
        f"/t/{meta.token}{suffix}#choice-{choice_id}", status_code=303, headers=plain_headers()
    )


async def lookup_form(request: Request) -> Response:
    brand = await _pages(request).brand_by_slug(request.path_params["brand"])
    if brand is None:
        return await _message(
            request, None, 404, N_("Page not found"), N_("Check the address and try again.")
        )
    return await _lookup_page(request, brand, None, 200)


async def _lookup_page(
    request: Request,
    brand: BrandLook,
    message: str | None,
    status: int,
    headers: dict[str, str] | None = None,
) -> Response:
    pages = _pages(request)
    locale = _locale(request, None, brand)
    catalog = translations(locale)
    context = {
        **pages.context(brand, locale, _urls(brand, None, locale)),
        "message": catalog.gettext(message) if message else None,
        "csrf": _signer(request).token("lookup:" + brand.slug),
    }
    nonce = new_nonce()
    html = pages.render(brand, "page/lookup.html", context).replace(NONCE_PLACEHOLDER, nonce)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            **page_headers(nonce, brand.frame_ancestors),
            **_language_headers(locale),
            **(headers or {}),
        },
    )


NO_MATCH = N_("We could not find an order with those details. Check them and try again.")


async def lookup(request: Request) -> Response:
    pages = _pages(request)
    brand = await pages.brand_by_slug(request.path_params["brand"])
    if brand is None:
        return await _message(
            request, None, 404, N_("Page not found"), N_("Check the address and try again.")
        )
    form = await _form(request)
    if (
        form is None
        or not _same_origin(request)
        or not _signer(request).check("lookup:" + brand.slug, form.get("csrf", ""), 7200)
    ):
        return await _lookup_page(
            request, brand, N_("This form has expired. Please try again."), 403
        )
    number = form.get("number", "").strip()[:64]
    contact = form.get("contact", "").strip()[:320]
    services = _services(request)
    client = request.client.host if request.client else "unknown"
    now = services.clock()
    async with services.db.write() as conn:
        wait = await lookups.allow(conn, brand.id, client, number, now)
    if wait is not None:
        return await _lookup_page(
            request,
            brand,
            N_("Too many attempts. Please wait a few minutes and try again."),
            429,
            {"Retry-After": str(wait)},
        )
    token = await _match(services, brand.id, number, contact)
    if token is None:
        return await _lookup_page(request, brand, NO_MATCH, 200)
    return RedirectResponse(f"/t/{token}", status_code=303, headers=plain_headers())


def _normal(value: str) -> str:
    return "".join(value.split()).casefold()


async def _match(services: Services, brand_id: int, number: str, contact: str) -> str | None:
    """Return the order's token when the number and the email or postal code match."""
    async with services.db.read() as conn:
        row = (
            await conn.execute(
                select(orders.c.tracking_token, orders.c.shipping_postal_code, customers.c.email)
                .select_from(orders)
                .outerjoin(customers, customers.c.id == orders.c.customer_id)
                .where(orders.c.brand_id == brand_id, orders.c.number == number)
            )
        ).first()
    given = _normal(contact).encode()
    # Compare against something either way, so a missing order costs the same as a wrong email.
    email = _normal(row.email or "") if row else "\x00"
    postal = _normal(row.shipping_postal_code or "") if row else "\x00"
    matched = bool(given) and (
        hmac.compare_digest(given, email.encode()) | hmac.compare_digest(given, postal.encode())
    )
    if row is None or not matched:
        return None
    return str(row.tracking_token)


async def brand_css(request: Request) -> Response:
    brand = await _pages(request).brand_by_slug(request.path_params["brand"])
    if brand is None:
        return Response(
            "/* no such brand */", status_code=404, media_type="text/css", headers=plain_headers()
        )
    pages = _pages(request)
    theme = pages.themes.get(brand.theme) or pages.themes["default"]
    css = f"{css_tokens(brand.tokens)}{theme.stylesheet}\n{brand.custom_css or ''}\n"
    headers = {**plain_headers(), "Cache-Control": "public, max-age=31536000, immutable"}
    if request.query_params.get("v") != f"{brand.theme_key}.{BUILD}":
        headers["Cache-Control"] = "public, max-age=60"
    return Response(css, media_type="text/css", headers=headers)


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    media = {"base.css": "text/css", "live.js": "text/javascript"}.get(name)
    if media is None:
        return Response(
            "not found", status_code=404, media_type="text/plain", headers=plain_headers()
        )
    headers = {**plain_headers(), "Cache-Control": "public, max-age=31536000, immutable"}
    return Response((STATIC_DIR / name).read_bytes(), media_type=media, headers=headers)


async def track(request: Request) -> Response:
    if request.method == "POST":
        return await lookup(request)
    return await lookup_form(request)


def routes() -> list[BaseRoute]:
    """The shopper-facing routes."""
    return [
        Route("/static/{name}", static_file, methods=["GET"]),
        Route("/b/{brand}/theme.css", brand_css, methods=["GET"]),
        Route("/t/{token}.json", tracking_json, methods=["GET"]),
        Route("/t/{token}/events", tracking_events, methods=["GET"]),
        Route("/t/{token}/choices/{choice_id:int}", choose, methods=["POST"]),
        Route("/t/{token}", tracking_page, methods=["GET"]),
        Route("/s/{code}", short_link, methods=["GET"]),
        Route("/{brand}/track", track, methods=["GET", "POST"]),
    ]
