"""Behaviour every signature scheme shares: round trip, rotation, tampering, skew, garbage input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from carehook.envelope import SignedRequest
from carehook.errors import VerificationError
from carehook.signatures import Scheme, SchemeOptions
from carehook.signatures.abridge import AbridgeScheme
from carehook.signatures.healthie import HealthieScheme
from carehook.signatures.nabla import NablaScheme
from carehook.signatures.rfc9421 import sign_message_signature
from carehook.signatures.standard_webhooks import StandardWebhooksScheme
from carehook.signatures.stripe_style import StripeStyleScheme

NOW = 1_732_370_000.0
BODY = b'{"id":"evt_42","type":"encounter.session.completed","data":{"session_id":"ses_1"}}'
SECRET = "whsec_c2VjcmV0LW9uZS1mb3ItdGVzdHMtb25seQ=="
OTHER = "whsec_b3RoZXItc2VjcmV0LWZvci10ZXN0cy1vbmx5"
BASE_HEADERS = {"host": "hooks.example.org", "content-type": "application/json"}


@dataclass(frozen=True)
class Rfc9421Sender:
    """Healthie's scheme, but signed as a genuine RFC 9421 sender would."""

    name: str = "healthie-rfc9421"

    def verify(self, request: SignedRequest, secrets: Sequence[str], now: float) -> int:
        """Delegate to the Healthie scheme (which recognises the byte-sequence form)."""
        return HealthieScheme().verify(request, secrets, now)

    def sign(self, request: SignedRequest, secret: str, now: float) -> dict[str, str]:
        """Sign with the http-message-signatures package, covering the body's digest."""
        return sign_message_signature(request, secret.encode(), now)


#: scheme id -> (scheme, its headers, whether a timestamp is checked)
CASES: dict[str, tuple[Scheme, tuple[str, ...], bool]] = {
    "abridge": (AbridgeScheme(), ("x-abridge-timestamp", "x-abridge-signature"), True),
    "stripe-style": (StripeStyleScheme(), ("x-openevidence-signature",), True),
    "nabla": (NablaScheme(), ("x-nabla-webhook-timestamp", "x-nabla-webhook-signature"), True),
    "healthie": (HealthieScheme(), ("content-digest", "signature", "signature-input"), False),
    "healthie-rfc9421": (Rfc9421Sender(), ("content-digest", "signature", "signature-input"), True),
    "standard-webhooks": (
        StandardWebhooksScheme(),
        ("webhook-id", "webhook-timestamp", "webhook-signature"),
        True,
    ),
}
TIMED = [case for case, (_, _, timed) in CASES.items() if timed]
#: values refused by every header reader, before any parsing
UNREADABLE = ["", "   ", "\t", "é", "naïve", "😀", "\x00", "ab\x7fcd", "x" * 10_000, "1\r\n2"]
#: values no scheme may accept in place of a genuine one
GARBAGE = [
    *UNREADABLE,
    *("=", ",", ",,,", " , ", ";", ":", "::", "()", '""', "null", "[]", "{}"),
    *("t=", "v1=", "t=,v1=", "t=abc,v1=00", "t=1614265330", "v1=" + "0" * 64, "v0=abc"),
    *("t=1,t=2,v1=" + "0" * 64, "t=-5,v1=" + "0" * 64, "t=1.5,v1=" + "0" * 64),
    *("sha256=", "sha256=zz", "sha256=" + "f" * 63, "sha256=" + "0" * 64 + ",", " , sha256="),
    *("v1,", "v1,!!!", "v1,====", "v1,YWJj", "v2,YWJj", "v1a,YWJj", ",YWJj", "v1,YWJj v1,@@"),
    *("sig1=", "sig1=:", "sig1=::", "sig1=:!!:", "sig1=(", "sig1=()", "=:YWJj:", "SIG1=abc"),
    *("sig1=:YWJj:, sig2=:YWJj:", "sig1=" + "0" * 64, "sig-1=" + "z" * 64),
    *("sha-256=", "sha-256=:", "sha-512=abc", "md5=abc", "sha-256=::", "sha-256=:YWJj:"),
    *(
        "1e9",
        "-1",
        "0x1f",
        "12 34",
        "NaN",
        "inf",
        "1" * 40,
        "9" * 13,
        "\uff12\uff10\uff12\uff14",
        "0",
    ),
    *("2024-13-45T99:99:99Z", "Tue, 20 Apr 2021 02:07:55 GMT", "yesterday"),
    *("g" * 64, "A" * 64, "deadbeef", "0" * 63, "0" * 65, "0" * 128),
]
#: Healthie's Signature-Input is required but its content undocumented: only unreadable fails
OPAQUE = {("healthie", "signature-input")}


def _garbage_cases() -> list[tuple[str, str, str]]:
    cases = []
    for case, (_, headers, _) in CASES.items():
        for header in headers:
            values = UNREADABLE if (case, header) in OPAQUE else GARBAGE
            cases.extend((case, header, value) for value in values)
    return cases


def _signed(case: str, secret: str = SECRET, at: float = NOW, body: bytes = BODY) -> SignedRequest:
    scheme = CASES[case][0]
    unsigned = SignedRequest("POST", "/webhooks/test", "", dict(BASE_HEADERS), body)
    headers = {**BASE_HEADERS, **scheme.sign(unsigned, secret, at)}
    return SignedRequest("POST", "/webhooks/test", "", headers, body)


def _with_headers(request: SignedRequest, **changes: str | None) -> SignedRequest:
    headers = {k: v for k, v in request.headers.items() if changes.get(k, "") is not None}
    headers.update({k: v for k, v in changes.items() if v is not None})
    return SignedRequest(request.method, request.path, request.query, headers, request.body)


def _refusal(
    case: str, request: SignedRequest, secrets: Sequence[str] = (SECRET,), now: float = NOW
):
    with pytest.raises(VerificationError) as caught:
        CASES[case][0].verify(request, secrets, now)
    return caught.value


@pytest.mark.parametrize("case", CASES)
def test_sign_then_verify_round_trips(case):
    """What sign() produces verifies with the same secret."""
    assert CASES[case][0].verify(_signed(case), [SECRET], NOW) == 0


@pytest.mark.parametrize("case", CASES)
def test_second_secret_matches_with_index_1(case):
    """During rotation the index of the secret that matched is returned."""
    assert CASES[case][0].verify(_signed(case), [OTHER, SECRET], NOW) == 1


@pytest.mark.parametrize("case", CASES)
def test_first_matching_secret_wins(case):
    """With the same secret listed twice, the first index is returned."""
    assert CASES[case][0].verify(_signed(case), [OTHER, SECRET, SECRET], NOW) == 1


@pytest.mark.parametrize("case", CASES)
def test_wrong_secret_is_bad_signature(case):
    """A request signed with another secret is refused."""
    assert _refusal(case, _signed(case, secret=OTHER)).reason == "bad_signature"


@pytest.mark.parametrize("case", CASES)
def test_no_secrets_fails_closed(case):
    """A source without secrets refuses even a well-formed request."""
    assert _refusal(case, _signed(case), secrets=()).reason == "no_secrets"


@pytest.mark.parametrize("case", CASES)
def test_tampered_body_is_refused(case):
    """Changing one byte of the body breaks the signature (or Healthie's digest)."""
    request = _signed(case)
    tampered = SignedRequest("POST", request.path, "", request.headers, BODY.replace(b"42", b"43"))
    expected = "digest_mismatch" if case.startswith("healthie") else "bad_signature"
    assert _refusal(case, tampered).reason == expected


@pytest.mark.parametrize(
    ("case", "header"), [(c, h) for c, (_, hs, _) in CASES.items() for h in hs]
)
def test_missing_header_is_named(case, header):
    """A missing header is refused with missing_header, naming the header."""
    error = _refusal(case, _with_headers(_signed(case), **{header: None}))
    assert error.reason == "missing_header"
    assert header in error.detail


@pytest.mark.parametrize(("case", "header", "value"), _garbage_cases())
def test_garbage_header_is_a_verification_error(case, header, value):
    """Any malformed header value is refused with VerificationError, never another exception."""
    error = _refusal(case, _with_headers(_signed(case), **{header: value}))
    assert error.reason
    assert SECRET not in str(error)
    assert BODY.decode() not in str(error)


@pytest.mark.parametrize("case", CASES)
def test_error_detail_never_shows_secret_signature_or_body(case):
    """A refusal's message names headers, never the secret, the signature value or the body."""
    request = _signed(case, secret=OTHER)
    error = _refusal(case, request)
    message = f"{error} {error.detail}"
    for header in CASES[case][1]:
        value = request.headers[header]
        if len(value) > 20:
            assert value not in message
    assert OTHER not in message
    assert "evt_42" not in message


@pytest.mark.parametrize("case", TIMED)
@pytest.mark.parametrize("delta", [-300, 300])
def test_skew_just_inside_tolerance_passes(case, delta):
    """A timestamp exactly at the tolerance, either side, is accepted."""
    assert CASES[case][0].verify(_signed(case), [SECRET], NOW + delta) == 0


@pytest.mark.parametrize("case", TIMED)
@pytest.mark.parametrize("delta", [-301, 301])
def test_skew_just_outside_tolerance_fails_with_skew(case, delta):
    """One second beyond the tolerance, either side, is timestamp_skew with the skew set."""
    error = _refusal(case, _signed(case), now=NOW + delta)
    assert error.reason == "timestamp_skew"
    assert error.skew_seconds == delta
    assert "past" in error.detail if delta > 0 else "future" in error.detail


@pytest.mark.parametrize(
    "factory",
    [
        AbridgeScheme.from_options,
        StripeStyleScheme.from_options,
        NablaScheme.from_options,
        StandardWebhooksScheme.from_options,
    ],
)
def test_tolerance_comes_from_options(factory):
    """SchemeOptions.tolerance_seconds narrows the window."""
    scheme = factory(SchemeOptions(tolerance_seconds=10))
    unsigned = SignedRequest("POST", "/webhooks/test", "", {}, BODY)
    request = SignedRequest("POST", "/webhooks/test", "", scheme.sign(unsigned, SECRET, NOW), BODY)
    assert scheme.verify(request, [SECRET], NOW + 10) == 0
    with pytest.raises(VerificationError) as caught:
        scheme.verify(request, [SECRET], NOW + 11)
    assert caught.value.skew_seconds == 11


def test_healthie_recipe_has_no_tolerance():
    """Healthie's own recipe signs nothing time-based: a day later it still verifies."""
    assert HealthieScheme().verify(_signed("healthie"), [SECRET], NOW + 86_400) == 0
