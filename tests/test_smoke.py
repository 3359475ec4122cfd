import pytest

from tests.factories import order_payload

pytestmark = pytest.mark.anyio


async def test_create_and_read_order(client, brand):
    created = await client.post("/api/v1/orders", json=order_payload(), headers=brand.headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["number"] == "1001"
    assert body["version"] == 1
    got = await client.get("/api/v1/orders/1001", headers=brand.headers)
    assert got.status_code == 200
    assert got.json() == body
