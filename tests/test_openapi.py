import pytest
from starlette.routing import Route

from app.api.routes import ENDPOINTS, PREFIX
from app.main import create_app

pytestmark = pytest.mark.anyio


async def test_document_describes_every_api_route_and_nothing_else(settings, client):
    document = (await client.get(f"{PREFIX}/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    routed = {
        (route.path, method.lower())
        for route in create_app(settings).routes
        if isinstance(route, Route)
        and route.path.startswith(PREFIX)
        and route.path != f"{PREFIX}/openapi.json"
        for method in (route.methods or set()) - {"HEAD"}
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routed == documented
    assert len(documented) == len(ENDPOINTS)


async def test_every_schema_reference_resolves(client):
    document = (await client.get(f"{PREFIX}/openapi.json")).json()
    schemas = document["components"]["schemas"]
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


async def test_request_bodies_come_from_the_handlers_models(client):
    document = (await client.get(f"{PREFIX}/openapi.json")).json()
    order = document["components"]["schemas"]["OrderIn"]
    assert order["additionalProperties"] is False
    assert set(order["required"]) == {"number", "placed_at", "currency", "customer", "lines"}
    upsert = document["paths"][f"{PREFIX}/orders"]["post"]
    assert upsert["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderIn"
    }
    assert "422" in upsert["responses"]
    assert any(p["name"] == "Idempotency-Key" for p in upsert["parameters"])
