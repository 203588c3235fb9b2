"""Nabla's scheme: opaque timestamp + raw body, several signatures, ``sha256=`` prefixes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures.nabla import NablaScheme

SECRET = "nabla-secret"
OTHER = "nabla-previous-secret"
BODY = b'{"id":"evt_1","type":"transcribe_async.succeeded"}'
NOW = 1_732_370_000


def _mac(secret: str, timestamp: str) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + BODY, hashlib.sha256).hexdigest()


def _request(timestamp: str, signature: str) -> SignedRequest:
    headers = {"x-nabla-webhook-timestamp": timestamp, "x-nabla-webhook-signature": signature}
    return SignedRequest("POST", "/webhooks/nabla", "", headers, BODY)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-11-23T13:53:20Z",
        "2024-11-23T13:53:20+00:00",
        "2024-11-23T14:53:20+01:00",
        "2024-11-23T13:53:20.123Z",
        "2024-11-23T13:53:20",
    ],
)
def test_iso_timestamp_is_signed_verbatim_and_checked_for_skew(timestamp):
    """An ISO 8601 timestamp is HMACed as sent and parsed (naive = UTC) for tolerance."""
    assert NablaScheme().verify(_request(timestamp, _mac(SECRET, timestamp)), [SECRET], NOW) == 0


def test_iso_timestamp_outside_tolerance_is_skew():
    """An old ISO 8601 timestamp is refused with its skew."""
    timestamp = "2024-11-23T13:20:00Z"
    with pytest.raises(VerificationError) as caught:
        NablaScheme().verify(_request(timestamp, _mac(SECRET, timestamp)), [SECRET], NOW)
    assert caught.value.reason == "timestamp_skew"
    assert caught.value.skew_seconds == 2000


@pytest.mark.parametrize(
    "template",
    ["sha256={}", "SHA256={}", "  {}  ", "sha256= {}"],
)
def test_sha256_prefix_and_whitespace_are_stripped(template):
    """Each entry is trimmed and an optional sha256= prefix removed."""
    value = template.format(_mac(SECRET, str(NOW)))
    assert NablaScheme().verify(_request(str(NOW), value), [SECRET], NOW) == 0


def test_multiple_signatures_any_may_match():
    """One signature per active Nabla key: any entry matching passes."""
    value = f"sha256={_mac(OTHER, str(NOW))}, sha256={_mac(SECRET, str(NOW))}"
    assert NablaScheme().verify(_request(str(NOW), value), [SECRET], NOW) == 0
    assert NablaScheme().verify(_request(str(NOW), value), ["x", OTHER], NOW) == 1


def test_empty_entries_between_commas_are_skipped():
    """A trailing or doubled comma does not hide a valid signature."""
    value = f",{_mac(SECRET, str(NOW))},,"
    assert NablaScheme().verify(_request(str(NOW), value), [SECRET], NOW) == 0


@pytest.mark.parametrize("value", [",", " , , ", "sha256=", "sha256=,sha256="])
def test_empty_signature_list_is_malformed(value):
    """A header with no signature in it is malformed."""
    with pytest.raises(VerificationError) as caught:
        NablaScheme().verify(_request(str(NOW), value), [SECRET], NOW)
    assert caught.value.reason == "malformed_header"


def test_no_separator_between_timestamp_and_body():
    """A dot-separated construction (Abridge's) does not verify under Nabla's."""
    wrong = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    with pytest.raises(VerificationError) as caught:
        NablaScheme().verify(_request(str(NOW), wrong), [SECRET], NOW)
    assert caught.value.reason == "bad_signature"
