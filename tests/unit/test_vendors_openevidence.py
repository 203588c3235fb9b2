"""OpenEvidence payloads: both revisions, body-derived ids, per-type subjects and fields."""

from __future__ import annotations

import hashlib
import json

import pytest

from carehook.errors import PayloadValidationError
from carehook.signatures import SchemeOptions
from carehook.signatures.stripe_style import StripeStyleScheme
from carehook.vendors.openevidence import VENDOR


def _parse(payload, body: bytes | None = None):
    return VENDOR.parse(body if body is not None else json.dumps(payload).encode(), payload)


def test_seed_001_shape_uses_event_key_and_body_hash_id():
    """{event, data} without id: type from `event`, id = sha256 of the raw body."""
    body = b'{"event":"deepconsult.completed","data":{"consultId":"test"}}'
    event = _parse(json.loads(body), body)
    assert event.type == "deepconsult.completed"
    assert event.event_id == "sha256:" + hashlib.sha256(body).hexdigest()
    assert event.subject == "openevidence:consult:test"


def test_seed_003_shape_uses_id():
    """{id, type, data}: the id is the payload's id."""
    event = _parse({"id": "evt_77", "type": "query.completed", "data": {"query_id": "q1"}})
    assert (event.event_id, event.subject) == ("evt_77", "openevidence:query:q1")


def test_type_wins_over_event():
    """When both keys are present, `type` is the event type."""
    payload = {"type": "query.failed", "event": "deepconsult.failed", "data": {"query_id": "q"}}
    assert _parse(payload).type == "query.failed"


def test_same_body_same_id_different_body_different_id():
    """Body-derived ids de-duplicate retries (same bytes) and nothing else."""
    one = {"event": "rate_limit.warning", "data": {"remaining": 5, "limit": 100}}
    two = {"event": "rate_limit.warning", "data": {"remaining": 4, "limit": 100}}
    assert _parse(one).event_id == _parse(dict(one)).event_id
    assert _parse(one).event_id != _parse(two).event_id
    assert _parse(one).subject == "openevidence:ratelimit"


@pytest.mark.parametrize("progress", [-1, 101, "half"])
def test_progress_is_a_percentage(progress):
    """deepconsult.progress carries 0-100."""
    payload = {"event": "deepconsult.progress", "data": {"consultId": "c", "progress": progress}}
    with pytest.raises(PayloadValidationError, match=r"data.progress"):
        _parse(payload)


def test_api_key_expiring_needs_key_and_time():
    """api_key.expiring names its key and expiry; subject is the key."""
    payload = {
        "event": "api_key.expiring",
        "data": {"keyId": "k1", "expiresAt": "2025-01-01T00:00:00Z"},
    }
    assert _parse(payload).subject == "openevidence:apikey:k1"
    with pytest.raises(PayloadValidationError, match=r"data.expiresAt: missing"):
        _parse({"event": "api_key.expiring", "data": {"keyId": "k1"}})


@pytest.mark.parametrize(
    ("event_type", "data", "subject"),
    [
        ("evidence.updated", {"topic_id": "t", "revision": 4}, "openevidence:topic:t"),
        ("citation.added", {"citation_id": "c", "pubmed_id": 123}, "openevidence:citation:c"),
        ("citation.retracted", {"citation_id": "c"}, "openevidence:citation:c"),
        ("review.flagged", {"review_id": "r", "severity": "high"}, "openevidence:review:r"),
        ("query.failed", {"query_id": "q", "retry_after": 30}, "openevidence:query:q"),
        ("query.completed", {"query_id": "q", "evidence_count": None}, "openevidence:query:q"),
    ],
)
def test_evidence_revision_subjects(event_type, data, subject):
    """Each seed-003 type is about its own entity; optional fields may be empty."""
    assert _parse({"id": "e", "type": event_type, "data": data}).subject == subject


def test_missing_data_on_known_type_is_refused():
    """A known type without data is a 422."""
    with pytest.raises(PayloadValidationError, match="data: missing"):
        _parse({"id": "e", "type": "review.flagged"})


def test_non_string_id_is_refused():
    """An id that is not a string cannot be a dedup key."""
    with pytest.raises(PayloadValidationError, match="id"):
        _parse({"id": 5, "type": "query.completed", "data": {"query_id": "q"}})
    with pytest.raises(PayloadValidationError, match="id"):
        _parse({"id": {"x": 1}, "type": "unknown.kind"})


def test_created_at_is_read_leniently():
    """A created_at is used as occurred_at when readable, ignored otherwise."""
    payload = {
        "event": "deepconsult.started",
        "data": {"consultId": "c"},
        "created_at": "2024-05-01T00:00:00Z",
    }
    assert _parse(payload).occurred_at is not None
    payload["created_at"] = "soon"
    assert _parse(payload).occurred_at is None


def test_scheme_follows_allow_bare():
    """The vendor's scheme is Stripe-style, bound to the source's allow_bare."""
    scheme = VENDOR.scheme(SchemeOptions(allow_bare=False))
    assert isinstance(scheme, StripeStyleScheme)
    assert scheme.allow_bare is False
