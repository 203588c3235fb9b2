"""Healthie payloads: derived ids, appointment subjects, word.word types, participant PII."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from carehook.errors import PayloadValidationError
from carehook.vendors.healthie import VENDOR, event_id

BODY = (
    b'{"resource_id":"67890","resource_id_type":"Appointment",'
    b'"event_type":"appointment.transcript_available","changed_fields":[]}'
)


def _parse(payload, body: bytes | None = None):
    return VENDOR.parse(body if body is not None else json.dumps(payload).encode(), payload)


def test_id_is_sha256_of_type_resource_and_body():
    """Healthie sends no id: sha256(event_type \\n resource_id \\n raw body)."""
    event = _parse(json.loads(BODY), BODY)
    digest = hashlib.sha256(b"appointment.transcript_available\n67890\n" + BODY).hexdigest()
    assert (
        event.event_id
        == "sha256:" + digest
        == event_id("appointment.transcript_available", "67890", BODY)
    )
    assert event.subject == "healthie:appointment:67890"
    assert event.occurred_at is None


def test_integer_and_string_resource_ids_give_the_same_subject():
    """resource_id may be an integer or a string."""
    as_int = {
        "resource_id": 12345,
        "resource_id_type": "Appointment",
        "event_type": "appointment.recording_started",
    }
    as_str = {**as_int, "resource_id": "12345"}
    assert _parse(as_int).subject == _parse(as_str).subject == "healthie:appointment:12345"


@pytest.mark.parametrize("resource_id", [True, None, "", 1.5, {"id": 1}])
def test_resource_id_must_be_an_id(resource_id):
    """A boolean, empty, fractional or structured resource_id is refused."""
    payload = {
        "resource_id": resource_id,
        "resource_id_type": "Appointment",
        "event_type": "appointment.recording_stopped",
    }
    with pytest.raises(PayloadValidationError, match="resource_id"):
        _parse(payload)


@pytest.mark.parametrize("event_type", ["user.created", "form_answer_group.signed", "goal.updated"])
def test_any_word_dot_word_type_is_stored_unhandled(event_type):
    """Healthie's other 170-odd event types are accepted and stored unhandled."""
    payload = {"resource_id": 9, "resource_id_type": "FormAnswerGroup", "event_type": event_type}
    event = _parse(payload)
    assert (event.handled, event.subject) == (False, "healthie:formanswergroup:9")


@pytest.mark.parametrize(
    "event_type", ["Appointment.Created", "appointment", "a.b.c", "a-b.c", "a.b "]
)
def test_types_outside_word_dot_word_are_refused(event_type):
    """A type not matching ^[a-z0-9_]+\\.[a-z0-9_]+$ is a 422."""
    payload = {"resource_id": 9, "resource_id_type": "Appointment", "event_type": event_type}
    with pytest.raises(PayloadValidationError, match="event_type"):
        _parse(payload)


def test_participant_event_reads_event_ts():
    """participant_joined carries who and when; event_ts becomes occurred_at."""
    payload = VENDOR.sample(
        "appointment.participant_joined", datetime(2024, 3, 1, 9, 30, tzinfo=UTC), 2
    )
    assert {"host_user_id", "user_name", "user_email", "event_ts"} <= set(payload)
    assert _parse(payload).occurred_at == datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


def test_participant_pii_never_in_errors():
    """A participant payload with a bad field is refused without quoting name or email."""
    payload = VENDOR.sample("appointment.participant_left", datetime(2024, 3, 1, tzinfo=UTC), 1)
    payload["event_ts"] = "CANARY-PHI-7f3a"
    payload["user_name"] = ["CANARY-PHI-7f3a"]
    with pytest.raises(PayloadValidationError) as caught:
        _parse(payload)
    assert "CANARY" not in str(caught.value)
    assert payload["user_email"] not in str(caught.value)
    assert {"event_ts", "user_name"} <= set(caught.value.reason.replace(":", " ").split())


def test_changed_fields_must_be_a_list_of_names():
    """changed_fields, when present, is a list of field names."""
    payload = {
        "resource_id": 1,
        "resource_id_type": "Appointment",
        "event_type": "appointment.transcript_failed",
        "changed_fields": "status",
    }
    with pytest.raises(PayloadValidationError, match="changed_fields"):
        _parse(payload)
