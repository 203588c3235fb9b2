"""Abridge's scheme: hex HMAC-SHA256 of ``"{timestamp}.{raw body}"`` with a unix timestamp.

No public Abridge specification exists; this follows the brief exactly (VENDORS.md) and keeps
the header names and the signed template configurable per source:

- ``x-abridge-timestamp``: unix seconds, within ``tolerance_seconds`` of now in both directions;
- ``x-abridge-signature``: lowercase hex HMAC-SHA256, key = the secret's UTF-8 bytes.

A template (``SchemeOptions.template``) uses ``{timestamp}`` and ``{body}``; it is rendered on
bytes, so the raw body is never decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from carehook.envelope import SignedRequest
from carehook.signatures import SchemeOptions
from carehook.signatures._common import (
    check_tolerance,
    compile_template,
    first_match,
    get_header,
    header_name,
    hmac_sha256,
    parse_hex_signature,
    parse_unix_seconds,
    render_template,
    require_secrets,
)

TIMESTAMP_HEADER = "x-abridge-timestamp"
SIGNATURE_HEADER = "x-abridge-signature"
DEFAULT_TEMPLATE = "{timestamp}.{body}"


@dataclass(frozen=True, slots=True)
class AbridgeScheme:
    """Abridge's timestamped hex HMAC-SHA256, bound to a source's options."""

    tolerance_seconds: int = 300
    timestamp_header: str = TIMESTAMP_HEADER
    signature_header: str = SIGNATURE_HEADER
    template: tuple[str, ...] = compile_template(DEFAULT_TEMPLATE, ("timestamp", "body"))
    name: str = field(default="abridge", init=False)

    @classmethod
    def from_options(cls, options: SchemeOptions) -> AbridgeScheme:
        """Build the scheme from a source's options (renamed headers, template, tolerance)."""
        return cls(
            tolerance_seconds=options.tolerance_seconds,
            timestamp_header=header_name(options, TIMESTAMP_HEADER),
            signature_header=header_name(options, SIGNATURE_HEADER),
            template=compile_template(options.template or DEFAULT_TEMPLATE, ("timestamp", "body")),
        )

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Return the index of the first secret that signed ``request``."""
        require_secrets(secrets)
        timestamp = get_header(request, self.timestamp_header)
        signature = get_header(request, self.signature_header)
        received = parse_hex_signature(signature, self.signature_header)
        check_tolerance(
            parse_unix_seconds(timestamp, self.timestamp_header),
            now,
            self.tolerance_seconds,
            self.timestamp_header,
        )
        message = self._signed_content(timestamp, request.body)
        return first_match(
            secrets,
            lambda secret: hmac_sha256(secret.encode(), message),
            [received],
            self.signature_header,
        )

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:
        """The headers Abridge would send with ``request`` at ``now``."""
        timestamp = str(int(now))
        mac = hmac_sha256(secret.encode(), self._signed_content(timestamp, request.body))
        return {self.timestamp_header: timestamp, self.signature_header: mac.hex()}

    def _signed_content(self, timestamp: str, body: bytes) -> bytes:
        return render_template(self.template, {"timestamp": timestamp.encode(), "body": body})
