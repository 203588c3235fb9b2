"""Genuine RFC 9421 HTTP Message Signatures (``hmac-sha256``), on the ``http-message-signatures``
package.

The package resolves covered components from a request-like object and checks the signature;
this module adapts :class:`~carehook.envelope.SignedRequest` to it, injects ``now`` (the package
would read the clock), enforces the source's tolerance on ``created`` in both directions, and
wraps every exception the package raises into :class:`~carehook.errors.VerificationError`.

Two levels:

- :func:`verify_message_signature` with ``cover_body=False`` checks the signature base only, as
  RFC 9421's own test vectors do (B.2.5 signs ``date``, ``@authority`` and ``content-type``:
  no body);
- with ``cover_body=True`` (what a webhook needs) it also requires ``content-digest`` among the
  covered components and that digest to match the raw body. A signature that does not cover the
  body authenticates headers only: anyone replaying those headers could attach any body, so such
  a request is refused (``body_not_covered``).

The request URL is rebuilt as ``https://{Host}{path}?{query}``: a webhook receiver is public over
TLS, and ``path`` is the source's public path (see :class:`~carehook.envelope.SignedRequest`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    VerifyResult,
    algorithms,
)

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures._common import check_tolerance

#: a secret written ``base64:<key>`` is a binary key (as in RFC 9421's vectors); else UTF-8
BASE64_PREFIX = "base64:"
DEFAULT_COMPONENTS = ("@method", "@path", "@query", "content-type")


@dataclass(frozen=True, slots=True)
class MessageSignature:
    """A verified RFC 9421 signature: what it covers and its signed metadata."""

    label: str
    key_id: str
    created: int
    covered: tuple[str, ...]
    signature_base: str


@dataclass(frozen=True, slots=True)
class _Message:
    """The request-like object the package reads (method, absolute URL, headers)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


class _Key(HTTPSignatureKeyResolver):
    """One shared HMAC key for any ``keyid``: carehook tries each secret of the source."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def resolve_public_key(self, key_id: str) -> bytes:  # noqa: ARG002
        return self._key

    def resolve_private_key(self, key_id: str) -> bytes:  # noqa: ARG002
        return self._key


class _Refused(InvalidSignature):
    """Carries our own VerificationError through the package's verification loop."""

    def __init__(self, error: VerificationError) -> None:
        super().__init__(error.reason)
        self.error = error


class _Verifier(HTTPMessageVerifier):
    """The package's verifier with an injected clock and a symmetric tolerance."""

    def __init__(self, key: bytes, now: float, tolerance_seconds: int) -> None:
        super().__init__(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_Key(key))
        self._now = now
        self._tolerance = tolerance_seconds

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:  # noqa: ARG002
        params = sig_input.params
        created, expires = params.get("created"), params.get("expires")
        if type(created) is not int:
            raise _Refused(_malformed("its created parameter is missing or not an integer"))
        if expires is not None and type(expires) is not int:
            raise _Refused(_malformed("its expires parameter is not an integer"))
        try:
            check_tolerance(created, self._now, self._tolerance, "Signature-Input created")
        except VerificationError as exc:
            raise _Refused(exc) from None
        if expires is not None and expires < self._now:
            raise _Refused(VerificationError("signature_expired", "the signature has expired"))


def _malformed(what: str) -> VerificationError:
    return VerificationError("malformed_header", f"RFC 9421 Signature-Input: {what}")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: ``base64:<key>`` decoded, anything else as UTF-8."""
    if not secret.startswith(BASE64_PREFIX):
        return secret.encode()
    try:
        return base64.b64decode(secret.removeprefix(BASE64_PREFIX), validate=True)
    except (ValueError, binascii.Error):
        raise VerificationError("invalid_secret", "a base64: secret is not base64") from None


def _message(request: SignedRequest) -> _Message:
    host = request.headers.get("host", "localhost")
    query = f"?{request.query}" if request.query else ""
    url = f"https://{host}{request.path}{query}"
    return _Message(request.method.upper(), url, dict(request.headers))


def _verify_one(request: SignedRequest, key: bytes, now: float, tolerance: int) -> VerifyResult:
    verifier = _Verifier(key, now, tolerance)
    try:
        results = verifier.verify(_message(request), max_age=None)
    except _Refused as exc:
        raise exc.error from None
    except InvalidSignature as exc:
        if isinstance(exc.__cause__, CryptoInvalidSignature):
            raise VerificationError("bad_signature", "no configured secret matches") from None
        raise _wrapped(exc) from None
    except Exception as exc:
        raise _wrapped(exc) from None
    return results[0]


def _wrapped(exc: Exception) -> VerificationError:
    # the package's messages may quote header values: name only the exception class
    return VerificationError(
        "malformed_header", f"RFC 9421 signature headers refused ({type(exc).__name__})"
    )


def verify_message_signature(
    request: SignedRequest,
    keys: Sequence[bytes],
    now: float,
    tolerance_seconds: int,
    *,
    cover_body: bool = True,
) -> tuple[int, MessageSignature]:
    """Verify the request's one RFC 9421 signature; return the matching key's index and it.

    ``cover_body=True`` also requires the signature to cover a ``content-digest`` that matches
    the raw body (``body_not_covered`` / ``digest_mismatch``).
    """
    for index, key in enumerate(keys):
        try:
            result = _verify_one(request, key, now, tolerance_seconds)
        except VerificationError as exc:
            if exc.reason == "bad_signature":
                continue
            raise
        if cover_body:
            _check_body(result, request.body)
        return index, _describe(result)
    raise VerificationError("bad_signature", "no configured secret matches the RFC 9421 signature")


def _check_body(result: VerifyResult, body: bytes) -> None:
    try:
        covered = ContentDigest.verify_components(result.covered_components, body)
    except Exception:
        raise VerificationError(
            "digest_mismatch", "the signed Content-Digest does not match the body"
        ) from None
    if not covered:
        raise VerificationError(
            "body_not_covered",
            "the RFC 9421 signature does not cover content-digest, so not the body",
        )


def _describe(result: VerifyResult) -> MessageSignature:
    components = result.covered_components
    return MessageSignature(
        label=result.label,
        key_id=str(result.parameters.get("keyid", "")),
        created=int(result.parameters["created"]),
        covered=tuple(name for name in components if name != '"@signature-params"'),
        signature_base="\n".join(f"{name}: {value}" for name, value in components.items()),
    )


def sign_message_signature(
    request: SignedRequest,
    key: bytes,
    now: float,
    *,
    label: str = "sig1",
    key_id: str = "carehook",
    components: Sequence[str] = DEFAULT_COMPONENTS,
) -> dict[str, str]:
    """The ``content-digest``, ``signature-input`` and ``signature`` headers of a genuine RFC 9421
    sender covering ``components`` plus the body's Content-Digest, created at ``now``."""
    message = _message(request)
    signer = HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_Key(key))
    signer.sign(
        message,
        key_id=key_id,
        label=label,
        created=datetime.fromtimestamp(int(now), UTC),
        covered_component_ids=tuple(components),
        body=request.body,
        use_existing_digest="content-digest" in message.headers,
    )
    wanted = {"content-digest", "signature-input", "signature"}
    return {
        name.lower(): value for name, value in message.headers.items() if name.lower() in wanted
    }
