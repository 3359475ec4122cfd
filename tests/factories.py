"""Payload builders for tests: realistic orders with a few knobs."""

from __future__ import annotations

from typing import Any


def order_payload(number: str = "1001", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "number": number,
        "placed_at": "2026-11-01T10:00:00Z",
        "currency": "USD",
        "customer": {
            "email": "ada@example.com",
            "phone": "+14155550123",
            "locale": "en-US",
            "timezone": "America/Los_Angeles",
            "sms_consent": True,
        },
        "shipping": {"region": "US-CA", "city": "Oakland", "postal_code": "94607"},
        "lines": [
            {"ref": "1", "sku": "MUG-BLUE", "title": "Blue mug", "quantity": 2, "unit_price": 1800},
            {
                "ref": "2",
                "sku": "LAMP-OAK",
                "title": "Oak lamp",
                "quantity": 1,
                "unit_price": 12900,
                "status": "backordered",
                "backorder_type": "standard",
            },
        ],
    }
    payload.update(overrides)
    return payload


def shipment_payload(ref: str = "P1", **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ref": ref,
        "carrier": "ups",
        "tracking_number": "1Z999AA10123456784",
        "status": "in_transit",
        "promised_date": "2026-11-05",
        "lines": [{"line": "1", "quantity": 2}],
    }
    payload.update(overrides)
    return payload
