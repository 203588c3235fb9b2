"""Nabla Core API's scheme: hex HMAC-SHA256 of the timestamp immediately followed by the body.

Per Nabla's own sample code (VENDORS.md):

- ``x-nabla-webhook-timestamp``: opaque for the HMAC (its exact bytes are signed); for the
  tolerance check it is read as unix seconds or, as older Nabla APIs sent, ISO 8601;
- ``x-nabla-webhook-signature``: comma-separated lowercase hex HMAC-SHA256 values (one per active
  Nabla secret), each trimmed and optionally prefixed ``sha256=``; any one may match.

The message is the timestamp bytes followed by the raw body, with no separator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures import SchemeOptions
from carehook.signatures._common import (
    check_tolerance,
    first_match,
    get_header,
    header_name,
    hmac_sha256,
    parse_hex_signature,
    parse_iso8601,
    parse_unix_seconds,
    require_secrets,
)

TIMESTAMP_HEADER = "x-nabla-webhook-timestamp"
SIGNATURE_HEADER = "x-nabla-webhook-signature"
_PREFIX = "sha256="


def parse_timestamp(value: str, name: str) -> float:
    """Read Nabla's timestamp as unix seconds when all digits, else as ISO 8601."""
    if value.isdigit():
        return parse_unix_seconds(value, name)
    return parse_iso8601(value, name)


def _parse_signatures(value: str, name: str) -> list[bytes]:
    signatures: list[bytes] = []
    for entry in value.split(","):
        entry = entry.strip()
        if entry.lower().startswith(_PREFIX):
            entry = entry[len(_PREFIX) :].strip()
        if entry:
            signatures.append(parse_hex_signature(entry, name))
    if not signatures:
        raise VerificationError("malformed_header", f"header {name} holds no signature")
    return signatures


@dataclass(frozen=True, slots=True)
class NablaScheme:
    """Nabla's timestamp-plus-body hex HMAC-SHA256, bound to a source's options."""

    tolerance_seconds: int = 300
    timestamp_header: str = TIMESTAMP_HEADER
    signature_header: str = SIGNATURE_HEADER
    name: str = field(default="nabla", init=False)

    @classmethod
    def from_options(cls, options: SchemeOptions) -> NablaScheme:
        """Build the scheme from a source's options (tolerance, renamed headers)."""
        return cls(
            tolerance_seconds=options.tolerance_seconds,
            timestamp_header=header_name(options, TIMESTAMP_HEADER),
            signature_header=header_name(options, SIGNATURE_HEADER),
        )

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Return the index of the first secret that signed ``request``."""
        require_secrets(secrets)
        timestamp = get_header(request, self.timestamp_header)
        received = _parse_signatures(
            get_header(request, self.signature_header), self.signature_header
        )
        moment = parse_timestamp(timestamp, self.timestamp_header)
        check_tolerance(moment, now, self.tolerance_seconds, self.timestamp_header)
        message = timestamp.encode() + request.body
        return first_match(
            secrets,
            lambda secret: hmac_sha256(secret.encode(), message),
            received,
            self.signature_header,
        )

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:
        """The headers Nabla would send with ``request`` at ``now`` (unix-seconds form)."""
        timestamp = str(int(now))
        mac = hmac_sha256(secret.encode(), timestamp.encode() + request.body)
        return {self.timestamp_header: timestamp, self.signature_header: mac.hex()}
