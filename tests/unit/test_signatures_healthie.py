"""Healthie's scheme: its own Content-Digest + hex recipe, and genuine RFC 9421 byte sequences."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures.healthie import HealthieScheme
from carehook.signatures.rfc9421 import secret_key, sign_message_signature

SECRET = "whsec_healthie-secret"
BODY = (
    b'{"resource_id":1,"resource_id_type":"Appointment",'
    b'"event_type":"appointment.recording_started"}'
)
DIGEST = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
NOW = 1_700_000_000.0


def _hex(data: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), data.encode(), hashlib.sha256).hexdigest()


def _request(headers, *, path="/webhooks/healthie", query="", method="POST", body=BODY):
    return SignedRequest(method, path, query, headers, body)


def _headers(digest_value: str, signature: str) -> dict[str, str]:
    return {"content-digest": digest_value, "signature-input": "sig1=()", "signature": signature}


@pytest.mark.parametrize("digest", [DIGEST, f":{DIGEST}:"])
def test_digest_with_or_without_colons_is_signed_verbatim(digest):
    """The digest after the first '=' is signed verbatim, RFC 9530 colons included."""
    data = f"post /webhooks/healthie  {digest} application/json {len(BODY)}"
    headers = _headers(f"sha-256={digest}", f"sig1={_hex(data)}")
    assert HealthieScheme().verify(_request(headers), [SECRET], NOW) == 0


def test_digest_mismatch_is_named():
    """A Content-Digest that is not the body's is digest_mismatch, naming the header."""
    other = base64.b64encode(hashlib.sha256(b"{}").digest()).decode()
    data = f"post /webhooks/healthie  {other} application/json {len(BODY)}"
    headers = _headers(f"sha-256={other}", f"sig1={_hex(data)}")
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_request(headers), [SECRET], NOW)
    assert caught.value.reason == "digest_mismatch"
    assert "content-digest" in caught.value.detail


def test_digest_without_padding_is_a_mismatch():
    """The docs' sample drops base64 padding (a known bug): such a digest does not match."""
    digest = DIGEST.rstrip("=")
    data = f"post /webhooks/healthie  {digest} application/json {len(BODY)}"
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(
            _request(_headers(f"sha-256={digest}", f"sig1={_hex(data)}")), [SECRET], NOW
        )
    assert caught.value.reason == "digest_mismatch"


@pytest.mark.parametrize("value", ["sha-512=" + DIGEST, "md5=" + DIGEST, DIGEST.rstrip("=")])
def test_digest_must_be_sha256(value):
    """Another algorithm (or none) in Content-Digest is malformed."""
    headers = _headers(value, "sig1=" + "0" * 64)
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_request(headers), [SECRET], NOW)
    assert caught.value.reason in {"malformed_header", "digest_mismatch"}


def test_signature_input_must_be_present():
    """A request without Signature-Input is refused even when the signature is right."""
    headers = HealthieScheme().sign(_request({}), SECRET, NOW)
    del headers["signature-input"]
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_request(headers), [SECRET], NOW)
    assert caught.value.reason == "missing_header"
    assert "signature-input" in caught.value.detail


def test_query_method_and_path_are_signed():
    """Method (lower-cased), public path and query string are part of the signed string."""
    data = f"post /proxy/hooks/healthie a=1&b=2 {DIGEST} application/json {len(BODY)}"
    headers = _headers(f"sha-256={DIGEST}", f"sig1={_hex(data)}")
    request = _request(headers, path="/proxy/hooks/healthie", query="a=1&b=2")
    assert HealthieScheme().verify(request, [SECRET], NOW) == 0
    for changed in (
        _request(headers, path="/hooks/healthie", query="a=1&b=2"),
        _request(headers, path="/proxy/hooks/healthie"),
        _request(headers, path="/proxy/hooks/healthie", query="a=1&b=2", method="PUT"),
    ):
        with pytest.raises(VerificationError):
            HealthieScheme().verify(changed, [SECRET], NOW)


def test_several_hex_members_any_may_match():
    """Several labelled hex signatures: any matching one passes."""
    data = f"post /webhooks/healthie  {DIGEST} application/json {len(BODY)}"
    value = f"sig0={_hex(data, 'old')}, sig1={_hex(data)}"
    assert (
        HealthieScheme().verify(_request(_headers(f"sha-256={DIGEST}", value)), [SECRET], NOW) == 0
    )


def _rfc_request(**extra_headers: str) -> SignedRequest:
    base = {"host": "hooks.example.org", "content-type": "application/json", **extra_headers}
    return _request(base)


def _rfc_signed(secret: str = SECRET, at: float = NOW) -> SignedRequest:
    request = _rfc_request()
    headers = {**request.headers, **sign_message_signature(request, secret_key(secret), at)}
    return _request(headers)


def test_rfc9421_byte_sequence_signature_verifies():
    """A genuine RFC 9421 signature covering content-digest verifies, with rotation."""
    assert HealthieScheme().verify(_rfc_signed(), ["other", SECRET], NOW) == 1


def test_rfc9421_base64_secret_is_a_binary_key():
    """A secret written base64:<key> is used as the decoded key."""
    secret = "base64:" + base64.b64encode(b"\x00\x01binary-key").decode()
    assert HealthieScheme().verify(_rfc_signed(secret), [secret], NOW) == 0


def test_rfc9421_tampered_digest_header_is_refused():
    """Replacing the covered Content-Digest (to match a new body) breaks the signature."""
    signed = _rfc_signed()
    body = b'{"resource_id":2}'
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    headers = {**signed.headers, "content-digest": f"sha-256=:{digest}:"}
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_request(headers, body=body), [SECRET], NOW)
    assert caught.value.reason == "bad_signature"


@dataclass
class _Message:
    """The request-like object http-message-signatures signs."""

    method: str
    url: str
    headers: dict[str, str]


class _Key(HTTPSignatureKeyResolver):
    """Resolves every key id to the test secret."""

    def resolve_private_key(self, key_id: str) -> bytes:
        """The test secret's bytes."""
        return SECRET.encode()


def _sign_with_library(**options) -> SignedRequest:
    request = _rfc_request(**{"content-digest": f"sha-256=:{DIGEST}:"})
    url = "https://hooks.example.org/webhooks/healthie"
    message = _Message("POST", url, dict(request.headers))
    signer = HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_Key())
    signer.sign(message, key_id="k", label="sig1", use_existing_digest=True, **options)
    return _request({k.lower(): v for k, v in message.headers.items()})


def test_rfc9421_signature_not_covering_the_body_is_refused():
    """A valid RFC 9421 signature over headers only must not authenticate the webhook body."""
    request = _sign_with_library(
        created=datetime.fromtimestamp(NOW, UTC), covered_component_ids=("@method", "@path")
    )
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(request, [SECRET], NOW)
    assert caught.value.reason == "body_not_covered"


def test_rfc9421_expired_signature_is_refused():
    """A signature whose expires parameter has passed is refused."""
    request = _sign_with_library(
        created=datetime.fromtimestamp(NOW - 60, UTC),
        expires=datetime.fromtimestamp(NOW - 1, UTC),
        covered_component_ids=("@method", "@path", "content-digest"),
    )
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(request, [SECRET], NOW)
    assert caught.value.reason == "signature_expired"


def test_rfc9421_created_in_the_future_is_skew():
    """created beyond the tolerance in the future is timestamp_skew."""
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_rfc_signed(at=NOW + 900), [SECRET], NOW)
    assert caught.value.reason == "timestamp_skew"
    assert caught.value.skew_seconds == -900


def test_rfc9421_bad_base64_secret_is_reported():
    """A base64: secret that is not base64 is invalid_secret, without echoing it."""
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_rfc_signed(), ["base64:not*base64"], NOW)
    assert caught.value.reason == "invalid_secret"
    assert "not*base64" not in str(caught.value)
