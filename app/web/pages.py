"""Render tracking pages: find the order by token, pick theme and language, cache the HTML.

Rendered HTML is cached per (order, version, language, theme version, brand's day) with a
placeholder where each response puts its own CSP nonce. Order versions arrive with change
notifications (see `app.storage.changes`), so a repeat view of an unchanged order needs no
database query at all.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jinja2 import Environment
from sqlalchemy import select

from app.api.orders import order_view
from app.i18n import LOCALES, RTL_LOCALES, Formatter, template_gettext
from app.services import Services
from app.storage.schema import brands, choices, customers, order_lines, orders
from app.themes.registry import Theme, environment, load_themes
from app.web.security import NONCE_PLACEHOLDER
from app.web.view import Alternative, Choice, Item, TrackingView, build_view

TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32}$")
LANGUAGE_NAMES = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
    "ar": "العربية",
}


@dataclass
class OrderMeta:
    """What finding an order by its token tells: enough to answer a repeat view."""

    order_id: int
    brand_id: int
    number: str
    version: int
    customer_locale: str | None
    token: str


@dataclass(frozen=True)
class BrandLook:
    """A brand as its pages show it."""

    id: int
    slug: str
    name: str
    timezone: zoneinfo.ZoneInfo
    default_locale: str
    theme: str
    tokens: Mapping[str, str]
    theme_version: int
    custom_css: str | None
    frame_ancestors: tuple[str, ...]
    logo: str | None
    support_email: str | None
    support_phone: str | None
    support_url: str | None
    stall_after_days: int = 4

    @property
    def theme_key(self) -> str:
        return f"{self.theme}.{self.theme_version}"


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass
class Rendered:
    page: str
    fragment: str


@dataclass
class Pages:
    """Everything the shopper-facing pages need, built once per process."""

    services: Services
    themes: dict[str, Theme] = field(default_factory=load_themes)
    _envs: dict[str, Environment] = field(default_factory=dict)
    _meta: dict[str, OrderMeta] = field(default_factory=dict)
    _by_order: dict[int, str] = field(default_factory=dict)
    _brands: dict[int, BrandLook] = field(default_factory=dict)
    _html: _Lru = field(default_factory=lambda: _Lru(5000))

    def __post_init__(self) -> None:
        self._html.size = self.services.settings.page_cache_entries
        for theme in self.themes.values():
            self._envs[theme.name] = environment(theme)

    # Cache upkeep, driven by the change hub --------------------------------------------

    def on_change(self, versions: Mapping[int, int] | None) -> None:
        """Forget what changed (everything when `versions` is None)."""
        if versions is None:
            self._meta.clear()
            self._by_order.clear()
            self._brands.clear()
            self._html.clear()
            return
        for order_id in versions:
            # Re-read on the next view: the version, and the customer's language with it.
            token = self._by_order.pop(order_id, None)
            if token is not None:
                self._meta.pop(token, None)

    # Lookups ---------------------------------------------------------------------------

    async def find(self, token: str) -> OrderMeta | None:
        """Find an order by tracking token (None for malformed and unknown tokens alike)."""
        if not TOKEN_SHAPE.match(token):
            return None
        meta = self._meta.get(token)
        if meta is not None:
            return meta
        async with self.services.db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        orders.c.id,
                        orders.c.brand_id,
                        orders.c.number,
                        orders.c.version,
                        customers.c.locale,
                    )
                    .select_from(orders)
                    .outerjoin(customers, customers.c.id == orders.c.customer_id)
                    .where(orders.c.tracking_token == token)
                )
            ).first()
        if row is None:
            return None
        meta = OrderMeta(row.id, row.brand_id, row.number, row.version, row.locale, token)
        if len(self._meta) > self.services.settings.page_cache_entries * 4:
            self._meta.clear()
            self._by_order.clear()
        self._meta[token] = meta
        self._by_order[row.id] = token
        return meta

    async def current_version(self, meta: OrderMeta) -> int:
        """Read the order's version from the database (the truth)."""
        async with self.services.db.read() as conn:
            version = (
                await conn.execute(select(orders.c.version).where(orders.c.id == meta.order_id))
            ).scalar_one_or_none()
        if version is not None:
            meta.version = max(meta.version, version)
        return meta.version

    async def brand(self, brand_id: int) -> BrandLook:
        """Return how a brand's pages look."""
        look = self._brands.get(brand_id)
        if look is not None:
            return look
        async with self.services.db.read() as conn:
            row = (await conn.execute(select(brands).where(brands.c.id == brand_id))).one()
        theme = self.themes.get(row.theme) or self.themes["default"]
        tokens = {**theme.tokens, **(row.theme_tokens or {})}
        look = BrandLook(
            id=row.id,
            slug=row.slug,
            name=row.name,
            timezone=zoneinfo.ZoneInfo(row.timezone),
            default_locale=row.default_locale,
            theme=theme.name,
            tokens=tokens,
            theme_version=row.theme_version,
            custom_css=row.custom_css,
            frame_ancestors=tuple(row.frame_ancestors or ()),
            logo=tokens.get("logo") or row.logo_url or None,
            support_email=row.support_email,
            support_phone=row.support_phone,
            support_url=row.support_url,
            stall_after_days=row.stall_after_days,
        )
        self._brands[brand_id] = look
        return look

    async def brand_by_slug(self, slug: str) -> BrandLook | None:
        """Find a brand by its slug."""
        async with self.services.db.read() as conn:
            brand_id = (
                await conn.execute(select(brands.c.id).where(brands.c.slug == slug))
            ).scalar_one_or_none()
        return None if brand_id is None else await self.brand(brand_id)

    # Rendering -------------------------------------------------------------------------

    def formatter(self, brand: BrandLook, locale: str) -> Formatter:
        return Formatter(locale, brand.timezone)

    def context(self, brand: BrandLook, locale: str, urls: Mapping[str, str]) -> dict[str, Any]:
        """The template context every page shares."""
        return {
            **template_gettext(locale),
            "brand": brand,
            "locale": locale,
            "rtl": locale in RTL_LOCALES,
            "languages": [(code, LANGUAGE_NAMES[code]) for code in LOCALES],
            "urls": urls,
            "nonce": NONCE_PLACEHOLDER,
        }

    def render(self, brand: BrandLook, template: str, context: Mapping[str, Any]) -> str:
        """Render one of the brand theme's templates."""
        env = self._envs.get(brand.theme) or self._envs["default"]
        return env.get_template(template).render(context)

    async def tracking(
        self,
        meta: OrderMeta,
        brand: BrandLook,
        locale: str,
        today: dt.date,
        urls: Mapping[str, str],
        csrf: Callable[[], str],
    ) -> Rendered:
        """Return the rendered page and its live-updated section, from cache when current."""
        key = (meta.order_id, meta.version, locale, brand.theme_key, today)
        cached = self._html.get_fresh(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        view = await self.load_view(meta, brand)
        meta.version = max(meta.version, view.version)
        context = {
            **self.context(brand, locale, urls),
            "view": view,
            "fmt": self.formatter(brand, locale),
            "today": today,
            "csrf": csrf(),
        }
        rendered = Rendered(
            page=self.render(brand, "page/tracking.html", context),
            fragment=self.render(brand, "page/_order.html", context),
        )
        self._html.put((meta.order_id, view.version, locale, brand.theme_key, today), rendered)
        return rendered

    async def load_view(self, meta: OrderMeta, brand: BrandLook) -> TrackingView:
        """Read the order and its open or answered choices into a page view."""
        async with self.services.db.read() as conn:
            order = await order_view(conn, self.services, meta.brand_id, meta.number)
            rows = (
                await conn.execute(
                    select(choices, order_lines.c.ref, order_lines.c.status.label("line_status"))
                    .join(order_lines, order_lines.c.id == choices.c.order_line_id)
                    .where(choices.c.order_id == meta.order_id)
                    .order_by(choices.c.id)
                )
            ).all()
        lines = {line.ref: line for line in order.lines}
        found = []
        for row in rows:
            line = lines.get(row.ref)
            undecided = row.state in {"open", "needs_person"}
            # A closed choice (its line stopped waiting) has nothing to show.
            if (
                line is None
                or row.state == "closed"
                or (undecided and row.line_status != "backordered")
            ):
                continue
            found.append(
                Choice(
                    id=row.id,
                    line=Item(line.ref, line.title, line.image_url, line.quantity, line.unit_price),
                    reason=row.reason,
                    state=row.state,
                    deadline=row.deadline,
                    default_action=row.default_action,
                    decision=row.decision,
                    alternative_sku=row.alternative_sku,
                    alternatives=[
                        Alternative(
                            a.get("sku", ""),
                            a.get("title", ""),
                            a.get("image_url"),
                            a.get("unit_price"),
                        )
                        for a in row.alternatives or []
                    ],
                )
            )
        return replace(build_view(order), choices=found)
