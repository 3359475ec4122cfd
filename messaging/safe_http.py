"""Keep outgoing requests to URLs that others choose on public addresses (against SSRF).

A brand registers the URL its webhooks go to; it must not use it to reach this machine or its
network: loopback, private, link-local and reserved addresses, cloud metadata services, and
the IPv6 spellings of all of them (`is_public_address`). Three checks, cheapest first:

- `blocked_host` judges what a URL's host says literally (an address, or `localhost`);
- `check_public` resolves a name and refuses it when any address it stands for is not public,
  so that no connection is even tried;
- `refuse_private_peer`, an httpcore `trace` callback (`extensions={"trace": ...}` on an httpx
  request), checks the address each new connection reached, and closes it unless public
  before a byte is sent on it (the TLS handshake included). httpx resolves the name again to
  connect, and a DNS server that answers a public address to the check and an inside one to
  the connection (DNS rebinding) is caught here: the address checked is the one connected to.

A connection the client keeps alive was checked when it was opened, by the request that opened
it: requests sharing a client must all carry the callback. Through an HTTP proxy the check
applies to the proxy's address (the proxy resolves the destination itself), so a proxy on a
private address is refused too.

Errors: `PrivateAddressError` (a refusal); a name that does not resolve raises what
`getaddrinfo` raises (`OSError`, or `UnicodeError` for a name that cannot be encoded).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Non-public blocks that `is_global` lets through on Python 3.11: IPv4-compatible IPv6 (::/96,
# deprecated) and site-local IPv6 (fec0::/10, deprecated). Multicast is checked apart.
_NOT_PUBLIC = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("fec0::/10"))
# NAT64's well-known prefix carries an IPv4 address that a translator on the path would reach.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class PrivateAddressError(Exception):
    """A destination is not a public address; the message says why, not what it resolved to."""


def is_public_address(address: IPAddress) -> bool:
    """Tell whether an address is globally reachable: not loopback, private, link-local, etc.

    An IPv6 address that embeds an IPv4 one (IPv4-mapped, 6to4, NAT64) is public only if the
    IPv4 address is too, so `::ffff:127.0.0.1` and `64:ff9b::a9fe:a9fe` stay refused.
    """
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return True
    if any(address in network for network in _NOT_PUBLIC):
        return False
    embedded = address.ipv4_mapped or address.sixtofour
    if embedded is None and address in _NAT64:
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return embedded is None or is_public_address(embedded)


def literal_address(host: str) -> IPAddress | None:
    """Return the address a URL's host spells out, or None when it is a name to resolve.

    Besides the usual forms this reads the legacy IPv4 spellings resolvers accept (`127.1`,
    `0x7f.0.0.1`, `2130706433`), which would otherwise pass for names.
    """
    bare = host.strip("[]").partition("%")[0].rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not bare or any(not (ch.isalnum() or ch == ".") for ch in bare):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _local_name(host: str) -> bool:
    # RFC 6761: localhost and every name under it are this machine, whatever DNS says.
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def blocked_host(host: str) -> str | None:
    """Say why a URL's host is not a public address, or None when it may be one.

    Only what the host says literally is judged here (an address, or `localhost`); a name that
    resolves to a private address is caught by `check_public` and `refuse_private_peer`.
    """
    if _local_name(host):
        return f"{host} is this machine (loopback)"
    address = literal_address(host)
    if address is not None and not is_public_address(address):
        return f"{address} is not a public address (loopback, private, link-local or reserved)"
    return None


def _socket_address(text: str) -> IPAddress:
    # A link-local IPv6 address carries its zone (`fe80::1%eth0`); the zone is not the address.
    return ipaddress.ip_address(text.partition("%")[0])


async def check_public(url: httpx.URL) -> None:
    """Raise PrivateAddressError unless every address the URL's host stands for is public."""
    host = url.raw_host.decode("ascii")
    why = blocked_host(host)
    if why is not None:
        raise PrivateAddressError(why)
    if literal_address(host) is not None:
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in found:
        if not is_public_address(_socket_address(str(sockaddr[0]))):
            raise PrivateAddressError(f"{host} resolves to a non-public address")


async def refuse_private_peer(event: str, info: Mapping[str, Any]) -> None:
    """Close a new connection, and raise PrivateAddressError, unless its peer is public.

    An httpcore trace callback: it acts once the TCP connection is up, before TLS or HTTP.
    """
    if event != "connection.connect_tcp.complete":
        return
    stream = info["return_value"]
    try:
        public = is_public_address(_socket_address(str(stream.get_extra_info("server_addr")[0])))
    except (TypeError, ValueError):  # no peer address (not a TCP socket), or not an IP one
        public = False
    if public:
        return
    await stream.aclose()
    raise PrivateAddressError("the connection reached a non-public address")
