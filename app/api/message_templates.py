"""A brand's own wording for its messages: one template part at a time, checked before it is kept.

A brand template is Jinja2 rendered in the same sandbox as the shipped ones; it may extend the
shipped part (`{% extends "default:eta_changed.email.html" %}`) and replace a block. It is tried
on sample news before it is stored, so a template that does not compile, names an unknown part or
reaches for what the sandbox forbids is refused with the reason.
"""

from __future__ import annotations

from typing import Annotated

from jinja2 import TemplateError
from pydantic import Field
from sqlalchemy import delete, select

from app.api.endpoint import Call, Reply
from app.api.models import Out, Payload
from app.api.problems import InvalidFields, NotFound
from app.storage.dialect import upsert
from app.storage.schema import message_templates
from messaging.render import MessageRenderer, TemplateProblem

RENDERER = MessageRenderer()
# The URL segment naming a template part.
NAME = "name"


class TemplateIn(Payload):
    source: Annotated[str, Field(min_length=1, max_length=20_000)]


class TemplateOut(Out):
    name: str
    source: str


class TemplateList(Out):
    templates: list[TemplateOut]
    available: list[str] = Field(description="Every part a brand may override")


async def put_template(call: Call) -> Reply:
    name = call.path[NAME]
    body: TemplateIn = call.body
    try:
        RENDERER.check_override(name, body.source)
    except (TemplateProblem, TemplateError) as exc:
        raise InvalidFields([{"path": "source", "message": str(exc)[:500]}]) from None
    stmt = upsert(call.conn, message_templates, ["brand_id", "name"], ["source", "updated_at"])
    await call.conn.execute(
        stmt.values(
            brand_id=call.brand.id,
            name=name,
            source=body.source,
            created_at=call.now,
            updated_at=call.now,
        )
    )
    return Reply(TemplateOut(name=name, source=body.source))


async def list_templates(call: Call) -> Reply:
    rows = await call.conn.execute(
        select(message_templates.c.name, message_templates.c.source)
        .where(message_templates.c.brand_id == call.brand.id)
        .order_by(message_templates.c.name)
    )
    return Reply(
        TemplateList(
            templates=[TemplateOut(name=r.name, source=r.source) for r in rows],
            available=sorted(RENDERER.names),
        )
    )


async def get_template(call: Call) -> Reply:
    row = (
        await call.conn.execute(
            select(message_templates.c.source).where(
                message_templates.c.brand_id == call.brand.id,
                message_templates.c.name == call.path[NAME],
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"No template {call.path[NAME]!r} of this brand.")
    return Reply(TemplateOut(name=call.path[NAME], source=row.source))


async def delete_template(call: Call) -> Reply:
    result = await call.conn.execute(
        delete(message_templates).where(
            message_templates.c.brand_id == call.brand.id,
            message_templates.c.name == call.path[NAME],
        )
    )
    if not result.rowcount:
        raise NotFound(f"No template {call.path[NAME]!r} of this brand.")
    return Reply(None, 204)
