"""SKU stock and inbound supply endpoints."""

from __future__ import annotations

from typing import Any

from app.api.endpoint import Call, Reply
from app.api.models import (
    ReceiveIn,
    SkuIn,
    SkuOut,
    SkuPatch,
    SupplyIn,
    SupplyList,
    SupplyOut,
    SupplyPatch,
)
from app.storage import catalog


def _sku_out(row: dict[str, Any]) -> SkuOut:
    return SkuOut(**{name: row[name] for name in SkuOut.model_fields})


async def put_sku(call: Call) -> Reply:
    body: SkuIn = call.body
    row, created = await catalog.put_sku(call.conn, call.brand.id, call.path["sku"], body, call.now)
    return Reply(_sku_out(row), 201 if created else 200)


async def patch_sku(call: Call) -> Reply:
    body: SkuPatch = call.body
    row = await catalog.patch_sku(call.conn, call.brand.id, call.path["sku"], body, call.now)
    return Reply(_sku_out(row))


async def get_sku(call: Call) -> Reply:
    return Reply(_sku_out(await catalog.get_sku(call.conn, call.brand.id, call.path["sku"])))


async def add_supply(call: Call) -> Reply:
    body: SupplyIn = call.body
    values = await catalog.add_supply(call.conn, call.brand.id, call.path["sku"], body, call.now)
    return Reply(SupplyOut(**values), 201)


async def change_supply(call: Call) -> Reply:
    body: SupplyPatch = call.body
    values = await catalog.change_supply(
        call.conn, call.brand.id, call.path["sku"], call.path["ref"], body, call.now
    )
    return Reply(SupplyOut(**values))


async def receive_supply(call: Call) -> Reply:
    body: ReceiveIn = call.body
    values = await catalog.receive_supply(
        call.conn, call.brand.id, call.path["sku"], call.path["ref"], body, call.now
    )
    return Reply(SupplyOut(**values))


async def list_supply(call: Call) -> Reply:
    rows = await catalog.list_supply(call.conn, call.brand.id, call.path["sku"])
    return Reply(SupplyList(data=[SupplyOut(**r) for r in rows]))


async def delete_supply(call: Call) -> Reply:
    await catalog.remove_supply(
        call.conn, call.brand.id, call.path["sku"], call.path["ref"], call.now
    )
    return Reply(None, 204)
