"""The OpenAPI 3.1 document, generated from the endpoint declarations and their models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.endpoint import Endpoint
from app.api.models import ProblemOut
from app.api.problems import PROBLEM_TYPES

_REASONS = {
    400: "Malformed request (invalid JSON, bad parameter)",
    401: "Missing, unknown, malformed or revoked API key",
    404: "No such resource for this brand",
    409: "Conflicts with the current state",
    413: "Body over the size limit",
    415: "Body is not JSON",
    422: "Invalid fields, each with its path",
    500: "Internal error",
}
_PARAM = re.compile(r"{(\w+)}")


def build_document(endpoints: tuple[Endpoint, ...], prefix: str, version: str) -> dict[str, Any]:
    """Describe every endpoint, its body, responses and errors."""
    bodies = {e.body for e in endpoints if e.body is not None}
    responses = {e.response for e in endpoints if e.response is not None} | {ProblemOut}
    _, schemas = models_json_schema(
        [(m, "validation") for m in sorted(bodies, key=lambda m: m.__name__)]
        + [(m, "serialization") for m in sorted(responses, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PARAM.findall(endpoint.path)
            ]
            + [
                {
                    "name": q.name,
                    "in": "query",
                    "required": False,
                    "description": q.description,
                    "schema": q.schema,
                }
                for q in endpoint.query
            ],
            "responses": {},
        }
        if endpoint.method == "POST":
            operation["parameters"].append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Replays the first successful response for the same request",
                    "schema": {"type": "string", "maxLength": 255},
                }
            )
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(endpoint.body)}},
            }
        success: dict[str, Any] = {"description": "OK"}
        if endpoint.response is not None:
            success["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
        operation["responses"][str(endpoint.status)] = success
        if endpoint.status == 201:
            operation["responses"]["200"] = dict(success, description="Updated")
        for status in sorted({401, *endpoint.errors}):
            operation["responses"][str(status)] = {
                "description": _REASONS[status],
                "content": {"application/problem+json": {"schema": _ref(ProblemOut)}},
            }
        paths.setdefault(prefix + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Whereabouts merchant API",
            "version": version,
            "description": "Brands push orders, parcels, checkpoints, stock and inbound supply. "
            "Errors are RFC 9457 problem+json; stable types: "
            + ", ".join(f"`/problems/{code}`" for code in PROBLEM_TYPES),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}
