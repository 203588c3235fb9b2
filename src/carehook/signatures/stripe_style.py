"""OpenEvidence's scheme: Stripe-style ``t=<unix>,v1=<hex>``, or a bare hex HMAC of the body.

Two revisions of the OpenEvidence brief disagree (VENDORS.md); one source accepts both:

- ``x-openevidence-signature: t=<unix>,v1=<hex>[,v1=<hex>...]``: HMAC-SHA256 hex of
  ``"{t}.{raw body}"`` (key = UTF-8 secret). Any ``v1`` entry may match (the sender signs with
  each active secret); other schemes (``v0=``) are ignored; ``t`` must be within the tolerance.
- ``x-openevidence-signature: <hex>``: HMAC-SHA256 hex of the raw body alone. Nothing time-based
  is signed, so replays are stopped only by de-duplication: ``SchemeOptions.allow_bare = False``
  refuses this form (``bare_signature_refused``).
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
    parse_unix_seconds,
    require_secrets,
)

SIGNATURE_HEADER = "x-openevidence-signature"


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A parsed Stripe-style header: its timestamp text and every ``v1`` signature."""

    timestamp: str
    signatures: tuple[bytes, ...]


def _parse_pairs(value: str, name: str) -> _Parsed:
    timestamp: str | None = None
    signatures: list[bytes] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        key, val = key.strip(), val.strip()
        if not sep or not key or not val:
            raise VerificationError("malformed_header", f"header {name} has a malformed entry")
        if key == "t":
            if timestamp is not None:
                raise VerificationError("malformed_header", f"header {name} has two t= entries")
            timestamp = val
        elif key == "v1":
            signatures.append(parse_hex_signature(val, name))
    if timestamp is None:
        raise VerificationError("malformed_header", f"header {name} has no t= entry")
    if not signatures:
        raise VerificationError("malformed_header", f"header {name} has no v1= signature")
    return _Parsed(timestamp, tuple(signatures))


def sign_bare(body: bytes, secret: str) -> str:
    """The bare form's header value (seed 003): hex HMAC-SHA256 of the raw body alone."""
    return hmac_sha256(secret.encode(), body).hex()


@dataclass(frozen=True, slots=True)
class StripeStyleScheme:
    """Stripe-style timestamped signatures, plus OpenEvidence's bare-hex form when allowed."""

    tolerance_seconds: int = 300
    allow_bare: bool = True
    signature_header: str = SIGNATURE_HEADER
    name: str = field(default="stripe-style", init=False)

    @classmethod
    def from_options(cls, options: SchemeOptions) -> StripeStyleScheme:
        """Build the scheme from a source's options (tolerance, bare form, header name)."""
        return cls(
            tolerance_seconds=options.tolerance_seconds,
            allow_bare=options.allow_bare,
            signature_header=header_name(options, SIGNATURE_HEADER),
        )

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Return the index of the first secret that signed ``request``."""
        require_secrets(secrets)
        value = get_header(request, self.signature_header)
        if "=" not in value and "," not in value:
            return self._verify_bare(value, request.body, secrets)
        parsed = _parse_pairs(value, self.signature_header)
        timestamp = parse_unix_seconds(parsed.timestamp, f"{self.signature_header} t=")
        check_tolerance(timestamp, now, self.tolerance_seconds, f"{self.signature_header} t=")
        message = parsed.timestamp.encode() + b"." + request.body
        return first_match(
            secrets,
            lambda secret: hmac_sha256(secret.encode(), message),
            parsed.signatures,
            f"{self.signature_header} v1=",
        )

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:
        """The header a Stripe-style sender would send with ``request`` at ``now``."""
        timestamp = str(int(now))
        mac = hmac_sha256(secret.encode(), timestamp.encode() + b"." + request.body)
        return {self.signature_header: f"t={timestamp},v1={mac.hex()}"}

    def _verify_bare(self, value: str, body: bytes, secrets: Sequence[str]) -> int:
        received = parse_hex_signature(value, self.signature_header)
        if not self.allow_bare:
            raise VerificationError(
                "bare_signature_refused",
                f"header {self.signature_header} has no timestamp and this source refuses that",
            )
        return first_match(
            secrets,
            lambda secret: hmac_sha256(secret.encode(), body),
            [received],
            self.signature_header,
        )
