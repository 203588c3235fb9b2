"""Sources at run time: a configured endpoint bound to its vendor, scheme and resolved secrets.

Pure apart from reading ``env:`` secrets from the environment while building. Also the pure rule
for the client address behind trusted proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from carehook.errors import ConfigError
from carehook.settings import IPNetwork, Settings, SourceSettings, resolve_secret
from carehook.signatures import Scheme, SchemeOptions
from carehook.vendors import Vendor


@dataclass(frozen=True, slots=True)
class Source:
    """One live endpoint ``/webhooks/<name>``."""

    name: str
    vendor: Vendor
    scheme: Scheme
    secrets: tuple[str, ...] = field(repr=False)
    #: each secret's id (``SourceSettings.secret_ids``): what the store records, not a position
    secret_ids: tuple[int, ...]
    allow_ips: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    max_body_bytes: int
    public_path: str
    retention_days: int

    def address_allowed(self, address: str) -> bool:
        """True when no allowlist is set or ``address`` is inside it."""
        if not self.allow_ips:
            return True
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.allow_ips)


def build_source(name: str, cfg: SourceSettings, vendors: Mapping[str, Vendor]) -> Source:
    """Bind a source's settings to its vendor and resolve its secrets."""
    vendor = vendors[cfg.vendor]
    options = SchemeOptions(
        tolerance_seconds=cfg.tolerance_seconds,
        allow_bare=cfg.allow_bare_signature,
        headers={k.lower(): v.lower() for k, v in cfg.signature_headers.items()},
        template=cfg.signature_template,
    )
    secrets = tuple(
        resolve_secret(s, f"sources.{name}.secrets[{i}]") for i, s in enumerate(cfg.secrets)
    )
    public_path = cfg.public_path or f"/webhooks/{name}"
    if not public_path.startswith("/"):
        raise ConfigError(f"sources.{name}.public_path must start with '/'")
    return Source(
        name=name,
        vendor=vendor,
        scheme=vendor.scheme(options),
        secrets=secrets,
        secret_ids=tuple(cfg.ids()),
        allow_ips=tuple(cfg.allow_ips),
        trusted_proxies=tuple(cfg.trusted_proxies),
        max_body_bytes=cfg.max_body_bytes,
        public_path=public_path,
        retention_days=cfg.retention_days,
    )


def build_sources(settings: Settings, vendors: Mapping[str, Vendor]) -> dict[str, Source]:
    """Every configured source by name."""
    return {name: build_source(name, cfg, vendors) for name, cfg in settings.sources.items()}


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy.

    Behind trusted proxies, ``X-Forwarded-For`` is read right to left and the first address
    that is not itself a trusted proxy is the client; a malformed entry stops the walk there
    (it is returned as is and fails any allowlist).
    """
    if not trusted or not _trusted(peer, trusted) or not forwarded_for:
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in trusted)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
