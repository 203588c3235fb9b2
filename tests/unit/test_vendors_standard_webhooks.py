"""Standard Webhooks payloads: the id from the webhook-id header, generic subjects, unhandled."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from carehook.errors import PayloadValidationError
from carehook.vendors.standard_webhooks import VENDOR

PAYLOAD = {
    "type": "lab_result.available",
    "timestamp": "2024-02-02T10:00:00Z",
    "data": {"id": "lab_7"},
}
BODY = json.dumps(PAYLOAD).encode()


def test_event_id_comes_from_the_webhook_id_header():
    """The signed webhook-id header is the event id."""
    event = VENDOR.parse(BODY, PAYLOAD, headers={"webhook-id": "msg_2Lx", "webhook-timestamp": "1"})
    assert event.event_id == "msg_2Lx"
    assert event.subject == "standard-webhooks:lab_7"
    assert event.occurred_at == datetime(2024, 2, 2, 10, tzinfo=UTC)
    assert event.handled is False


def test_without_header_the_payload_id_then_the_body_hash():
    """Without headers: the payload's id, else a body hash."""
    assert VENDOR.parse(BODY, {**PAYLOAD, "id": "p1"}).event_id == "p1"
    assert VENDOR.parse(BODY, PAYLOAD).event_id == "sha256:" + hashlib.sha256(BODY).hexdigest()


def test_subject_falls_back_to_type():
    """Data without an id: the subject is the type."""
    payload = {"type": "ping.sent", "data": {}}
    assert VENDOR.parse(b"{}", payload).subject == "standard-webhooks:ping.sent"
    assert VENDOR.parse(b"{}", {"type": "ping.sent"}).subject == "standard-webhooks:ping.sent"


def test_data_must_be_an_object_and_is_not_echoed():
    """A non-object data is refused without quoting it."""
    with pytest.raises(PayloadValidationError) as caught:
        VENDOR.parse(b"{}", {"type": "a.b", "data": "CANARY-PHI-7f3a"})
    assert "CANARY" not in str(caught.value)


def test_sample_accepts_any_type():
    """A generic sender's sample can be of any type."""
    assert (
        VENDOR.sample("whatever.happened", datetime(2024, 1, 1, tzinfo=UTC))["type"]
        == "whatever.happened"
    )
