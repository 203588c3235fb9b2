"""The Standard Webhooks scheme (Svix and any sender following standardwebhooks.com).

- ``webhook-id``: the message id (also the event id: see :mod:`carehook.vendors.standard_webhooks`);
- ``webhook-timestamp``: unix seconds, within the tolerance in both directions;
- ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries; other versions
  (``v1a`` asymmetric ...) are ignored; any ``v1`` may match.

Signed content: ``"{id}.{timestamp}.{raw body}"``. Key: the base64-decoded part after ``whsec_``
(a secret without the prefix is read as base64 too). Written here rather than wrapping the
``standardwebhooks`` package, which raises ``ValueError`` on malformed headers and reads the clock.
"""

from __future__ import annotations

import base64
import binascii
import re
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
    parse_unix_seconds,
    require_secrets,
    sha256,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_MSG_ID = re.compile(r"[!-~]{1,256}")  # visible ASCII: it is signed and becomes the event id
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def secret_key(secret: str, index: int = 0) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after an optional ``whsec_``."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        if not _BASE64.fullmatch(encoded):
            raise ValueError
        # like the reference library, tolerate missing padding
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if not key:
        raise VerificationError(
            "invalid_secret", f"secret #{index} is not base64 (after an optional whsec_)"
        )
    return key


def _parse_signatures(value: str, name: str) -> list[bytes]:
    signatures: list[bytes] = []
    for entry in value.split():
        version, sep, encoded = entry.partition(",")
        if not sep or not version:
            raise VerificationError("malformed_header", f"header {name} has a malformed entry")
        if version != "v1":
            continue
        try:
            if not _BASE64.fullmatch(encoded):
                raise ValueError
            decoded = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise VerificationError(
                "malformed_header", f"header {name} has a v1 signature that is not base64"
            ) from None
        signatures.append(decoded)
    if not signatures:
        raise VerificationError("malformed_header", f"header {name} holds no v1 signature")
    return signatures


@dataclass(frozen=True, slots=True)
class StandardWebhooksScheme:
    """Standard Webhooks v1 (symmetric) signatures, bound to a source's options."""

    tolerance_seconds: int = 300
    id_header: str = ID_HEADER
    timestamp_header: str = TIMESTAMP_HEADER
    signature_header: str = SIGNATURE_HEADER
    name: str = field(default="standard-webhooks", init=False)

    @classmethod
    def from_options(cls, options: SchemeOptions) -> StandardWebhooksScheme:
        """Build the scheme from a source's options (tolerance, renamed headers)."""
        return cls(
            tolerance_seconds=options.tolerance_seconds,
            id_header=header_name(options, ID_HEADER),
            timestamp_header=header_name(options, TIMESTAMP_HEADER),
            signature_header=header_name(options, SIGNATURE_HEADER),
        )

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Return the index of the first secret that signed ``request``."""
        require_secrets(secrets)
        msg_id = get_header(request, self.id_header)
        timestamp = get_header(request, self.timestamp_header)
        received = _parse_signatures(
            get_header(request, self.signature_header), self.signature_header
        )
        if not _MSG_ID.fullmatch(msg_id):
            raise VerificationError("malformed_header", f"header {self.id_header} is malformed")
        moment = parse_unix_seconds(timestamp, self.timestamp_header)
        check_tolerance(moment, now, self.tolerance_seconds, self.timestamp_header)
        message = f"{msg_id}.{timestamp}.".encode() + request.body
        keys = [secret_key(secret, index) for index, secret in enumerate(secrets)]
        return first_match(
            keys, lambda key: hmac_sha256(key, message), received, self.signature_header
        )

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:
        """The headers a Standard Webhooks sender would send with ``request`` at ``now``.

        The message id is the request's own ``webhook-id`` when it has one, else derived from
        the body (deterministic: re-sending the same body keeps its id, as a sender's retry does).
        """
        timestamp = str(int(now))
        msg_id = request.headers.get(self.id_header) or _derive_id(request.body)
        mac = hmac_sha256(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + request.body)
        return {
            self.id_header: msg_id,
            self.timestamp_header: timestamp,
            self.signature_header: "v1," + base64.b64encode(mac).decode(),
        }


def _derive_id(body: bytes) -> str:
    digest = sha256(body).hex()
    return f"msg_{digest[:26]}"
