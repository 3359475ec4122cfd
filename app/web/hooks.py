"""Placeholder: filled in by the messaging work."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """Return this module's routes."""
    return []
