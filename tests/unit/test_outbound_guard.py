"""The SSRF guard: which addresses are refused, and that the client pins what it checked.

Public addresses are only ever judged by the pure :func:`check_address` or handed to a fake
network backend: no test here opens a socket to anything but nothing at all (a refused request
never connects), so none can reach the internet.
"""

from __future__ import annotations

import httpcore
import httpx
import pytest

from carehook.connectors.outbound import (
    GuardedBackend,
    GuardedTransport,
    OutboundRefused,
    check_address,
    check_host,
    check_url,
    outbound_client,
)
from carehook.errors import PermanentError

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "fd00::1",
    "fe80::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",  # documentation range: not globally routable
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001::1", "::ffff:8.8.8.8"]

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RecordingBackend(httpcore.AsyncMockBackend):
    """A fake network: records where it was asked to connect and answers 200 without a socket."""

    def __init__(self) -> None:
        super().__init__([_OK])
        self.connected: list[str] = []

    async def connect_tcp(
        self, host: str, port: int, *args: object, **kwargs: object
    ) -> httpcore.AsyncNetworkStream:
        """Record ``host`` and hand back the canned stream."""
        self.connected.append(host)
        return await super().connect_tcp(host, port)


class FixedResolver:
    """A resolver answering the same addresses for any host, recording the hosts asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        """The fixed addresses."""
        self.asked.append(host)
        return self.addresses


def guarded_client(backend: GuardedBackend) -> httpx.AsyncClient:
    """A client on the guarded transport with ``backend``."""
    return httpx.AsyncClient(transport=GuardedTransport(allow_private=False, backend=backend))


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    """Loopback, private, link-local, CGNAT, ULA, mapped, multicast, reserved are refused."""
    assert check_address(address) is False


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    """Globally routable unicast addresses pass."""
    assert check_address(address) is True


def test_check_address_rejects_non_addresses() -> None:
    """A host name is not an address: ValueError, not a silent pass."""
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        check_address("example.com")


def test_refusal_is_a_permanent_error_naming_the_host_only() -> None:
    """OutboundRefused is a PermanentError whose message names the host and not the URL."""
    error = OutboundRefused("internal.example")
    assert isinstance(error, PermanentError)
    assert "internal.example" in str(error)
    assert error.host == "internal.example"


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    """``localhost`` is refused after resolution (no DNS beyond /etc/hosts)."""
    with pytest.raises(OutboundRefused, match="'localhost'"):
        await check_host("localhost", 80, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]:8080/x",
        "https://localhost/x?secret=1",
        "http://2130706433/",
    ],
)
async def test_check_url_refuses_loopback_forms(url: str) -> None:
    """IP literals, bracketed IPv6, localhost and the decimal form of 127.0.0.1 are refused."""
    with pytest.raises(OutboundRefused) as caught:
        await check_url(url, allow_private=False)
    assert "secret" not in str(caught.value)


async def test_check_url_refuses_other_schemes() -> None:
    """Only http(s) is allowed, even with allow_private."""
    with pytest.raises(OutboundRefused, match="only http"):
        await check_url("file:///etc/passwd", allow_private=True)


async def test_check_url_allows_private_when_asked() -> None:
    """allow_private skips the address check."""
    await check_url("http://127.0.0.1:9/", allow_private=True)


async def test_client_refuses_loopback_before_connecting() -> None:
    """outbound_client's transport raises OutboundRefused, not a connection error, for loopback."""
    async with outbound_client(allow_private=False, timeout=2) as client:
        with pytest.raises(OutboundRefused, match=r"'127\.0\.0\.1'"):
            await client.get("http://127.0.0.1:1/")


async def test_connection_is_pinned_to_the_checked_address() -> None:
    """The socket goes to the address that was checked, not to a second lookup of the name."""
    network = RecordingBackend()
    resolver = FixedResolver("93.184.216.34")
    backend = GuardedBackend(allow_private=False, inner=network, resolver=resolver)
    async with guarded_client(backend) as client:
        response = await client.get("http://rebind.example/path")
    assert response.status_code == 200
    assert response.request.headers["host"] == "rebind.example"
    assert resolver.asked == ["rebind.example"]
    assert network.connected == ["93.184.216.34"]


async def test_any_private_answer_refuses_the_host() -> None:
    """A name resolving to one public and one private address is refused, nothing connects."""
    network = RecordingBackend()
    resolver = FixedResolver("93.184.216.34", "10.0.0.7")
    backend = GuardedBackend(allow_private=False, inner=network, resolver=resolver)
    async with guarded_client(backend) as client:
        with pytest.raises(OutboundRefused, match=r"'rebind\.example'"):
            await client.get("http://rebind.example/")
    assert network.connected == []
