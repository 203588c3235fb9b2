"""Abridge's scheme: the brief's exact construction and its configurable headers and template."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import ConfigError, VerificationError
from carehook.signatures import SchemeOptions
from carehook.signatures.abridge import AbridgeScheme

SECRET = "abridge-secret"
BODY = b'{"event_id":"evt_1","type":"quality.alert","data":{"note":"caf\xc3\xa9 \xff"}}'
NOW = 1_700_000_000


def _request(headers: dict[str, str], body: bytes = BODY) -> SignedRequest:
    return SignedRequest("POST", "/webhooks/abridge", "", headers, body)


def test_signature_is_hex_hmac_of_timestamp_dot_raw_body():
    """The signature is hex HMAC-SHA256 of "{timestamp}.{raw body}" on undecoded bytes."""
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    headers = {"x-abridge-timestamp": "1700000000", "x-abridge-signature": expected}
    assert AbridgeScheme().verify(_request(headers), [SECRET], NOW) == 0
    assert AbridgeScheme().sign(_request({}), SECRET, NOW) == headers


def test_uppercase_hex_is_accepted():
    """Hex case carries no meaning: an uppercase signature verifies too."""
    headers = AbridgeScheme().sign(_request({}), SECRET, NOW)
    headers["x-abridge-signature"] = headers["x-abridge-signature"].upper()
    assert AbridgeScheme().verify(_request(headers), [SECRET], NOW) == 0


def test_renamed_headers_from_options():
    """SchemeOptions.headers renames both headers (keys are the default names)."""
    options = SchemeOptions(headers={"x-abridge-timestamp": "X-Ts", "x-abridge-signature": "X-Sig"})
    scheme = AbridgeScheme.from_options(options)
    headers = scheme.sign(_request({}), SECRET, NOW)
    assert set(headers) == {"x-ts", "x-sig"}
    assert scheme.verify(_request(headers), [SECRET], NOW) == 0
    with pytest.raises(VerificationError) as caught:
        AbridgeScheme().verify(_request(headers), [SECRET], NOW)
    assert caught.value.reason == "missing_header"


def test_custom_template_changes_the_signed_bytes():
    """A template such as "v1:{timestamp}:{body}" is what gets signed."""
    scheme = AbridgeScheme.from_options(SchemeOptions(template="v1:{timestamp}:{body}"))
    headers = scheme.sign(_request({}), SECRET, NOW)
    expected = hmac.new(SECRET.encode(), b"v1:1700000000:" + BODY, hashlib.sha256).hexdigest()
    assert headers["x-abridge-signature"] == expected
    assert scheme.verify(_request(headers), [SECRET], NOW) == 0
    with pytest.raises(VerificationError):
        AbridgeScheme().verify(_request(headers), [SECRET], NOW)


@pytest.mark.parametrize("template", ["{timestamp}", "{body}.{ts}", "{timestamp}.{body", "{}"])
def test_bad_template_is_a_config_error(template):
    """A template without {body}, or with an unknown placeholder, is refused when configured."""
    with pytest.raises(ConfigError):
        AbridgeScheme.from_options(SchemeOptions(template=template))


def test_template_without_timestamp_is_refused():
    """A template without {timestamp} must be refused: the timestamp would not be signed."""
    with pytest.raises(ConfigError):
        AbridgeScheme.from_options(SchemeOptions(template="{body}"))


def test_skew_detail_names_header_and_seconds():
    """The skew refusal says which header, how many seconds, and which way."""
    headers = AbridgeScheme().sign(_request({}), SECRET, NOW)
    with pytest.raises(VerificationError) as caught:
        AbridgeScheme().verify(_request(headers), [SECRET], NOW + 3600)
    assert caught.value.detail == "x-abridge-timestamp is 3600 s in the past (tolerance 300 s)"
    assert caught.value.skew_seconds == 3600
