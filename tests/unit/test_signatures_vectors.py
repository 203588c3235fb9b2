"""Every test vector of /work/shared/VENDORS.md, verified and re-derived by our schemes."""

from __future__ import annotations

import base64

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures.healthie import HealthieScheme, content_digest, signed_data
from carehook.signatures.nabla import NablaScheme
from carehook.signatures.rfc9421 import verify_message_signature
from carehook.signatures.standard_webhooks import StandardWebhooksScheme
from carehook.signatures.stripe_style import StripeStyleScheme

STRIPE_BODY = b'{"id":"evt_test"}'
STRIPE_SIG = "00cd8805b6dfb4317048892c492f8ff769e2075ec20013c6ed546e639a4e20ba"
NABLA_BODY = b'{"id":"evt_1","type":"transcribe_async.succeeded"}'
NABLA_SIG = "be27f11901bdf1c4465cf21a277b90e41037cbc0c25e7f3000333b494463f376"
HEALTHIE_BODY = (
    b'{"resource_id":"67890","resource_id_type":"Appointment",'
    b'"event_type":"appointment.transcript_available","changed_fields":[]}'
)
HEALTHIE_DIGEST = "KuKQN0C2f7gZFVi6E3V/3SCQGGWJTninBmaUylxKDBM="
HEALTHIE_SIG = "5f091354cb903e2c00bb1f718ede7cbeba79e6258b488ffb3a31930af8acfd0d"
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
RFC_KEY = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
RFC_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"@signature-params": ("date" "@authority" "content-type");created=1618884473'
    ';keyid="test-shared-secret"'
)


def _request(body: bytes, headers: dict[str, str], path: str = "/webhooks/x", query: str = ""):
    return SignedRequest("POST", path, query, headers, body)


def _rfc_request(signature: str = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"):
    headers = {
        "host": "example.com",
        "date": "Tue, 20 Apr 2021 02:07:55 GMT",
        "content-type": "application/json",
        "content-length": "18",
        "signature-input": 'sig-b25=("date" "@authority" "content-type")'
        ';created=1618884473;keyid="test-shared-secret"',
        "signature": signature,
    }
    return _request(b'{"hello": "world"}', headers, path="/foo", query="param=Value&Pet=dog")


def test_stripe_self_check_vector_verifies():
    """Stripe's own algorithm vector passes the OpenEvidence scheme."""
    header = {"x-openevidence-signature": f"t=1614265330,v1={STRIPE_SIG}"}
    assert (
        StripeStyleScheme().verify(_request(STRIPE_BODY, header), ["whsec_test_secret"], 1614265330)
        == 0
    )


def test_stripe_self_check_vector_is_what_sign_produces():
    """sign() reproduces the Stripe vector byte for byte."""
    headers = StripeStyleScheme().sign(_request(STRIPE_BODY, {}), "whsec_test_secret", 1614265330.4)
    assert headers == {"x-openevidence-signature": f"t=1614265330,v1={STRIPE_SIG}"}


def test_nabla_vector_verifies_and_is_reproduced():
    """The Nabla fixture verifies, and sign() reproduces it."""
    headers = {"x-nabla-webhook-timestamp": "1732370000", "x-nabla-webhook-signature": NABLA_SIG}
    request = _request(NABLA_BODY, headers)
    assert NablaScheme().verify(request, ["nabla-test-secret"], 1732370000) == 0
    assert NablaScheme().sign(request, "nabla-test-secret", 1732370000) == headers


def test_healthie_fixture_digest_and_signed_string():
    """The Healthie fixture's body digest and signed string are exactly VENDORS.md's."""
    request = _request(HEALTHIE_BODY, {}, path="/webhooks/healthie")
    assert len(HEALTHIE_BODY) == 124
    assert content_digest(HEALTHIE_BODY) == HEALTHIE_DIGEST
    assert signed_data(request, HEALTHIE_DIGEST) == (
        b"post /webhooks/healthie  " + HEALTHIE_DIGEST.encode() + b" application/json 124"
    )


def test_healthie_fixture_verifies_and_is_reproduced():
    """The Healthie fixture verifies, and sign() reproduces its digest and signature."""
    headers = {
        "content-digest": f"sha-256={HEALTHIE_DIGEST}",
        "signature-input": 'sig1=("@method" "@path")',
        "signature": f"sig1={HEALTHIE_SIG}",
    }
    request = _request(HEALTHIE_BODY, headers, path="/webhooks/healthie")
    assert HealthieScheme().verify(request, ["whsec_my-secret-key"], 0) == 0
    signed = HealthieScheme().sign(request, "whsec_my-secret-key", 0)
    assert signed["content-digest"] == headers["content-digest"]
    assert signed["signature"] == headers["signature"]


def test_standard_webhooks_official_vector_verifies_and_is_reproduced():
    """The official Standard Webhooks vector verifies, and sign() reproduces it."""
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": SW_SIG,
    }
    request = _request(b'{"test": 2432232314}', headers)
    assert StandardWebhooksScheme().verify(request, [SW_SECRET], 1614265330) == 0
    assert StandardWebhooksScheme().sign(request, SW_SECRET, 1614265330) == headers


def test_rfc9421_b25_verifies_at_signature_base_level():
    """RFC 9421 B.2.5 verifies and yields exactly the documented signature base."""
    index, signature = verify_message_signature(
        _rfc_request(), [RFC_KEY], 1618884473, 300, cover_body=False
    )
    assert index == 0
    assert signature.signature_base == RFC_BASE
    assert signature.label == "sig-b25"
    assert signature.key_id == "test-shared-secret"
    assert signature.covered == ('"date"', '"@authority"', '"content-type"')


def test_rfc9421_b25_with_wrong_key_is_bad_signature():
    """The B.2.5 request does not verify under another key."""
    with pytest.raises(VerificationError) as caught:
        verify_message_signature(_rfc_request(), [b"x" * 64], 1618884473, 300, cover_body=False)
    assert caught.value.reason == "bad_signature"


def test_rfc9421_b25_tampered_covered_header_is_bad_signature():
    """Changing a covered header (content-type) breaks the B.2.5 signature."""
    request = _rfc_request()
    headers = {**request.headers, "content-type": "text/plain"}
    with pytest.raises(VerificationError) as caught:
        verify_message_signature(
            _request(request.body, headers, "/foo", request.query),
            [RFC_KEY],
            1618884473,
            300,
            cover_body=False,
        )
    assert caught.value.reason == "bad_signature"


def test_rfc9421_b25_refused_as_a_webhook_because_the_body_is_not_covered():
    """A valid RFC 9421 signature that does not cover content-digest does not authenticate a body.

    Even with a correct (but unsigned) Content-Digest added, anyone could swap body and digest.
    """
    request = _rfc_request()
    digest = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    with_digest = _request(
        request.body, {**request.headers, "content-digest": digest}, "/foo", request.query
    )
    secret = "base64:" + base64.b64encode(RFC_KEY).decode()
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(with_digest, [secret], 1618884473)
    assert caught.value.reason == "body_not_covered"


def test_rfc9421_b25_without_any_digest_is_refused_as_a_webhook():
    """The B.2.5 request as published has no Content-Digest: a webhook needs one."""
    secret = "base64:" + base64.b64encode(RFC_KEY).decode()
    with pytest.raises(VerificationError) as caught:
        HealthieScheme().verify(_rfc_request(), [secret], 1618884473)
    assert caught.value.reason == "missing_header"
    assert "content-digest" in caught.value.detail


def test_rfc9530_digest_vector():
    """sha-256 of {"hello": "world"} is RFC 9530's value."""
    assert content_digest(b'{"hello": "world"}') == "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
