"""carehook.testing's helpers do what they promise: a settable clock, and signed requests that
each built-in vendor's real scheme verifies."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures import SchemeOptions
from carehook.testing import FakeClock, signed_request
from carehook.vendors import builtin_vendors

SECRETS = {
    "abridge": "abridge-secret",
    "openevidence": "oe-secret",
    "nabla": "nabla-secret",
    "healthie": "healthie-secret",
    "standard-webhooks": "whsec_" + base64.b64encode(b"k" * 24).decode(),
}


def test_the_fake_clock_moves_only_when_told() -> None:
    """FakeClock tells its set time, advances by seconds, and can follow real time."""
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.advance(90) == datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert clock.timestamp() == clock().timestamp()
    clock.follow_real_time()
    assert abs(clock() - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize("vendor", sorted(SECRETS))
def test_signed_requests_verify_with_each_vendors_scheme(vendor: str) -> None:
    """Every built-in vendor: the signed request verifies; a changed body does not."""
    clock = FakeClock()
    secret = SECRETS[vendor]
    signed = signed_request(vendor, secret, {"id": "evt_1", "n": 1}, path="/webhooks/x",
                            now=clock.timestamp())  # fmt: skip
    scheme = builtin_vendors()[vendor].scheme(SchemeOptions())
    headers = {k.lower(): v for k, v in signed.headers.items()}
    ok = SignedRequest("POST", "/webhooks/x", "", headers, signed.body)
    assert scheme.verify(ok, [secret], clock.timestamp()) == 0
    forged = SignedRequest("POST", "/webhooks/x", "", headers, signed.body + b" ")
    with pytest.raises(VerificationError):
        scheme.verify(forged, [secret], clock.timestamp())


def test_an_unknown_vendor_is_refused() -> None:
    """A vendor name carehook does not ship is an error naming the known ones."""
    with pytest.raises(ValueError, match="abridge"):
        signed_request("acme", "s", b"{}")
