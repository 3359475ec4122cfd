"""A DNS server that changes its answer (DNS rebinding), on the running event loop's resolver.

    asked = rebinding_dns(monkeypatch, "hooks.brand.example", "93.184.216.34", "127.0.0.1")

The first lookup of the name hears `first`, every later one `then`, as from a hostile server
with a tiny TTL; other names go to the real resolver. asyncio, and so httpx's connections
(through anyio), resolve with `loop.getaddrinfo`.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest


def rebinding_dns(monkeypatch: pytest.MonkeyPatch, name: str, first: str, then: str) -> list[str]:
    """Answer `first` for `name` once, `then` afterwards; return the list of its lookups."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    asked: list[str] = []

    async def getaddrinfo(host: str | bytes | None, port: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else host
        if text != name:
            return await real(host, port, *args, **kwargs)
        asked.append(text)
        address = first if len(asked) == 1 else then
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked
