"""The SSRF guard for every outbound HTTP call carehook makes.

A webhook destination, a FHIR server or a vendor API base URL is configuration, and whoever writes
it (or answers a redirect) must not be able to aim carehook at its own network: the cloud
metadata service on 169.254.169.254, an admin port on 127.0.0.1, a database on 10.0.0.5.
:func:`outbound_client` builds an ``httpx.AsyncClient`` whose connections go through
:class:`GuardedBackend`, which, before any socket is opened:

1. resolves the host with the running loop's ``getaddrinfo`` (an IP literal resolves to itself;
   ``2130706433`` or ``0x7f.1`` resolve to 127.0.0.1 and are caught like it);
2. refuses the connection with :class:`OutboundRefused` when any resolved address fails
   :func:`check_address` (unless ``allow_private``);
3. connects to the very address it checked, while TLS still verifies the certificate for, and
   sends SNI with, the URL's host name (httpcore takes both from the request's origin, not from
   the socket), and the ``Host`` header is the URL's.

Step 3 pins the connection, so the classic DNS-rebinding trick (answer a public address to the
check and 127.0.0.1 to the connect) has no second lookup to exploit. Connections are pooled per
origin (scheme, host name, port), so a kept-alive connection keeps the address it was checked
with; a new connection resolves and checks again.

Redirects are never followed (``follow_redirects=False``): a public URL cannot 302 carehook to
an internal one; a 3xx reaches the caller, which treats it as a failure. Environment proxies are
ignored (``trust_env=False``): a proxy would make the checked address the proxy's.

Seam: the backend is installed by replacing the ``_pool`` of an ``httpx.AsyncHTTPTransport``
(httpx offers no public argument for an httpcore network backend). A unit test asserts the
replacement took, so an httpx upgrade that renames it fails loudly rather than silently
unguarded.

    PermanentError
    └── OutboundRefused      the host is, or resolves to, a non-public address
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from carehook.errors import PermanentError, RetryableError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses to check and connect to (:func:`resolve`)
Resolver = Callable[[str, int], Awaitable[list[str]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
_SCHEMES = ("http", "https")
_USER_AGENT = "carehook"


class OutboundRefused(PermanentError):
    """An outbound request was refused: its host is, or resolves to, a non-public address."""

    def __init__(self, host: str, why: str = "resolves to a private or reserved address") -> None:
        super().__init__(f"outbound request to {host!r} refused: {why}")
        self.host = host


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_address(ip: str | IPAddress) -> bool:
    """True when ``ip`` is a public unicast address carehook may connect to.

    False for loopback, private (RFC 1918, unique-local fc00::/7), link-local (169.254/16,
    fe80::/10, the cloud metadata address), multicast, reserved, unspecified, CGNAT (100.64/10)
    and anything else not globally routable; an IPv6 address embedding an IPv4 one (::ffff:a.b.c.d,
    6to4, NAT64) is judged by that IPv4 address. Raises ``ValueError`` when ``ip`` is not an IP.
    """
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return check_address(embedded)
    refused = (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT)
    )
    return not refused and address.is_global


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to for TCP, in the resolver's order, without duplicates.

    Raises ``socket.gaierror`` (an ``OSError``) when it does not resolve.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])  # may carry an IPv6 scope id (fe80::1%eth0): kept to connect
        if address not in addresses:
            addresses.append(address)
    return addresses


def _require_public(host: str, addresses: Iterable[str]) -> None:
    if not all(check_address(address) for address in addresses):
        raise OutboundRefused(host)


async def check_host(host: str, port: int, allow_private: bool) -> None:
    """Refuse ``host`` (:class:`OutboundRefused`) if it is, or resolves to, a non-public address.

    A name that does not resolve raises :class:`RetryableError`. A check, not a pin: whoever
    connects later resolves again.
    """
    if allow_private:
        return
    literal = _literal(host)
    if literal is not None:
        _require_public(host, [str(literal)])
        return
    try:
        addresses = await resolve(host, port)
    except OSError:
        raise RetryableError(f"outbound: cannot resolve {host!r}") from None
    _require_public(host, addresses)


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse ``url`` (:class:`OutboundRefused`) unless it is http(s) to a public host.

    The host is resolved now (:func:`check_host`); the client from :func:`outbound_client`
    checks again, and pins, at connect time.
    """
    parsed = httpx.URL(url)
    host = parsed.host
    if parsed.scheme not in _SCHEMES or not host:
        raise OutboundRefused(host or "<none>", "only http(s) URLs with a host are allowed")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    await check_host(host, port, allow_private)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks and connects to the checked address.

    ``inner`` makes the connections (httpcore's AnyIO backend); ``resolver`` maps a host and
    port to addresses (:func:`resolve`). Tests pass fakes of both.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolver or resolve

    async def _addresses(self, host: str, port: int, limit: float | None) -> list[str]:
        try:
            async with asyncio.timeout(limit):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None
        except OSError:
            raise httpcore.ConnectError(f"cannot resolve {host!r}") from None
        if not self.allow_private:
            _require_public(host, addresses)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, refuse a non-public address, connect to the first that answers."""
        addresses = await self._addresses(host, port, timeout)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address for {host!r}")

    async def connect_unix_socket(
        self,
        path: str,  # noqa: ARG002 (the interface's)
        timeout: float | None = None,  # noqa: ARG002, ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,  # noqa: ARG002
    ) -> httpcore.AsyncNetworkStream:
        """Never: outbound calls are TCP only."""
        raise OutboundRefused("<unix socket>", "unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Sleep as the wrapped backend does (httpcore's retry back-off)."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An ``httpx.AsyncHTTPTransport`` whose connections go through a :class:`GuardedBackend`.

    ``backend`` (tests) replaces the one built from ``allow_private``.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        limits: httpx.Limits | None = None,
        backend: GuardedBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(trust_env=False, limits=limits)
        self.backend = backend or GuardedBackend(allow_private=allow_private)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )


def outbound_client(*, allow_private: bool, timeout: float = 10.0) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for outbound calls: SSRF-guarded, no redirects, no env proxies.

    ``allow_private`` lets it reach loopback and private addresses (a sandbox, an internal
    service): set it only for a destination the operator allowlisted.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": _USER_AGENT},
    )
