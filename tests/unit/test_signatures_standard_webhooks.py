"""Standard Webhooks: our own verifier, cross-checked against the reference package."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures.standard_webhooks import StandardWebhooksScheme, secret_key

KEY = b"a 24-byte key for tests!"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
BODY = b'{"type":"lab_result.available","data":{"id":"lab_1"}}'
NOW = 1_700_000_000


def _request(headers: dict[str, str], body: bytes = BODY) -> SignedRequest:
    return SignedRequest("POST", "/webhooks/standard-webhooks", "", headers, body)


def test_sign_output_verifies_in_the_reference_package():
    """Headers from our sign() verify with the standardwebhooks package (which reads the clock)."""
    now = time.time()
    headers = StandardWebhooksScheme().sign(_request({}), SECRET, now)
    assert Webhook(SECRET).verify(BODY, headers) == {
        "type": "lab_result.available",
        "data": {"id": "lab_1"},
    }


def test_reference_package_signature_verifies_here():
    """A signature made by the reference package verifies with our scheme."""
    from datetime import UTC, datetime

    signature = Webhook(SECRET).sign("msg_ref", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature,
    }
    assert StandardWebhooksScheme().verify(_request(headers), [SECRET], NOW) == 0


@pytest.mark.parametrize(
    "secret",
    [
        SECRET,
        SECRET.removeprefix("whsec_"),
        SECRET.rstrip("="),
        SECRET.removeprefix("whsec_").rstrip("="),
    ],
)
def test_secret_with_or_without_prefix_or_padding(secret):
    """The key is base64 after an optional whsec_, padding optional (as the reference allows)."""
    assert secret_key(secret) == KEY


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!", "not base64 at all", "whsec_a"])
def test_invalid_secret_is_reported_without_echo(secret):
    """A secret that is not base64 is invalid_secret, and its value is not printed."""
    headers = StandardWebhooksScheme().sign(_request({}), SECRET, NOW)
    with pytest.raises(VerificationError) as caught:
        StandardWebhooksScheme().verify(_request(headers), [secret], NOW)
    assert caught.value.reason == "invalid_secret"
    if len(secret) > 8:
        assert secret not in str(caught.value)


def test_signed_content_is_id_dot_timestamp_dot_body():
    """The MAC is over "{id}.{timestamp}.{raw body}" under the decoded key."""
    mac = hmac.new(KEY, b"msg_1.1700000000." + BODY, hashlib.sha256).digest()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
    assert StandardWebhooksScheme().verify(_request(headers), [SECRET], NOW) == 0


def test_other_versions_are_ignored_and_any_v1_matches():
    """v1a (asymmetric) entries are skipped; the matching v1 among several passes."""
    headers = StandardWebhooksScheme().sign(_request({}), SECRET, NOW)
    good = headers["webhook-signature"]
    headers["webhook-signature"] = (
        f"v1a,c29tZXRoaW5n v1,{base64.b64encode(b'x' * 32).decode()} {good}"
    )
    assert StandardWebhooksScheme().verify(_request(headers), [SECRET], NOW) == 0


def test_changing_the_id_breaks_the_signature():
    """The webhook-id is signed: replaying the body under another id fails."""
    headers = StandardWebhooksScheme().sign(_request({}), SECRET, NOW)
    headers["webhook-id"] = "msg_other"
    with pytest.raises(VerificationError) as caught:
        StandardWebhooksScheme().verify(_request(headers), [SECRET], NOW)
    assert caught.value.reason == "bad_signature"


def test_sign_keeps_an_existing_id_and_derives_one_from_the_body_otherwise():
    """sign() reuses the request's webhook-id; without one the id depends on the body only."""
    scheme = StandardWebhooksScheme()
    assert scheme.sign(_request({"webhook-id": "msg_x"}), SECRET, NOW)["webhook-id"] == "msg_x"
    first = scheme.sign(_request({}), SECRET, NOW)["webhook-id"]
    assert scheme.sign(_request({}), SECRET, NOW + 60)["webhook-id"] == first
    assert scheme.sign(_request({}, b"{}"), SECRET, NOW)["webhook-id"] != first
