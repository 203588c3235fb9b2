"""Healthie's scheme: RFC 9421 header names, but a recipe of Healthie's own (VENDORS.md).

Healthie's verification sample and a production integration sign this way:

1. ``digest`` = the ``Content-Digest`` value after its first ``=``, verbatim; it must equal
   base64(sha256(raw body)), with or without RFC 9530 ``:`` delimiters (``digest_mismatch``);
2. ``data = f"{method.lower()} {path} {query} {digest} application/json {len(body)}"`` where
   ``path`` is the path registered with Healthie (the source's public path) and ``query`` the
   query string without ``?`` (empty: two spaces in a row);
3. ``Signature: sig1=<lowercase hex HMAC-SHA256(key = UTF-8 secret, data)>``;
4. ``Signature-Input`` must be present; its content is undocumented and not interpreted.

Nothing time-based is signed, so there is no tolerance check: replay protection is
de-duplication plus the IP allowlist.

When the ``Signature`` value is a byte sequence (``sig1=:<base64>:``) the request is verified as
genuine RFC 9421 instead (:mod:`carehook.signatures.rfc9421`): the signature must cover
``content-digest`` and ``created`` must be within the tolerance.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures import SchemeOptions
from carehook.signatures._common import (
    first_match,
    get_header,
    header_name,
    hmac_sha256,
    parse_hex_signature,
    require_secrets,
    sha256,
)
from carehook.signatures.rfc9421 import secret_key, verify_message_signature

DIGEST_HEADER = "content-digest"
INPUT_HEADER = "signature-input"
SIGNATURE_HEADER = "signature"
_LABEL = re.compile(r"[a-z*][a-z0-9_.*-]{0,63}")
#: what Healthie's Signature-Input names (undocumented; sent by ``sign`` for realism only)
SIGNATURE_INPUT = (
    'sig1=("@method" "@path" "@query" "content-digest" "content-type" "content-length")'
)


def content_digest(body: bytes) -> str:
    """base64(sha256(body)), the value Healthie puts after ``sha-256=``."""
    return base64.b64encode(sha256(body)).decode()


def signed_data(request: SignedRequest, digest: str) -> bytes:
    """Healthie's signed string for ``request`` (``digest`` verbatim from Content-Digest)."""
    method = request.method.lower()
    data = f"{method} {request.path} {request.query} {digest} application/json {len(request.body)}"
    return data.encode()


def _members(value: str, name: str) -> list[tuple[str, str]]:
    members: list[tuple[str, str]] = []
    for item in value.split(","):
        label, sep, member = item.strip().partition("=")
        if not sep or not _LABEL.fullmatch(label) or not member.strip():
            raise VerificationError("malformed_header", f"header {name} has a malformed entry")
        members.append((label, member.strip()))
    return members


@dataclass(frozen=True, slots=True)
class HealthieScheme:
    """Healthie's Content-Digest + hex HMAC recipe, and genuine RFC 9421 hmac-sha256."""

    tolerance_seconds: int = 300
    digest_header: str = DIGEST_HEADER
    input_header: str = INPUT_HEADER
    signature_header: str = SIGNATURE_HEADER
    name: str = field(default="healthie", init=False)

    @classmethod
    def from_options(cls, options: SchemeOptions) -> HealthieScheme:
        """Build the scheme from a source's options (tolerance for RFC 9421, header names)."""
        return cls(
            tolerance_seconds=options.tolerance_seconds,
            digest_header=header_name(options, DIGEST_HEADER),
            input_header=header_name(options, INPUT_HEADER),
            signature_header=header_name(options, SIGNATURE_HEADER),
        )

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Return the index of the first secret that signed ``request``."""
        require_secrets(secrets)
        members = _members(get_header(request, self.signature_header), self.signature_header)
        get_header(request, self.input_header)
        get_header(request, self.digest_header)  # both forms: a webhook's body must be digested
        if any(member.startswith(":") for _, member in members):
            return self._verify_rfc9421(request, secrets, now)
        received = [parse_hex_signature(member, self.signature_header) for _, member in members]
        data = signed_data(request, self._checked_digest(request))
        return first_match(
            secrets,
            lambda secret: hmac_sha256(secret.encode(), data),
            received,
            self.signature_header,
        )

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:  # noqa: ARG002
        """The headers Healthie would send with ``request`` (``now`` is not signed)."""
        digest = content_digest(request.body)
        mac = hmac_sha256(secret.encode(), signed_data(request, digest))
        return {
            self.digest_header: f"sha-256={digest}",
            self.input_header: SIGNATURE_INPUT,
            self.signature_header: f"sig1={mac.hex()}",
        }

    def _checked_digest(self, request: SignedRequest) -> str:
        """The verbatim digest of Content-Digest, once checked against the body."""
        value = get_header(request, self.digest_header)
        algorithm, sep, digest = value.partition("=")
        if not sep or algorithm.strip().lower() != "sha-256":
            raise VerificationError(
                "malformed_header", f"header {self.digest_header} is not a sha-256 digest"
            )
        expected = content_digest(request.body)
        if not (
            hmac.compare_digest(digest, expected) or hmac.compare_digest(digest, f":{expected}:")
        ):
            raise VerificationError(
                "digest_mismatch", f"header {self.digest_header} does not match the body"
            )
        return digest

    def _verify_rfc9421(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        keys = [secret_key(secret) for secret in secrets]
        index, _ = verify_message_signature(request, keys, now, self.tolerance_seconds)
        return index
