"""Keep outgoing requests to URLs that others choose on public addresses (against SSRF).

A brand registers the URL its webhooks go to; it must not use it to reach this machine or its
network: loopback, private, link-local and reserved addresses, cloud metadata services, and
the IPv6 spellings of all of them (`is_public_address`). Four checks, cheapest first:

- `blocked_host` judges what a URL's host says literally (an address, or `localhost`);
- `check_public` resolves a name and refuses it when any address it stands for is not public,
  so that no connection is even tried;
- `public_only_transport` connects only to addresses it resolved and vetted itself (an
  httpcore network backend): under DNS rebinding no connection to an inside address is even
  opened, so nothing, not even whether a port is open, can be learnt from one. The dispatcher's
  webhook client uses it;
- `refuse_private_peer`, an httpcore `trace` callback (`extensions={"trace": ...}` on an httpx
  request), checks the address each new connection reached, and closes it unless public
  before a byte is sent on it (the TLS handshake included), whatever client the request goes
  through: a client on httpx's own transport resolves the name again to connect, and a DNS
  server that answers a public address to the check and an inside one to the connection (DNS
  rebinding) is caught here, the connection opened but nothing sent.

A connection the client keeps alive was checked when it was opened, by the request that opened
it: requests sharing a client must all carry the callback. The transport uses no proxy (a proxy
resolves the destination itself, out of sight); through a proxy on another client, the callback
checks the proxy's address, so a proxy on a private address is refused.

Errors: `PrivateAddressError` (a refusal); a name that does not resolve raises what
`getaddrinfo` raises (`OSError`, or `UnicodeError` for a name that cannot be encoded); the
transport raises `PrivateAddressError` too, and httpcore's ConnectError for a name that does
not resolve.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpcore
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


Resolve = Callable[[str, int], Awaitable[list[Any]]]
Permitted = Callable[[IPAddress], bool]


async def _resolve(host: str, port: int) -> list[Any]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


class _PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Open TCP connections only to public addresses, resolving each name once, here.

    The address checked is the address connected to; TLS still verifies, and names in SNI,
    the host the URL names (httpcore passes it to start_tls, not the address connected to).
    """

    def __init__(self, resolve: Resolve, permitted: Permitted) -> None:
        self._resolve = resolve
        self._permitted = permitted
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = literal_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                found = await self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
            addresses = list(dict.fromkeys(_socket_address(str(a[0])) for *_, a in found))
        if not addresses or not all(self._permitted(address) for address in addresses):
            raise PrivateAddressError(f"{host} resolves to a non-public address")
        failure: Exception | None = None
        for address in addresses:  # as the resolver ordered them, as a plain connect would
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise PrivateAddressError("a Unix socket is this machine")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that opens connections to public addresses
    only. No proxy: a proxy would resolve the destination itself, out of our sight."""

    def __init__(self, keepalive_expiry: float, resolve: Resolve, permitted: Permitted) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            keepalive_expiry=keepalive_expiry,
            network_backend=_PublicOnlyBackend(resolve, permitted),
        )


def public_only_transport(
    keepalive_expiry: float = 5.0,
    resolve: Resolve = _resolve,
    permitted: Permitted = is_public_address,
) -> httpx.AsyncHTTPTransport:
    """Return an httpx transport that connects to public addresses only (see the module).

    `resolve(host, port)` answers as `loop.getaddrinfo` does, and `permitted` says which
    addresses may be connected to: tests pass their own, to reach a server on loopback.
    """
    return _PublicOnlyTransport(keepalive_expiry, resolve, permitted)
