"""OpenEvidence's scheme: Stripe-style ``t=,v1=`` entries and the bare-hex revision."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures import SchemeOptions
from carehook.signatures.stripe_style import StripeStyleScheme, sign_bare

SECRET = "oe-secret"
OTHER = "oe-old-secret"
BODY = b'{"id":"evt_9","type":"query.completed","data":{"query_id":"q_1"}}'
NOW = 1_700_000_000
HEADER = "x-openevidence-signature"


def _request(value: str) -> SignedRequest:
    return SignedRequest("POST", "/webhooks/openevidence", "", {HEADER: value}, BODY)


def _v1(secret: str, t: int = NOW) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()


def test_any_of_several_v1_entries_may_match():
    """The sender signs with each active secret; any v1 matching passes."""
    value = f"t={NOW},v1={_v1(OTHER)},v1={_v1(SECRET)}"
    assert StripeStyleScheme().verify(_request(value), [SECRET], NOW) == 0


def test_other_schemes_are_ignored():
    """v0 (and any other scheme) entries are ignored, whatever they hold."""
    value = f"t={NOW},v0=not-even-hex,v1={_v1(SECRET)},scheme2=xyz"
    assert StripeStyleScheme().verify(_request(value), [SECRET], NOW) == 0


def test_whitespace_around_entries_is_tolerated():
    """Spaces after commas (as some senders write) do not break parsing."""
    value = f"t={NOW}, v1={_v1(SECRET)}"
    assert StripeStyleScheme().verify(_request(value), [SECRET], NOW) == 0


def test_only_v0_is_malformed():
    """A header without any v1 entry is malformed, not a mismatch."""
    with pytest.raises(VerificationError) as caught:
        StripeStyleScheme().verify(_request(f"t={NOW},v0={_v1(SECRET)}"), [SECRET], NOW)
    assert caught.value.reason == "malformed_header"


def test_v1_without_t_is_malformed():
    """Entries without t= cannot be checked for replay: refused."""
    with pytest.raises(VerificationError) as caught:
        StripeStyleScheme().verify(_request(f"v1={_v1(SECRET)}"), [SECRET], NOW)
    assert caught.value.reason == "malformed_header"


def test_signed_timestamp_is_the_t_entry():
    """Changing t (even within tolerance) breaks the signature, since t is signed."""
    value = f"t={NOW + 1},v1={_v1(SECRET)}"
    with pytest.raises(VerificationError) as caught:
        StripeStyleScheme().verify(_request(value), [SECRET], NOW)
    assert caught.value.reason == "bad_signature"


def test_bare_hex_of_the_body_verifies_when_allowed():
    """Seed 003's bare hex HMAC of the raw body verifies by default, whatever the clock."""
    value = sign_bare(BODY, SECRET)
    assert value == hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert StripeStyleScheme().verify(_request(value), [OTHER, SECRET], NOW + 10**6) == 1


def test_bare_hex_refused_by_option():
    """allow_bare=False refuses the timestamp-less form with bare_signature_refused."""
    scheme = StripeStyleScheme.from_options(SchemeOptions(allow_bare=False))
    with pytest.raises(VerificationError) as caught:
        scheme.verify(_request(sign_bare(BODY, SECRET)), [SECRET], NOW)
    assert caught.value.reason == "bare_signature_refused"
    assert HEADER in caught.value.detail


def test_stripe_form_still_passes_when_bare_refused():
    """Refusing the bare form leaves the timestamped form working."""
    scheme = StripeStyleScheme.from_options(SchemeOptions(allow_bare=False))
    assert scheme.verify(_request(f"t={NOW},v1={_v1(SECRET)}"), [SECRET], NOW) == 0


def test_bare_hex_of_wrong_secret_is_bad_signature():
    """A bare signature under another secret is refused."""
    with pytest.raises(VerificationError) as caught:
        StripeStyleScheme().verify(_request(sign_bare(BODY, OTHER)), [SECRET], NOW)
    assert caught.value.reason == "bad_signature"
