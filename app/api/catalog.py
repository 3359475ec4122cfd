"""SKU stock and inbound supply endpoints."""

from __future__ import annotations

from app.api.endpoint import Call, Reply
from app.api.models import SkuIn, SkuOut, SupplyIn, SupplyList, SupplyOut
from app.storage import catalog


async def put_sku(call: Call) -> Reply:
    body: SkuIn = call.body
    values, created = await catalog.put_sku(
        call.conn, call.brand.id, call.path["sku"], body, call.now
    )
    return Reply(SkuOut(**values), 201 if created else 200)


async def get_sku(call: Call) -> Reply:
    row = await catalog.get_sku(call.conn, call.brand.id, call.path["sku"])
    return Reply(SkuOut(**{name: row[name] for name in SkuOut.model_fields}))


async def add_supply(call: Call) -> Reply:
    body: SupplyIn = call.body
    values = await catalog.add_supply(call.conn, call.brand.id, call.path["sku"], body, call.now)
    return Reply(SupplyOut(**values), 201)


async def list_supply(call: Call) -> Reply:
    rows = await catalog.list_supply(call.conn, call.brand.id, call.path["sku"])
    return Reply(SupplyList(data=[SupplyOut(**r) for r in rows]))


async def delete_supply(call: Call) -> Reply:
    await catalog.remove_supply(
        call.conn, call.brand.id, call.path["sku"], call.path["ref"], call.now
    )
    return Reply(None, 204)
