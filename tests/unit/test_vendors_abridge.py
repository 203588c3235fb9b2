"""Abridge payloads: required ids per type, subjects that keep an encounter in order, times."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from carehook.errors import PayloadValidationError
from carehook.signatures import SchemeOptions
from carehook.signatures.abridge import AbridgeScheme
from carehook.vendors.abridge import VENDOR


def _parse(payload):
    return VENDOR.parse(json.dumps(payload).encode(), payload)


def _event(event_type: str, data: dict, **extra) -> dict:
    return {
        "event_id": "evt_1",
        "type": event_type,
        "timestamp": 1_700_000_000,
        "data": data,
        **extra,
    }


def test_event_id_type_and_unix_timestamp():
    """event_id is the id; a unix timestamp becomes an aware UTC datetime."""
    event = _parse(_event("encounter.session.completed", {"session_id": "ses_9"}))
    assert event.event_id == "evt_1"
    assert event.type == "encounter.session.completed"
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert event.handled


def test_iso_timestamp_with_offset_is_normalised_to_utc():
    """An ISO 8601 timestamp with an offset is converted to UTC."""
    payload = _event(
        "encounter.session.failed", {"session_id": "s"}, timestamp="2024-01-01T10:00:00+02:00"
    )
    assert _parse(payload).occurred_at == datetime(2024, 1, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("event_type", ["encounter.note.reviewed", "encounter.note.signed"])
def test_note_events_follow_their_session(event_type):
    """A note event with a session is about the encounter, so it stays in order with it."""
    event = _parse(_event(event_type, {"session_id": "ses_1", "note_id": "note_1"}))
    assert event.subject == "abridge:session:ses_1"


def test_note_event_without_session_is_about_the_note():
    """Without a session id, a note event's subject is the note."""
    assert _parse(_event("encounter.note.signed", {"note_id": "n7"})).subject == "abridge:note:n7"


def test_note_event_without_session_or_note_is_refused():
    """A note event naming neither session nor note cannot be routed: 422."""
    with pytest.raises(PayloadValidationError, match="session_or_note_id_missing"):
        _parse(_event("encounter.note.reviewed", {"status": "reviewed"}))


def test_provider_enrolled_is_about_the_provider():
    """provider.enrolled's subject is the provider, even if a session id is present."""
    event = _parse(_event("provider.enrolled", {"provider_id": "p1", "session_id": "s1"}))
    assert event.subject == "abridge:provider:p1"


@pytest.mark.parametrize(
    ("event_type", "missing"),
    [
        ("encounter.session.completed", "data.session_id"),
        ("provider.enrolled", "data.provider_id"),
        ("quality.alert", "data.session_id"),
        ("patient.summary.ready", "data.session_id"),
    ],
)
def test_missing_subject_id_is_named(event_type, missing):
    """A known type without its subject id is refused, naming the field."""
    with pytest.raises(PayloadValidationError) as caught:
        _parse(_event(event_type, {"status": "x"}))
    assert f"{missing}: missing" in caught.value.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("timestamp", "not a time"), ("timestamp", None), ("data", "x"), ("event_id", "")],
)
def test_malformed_envelope_fields_are_refused(field, value):
    """Bad timestamp, data or event_id in a known type are 422s naming the field."""
    payload = _event("quality.alert", {"session_id": "s", "quality_score": 0.5})
    payload[field] = value
    with pytest.raises(PayloadValidationError, match=field):
        _parse(payload)


def test_quality_score_must_be_a_number():
    """quality_score, when present, must be numeric (the review threshold compares it)."""
    with pytest.raises(PayloadValidationError, match=r"data.quality_score"):
        _parse(_event("quality.alert", {"session_id": "s", "quality_score": "low"}))


def test_unknown_type_keeps_best_subject_and_lenient_time():
    """An unknown type still needs event_id; subject and time are read when usable."""
    event = _parse(
        {
            "event_id": "e",
            "type": "encounter.audio.uploaded",
            "timestamp": "garbage",
            "data": {"note_id": "n"},
        }
    )
    assert (event.subject, event.occurred_at, event.handled) == ("abridge:note:n", None, False)
    with pytest.raises(PayloadValidationError, match="event_id"):
        _parse({"type": "encounter.audio.uploaded"})


def test_extra_fields_are_allowed():
    """Fields Abridge adds later do not break validation."""
    payload = _event("encounter.session.completed", {"session_id": "s", "new": [1]}, version=2)
    assert _parse(payload).handled


def test_scheme_is_bound_to_options():
    """The vendor's scheme is Abridge's, with the source's options."""
    scheme = VENDOR.scheme(SchemeOptions(tolerance_seconds=30))
    assert isinstance(scheme, AbridgeScheme)
    assert scheme.tolerance_seconds == 30
