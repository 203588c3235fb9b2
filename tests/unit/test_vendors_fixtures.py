"""Recorded fixtures (tests/fixtures/vendors/<vendor>/<event_type>.json): verify, parse, tamper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures import SchemeOptions
from carehook.vendors import builtin_vendors
from carehook.vendors.standard_webhooks import EXAMPLE_TYPES

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "vendors"
VENDORS = builtin_vendors()
FIXTURES = sorted(ROOT.glob("*/*.json"))
#: the header carrying each vendor's signature
SIGNATURE_HEADER = {
    "abridge": "x-abridge-signature",
    "openevidence": "x-openevidence-signature",
    "nabla": "x-nabla-webhook-signature",
    "healthie": "signature",
    "standard-webhooks": "webhook-signature",
}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _request(fixture: dict[str, Any], **changes: Any) -> SignedRequest:
    values = {
        "method": fixture["method"],
        "path": fixture["path"],
        "query": "",
        "headers": fixture["headers"],
        "body": fixture["body"].encode(),
        **changes,
    }
    return SignedRequest(**values)


def _verify(vendor: str, fixture: dict[str, Any], request: SignedRequest) -> int:
    scheme = VENDORS[vendor].scheme(SchemeOptions())
    return scheme.verify(request, [fixture["secret"]], float(fixture["now"]))


def test_every_vendor_and_event_type_has_a_fixture():
    """Each catalog type of each vendor (and the Standard Webhooks examples) is recorded."""
    recorded = {(path.parent.name, path.stem) for path in FIXTURES}
    expected = {
        (name, event_type)
        for name, vendor in VENDORS.items()
        for event_type in (vendor.event_types or EXAMPLE_TYPES)
    }
    assert recorded == expected


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_verifies_and_parses(path):
    """The recorded request verifies with its secret at its time and parses to its type."""
    vendor, fixture = path.parent.name, _load(path)
    request = _request(fixture)
    assert _verify(vendor, fixture, request) == 0
    event = VENDORS[vendor].parse(request.body, json.loads(request.body), headers=request.headers)
    assert event.type == path.stem
    assert event.handled is (path.stem in VENDORS[vendor].event_types)
    assert event.subject.startswith(f"{vendor}:")


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_with_one_body_byte_flipped_is_refused(path):
    """Flipping one bit of one body byte makes verification fail."""
    vendor, fixture = path.parent.name, _load(path)
    body = bytearray(fixture["body"].encode())
    body[len(body) // 2] ^= 0x01
    with pytest.raises(VerificationError) as caught:
        _verify(vendor, fixture, _request(fixture, body=bytes(body)))
    assert caught.value.reason in {"bad_signature", "digest_mismatch"}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_with_truncated_signature_is_refused(path):
    """Dropping the last character of the signature header makes verification fail."""
    vendor, fixture = path.parent.name, _load(path)
    name = SIGNATURE_HEADER[vendor]
    headers = {**fixture["headers"], name: fixture["headers"][name][:-1]}
    with pytest.raises(VerificationError):
        _verify(vendor, fixture, _request(fixture, headers=headers))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_with_another_secret_is_refused(path):
    """The fixture does not verify under a different secret."""
    vendor, fixture = path.parent.name, _load(path)
    other = {**fixture, "secret": "whsec_" + "QUJD" * 8}
    with pytest.raises(VerificationError):
        _verify(vendor, other, _request(fixture))
