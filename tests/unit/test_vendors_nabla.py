"""Nabla payloads: job subjects, notes with dot phrases, transcripts with either speaker field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from carehook.errors import PayloadValidationError
from carehook.vendors.nabla import VENDOR, TranscriptPayload

NOW = datetime(2024, 11, 23, tzinfo=UTC)


def _parse(payload):
    return VENDOR.parse(json.dumps(payload).encode(), payload)


def _sample(event_type: str) -> dict:
    return VENDOR.sample(event_type, NOW, 4)


def test_subject_is_the_job_not_the_external_id():
    """The subject is nabla:job:<data.id>; external_id is left to the workflow."""
    payload = _sample("generate_note_async.succeeded")
    event = _parse(payload)
    assert event.subject == f"nabla:job:{payload['data']['id']}"
    assert payload["data"]["external_id"] not in event.subject
    assert event.occurred_at == NOW


def test_external_id_is_optional_but_bounded():
    """external_id may be absent; over 128 characters it is refused."""
    payload = _sample("transcribe_async.failed")
    del payload["data"]["external_id"]
    assert _parse(payload).handled
    payload["data"]["external_id"] = "x" * 129
    with pytest.raises(PayloadValidationError, match=r"data.external_id: string_too_long"):
        _parse(payload)


def test_status_must_be_nablas():
    """data.status is one of ONGOING, FAILED, SUCCEEDED."""
    payload = _sample("transcribe_async.succeeded")
    payload["data"]["status"] = "DONE"
    with pytest.raises(PayloadValidationError, match=r"data.status: literal_error"):
        _parse(payload)


def test_note_requires_sections():
    """A succeeded note without sections is refused, naming the location."""
    payload = _sample("generate_note_async.succeeded")
    del payload["data"]["payload"]["note"]["sections"]
    with pytest.raises(PayloadValidationError, match=r"data.payload.note.sections: missing"):
        _parse(payload)


def test_note_succeeded_without_payload_is_refused():
    """generate_note_async.succeeded must carry its note."""
    payload = _sample("generate_note_async.succeeded")
    payload["data"]["payload"] = None
    with pytest.raises(PayloadValidationError, match=r"data.payload"):
        _parse(payload)


def test_failed_events_need_no_payload():
    """A failed job may come without payload."""
    payload = _sample("generate_note_async.failed")
    del payload["data"]["payload"]
    assert _parse(payload).handled


def test_dot_phrase_without_section_is_valid():
    """A suggested dot phrase may have no note_section (the receiver picks a default)."""
    payload = _sample("generate_note_async.succeeded")
    phrases = payload["data"]["payload"]["suggested_dot_phrases"]
    assert any(phrase["note_section"] is None for phrase in phrases)
    phrases[0]["note_section"] = {"key": "PLAN"}  # no title: titled from the key downstream
    assert _parse(payload).handled
    phrases[0]["note_section"] = {"title": "Plan"}
    with pytest.raises(PayloadValidationError, match=r"note_section.key: missing"):
        _parse(payload)


@pytest.mark.parametrize(
    ("item", "speaker"),
    [
        ({"speaker_type": "DOCTOR"}, "DOCTOR"),
        ({"speaker": "PATIENT"}, "PATIENT"),
        ({"speaker": "patient"}, "PATIENT"),
        ({}, None),
        ({"speaker_type": "UNSPECIFIED", "speaker": "DOCTOR"}, "UNSPECIFIED"),
    ],
)
def test_transcript_speaker_from_either_field(item, speaker):
    """speaker_type (Nabla's sample app) or speaker (the brief) name who spoke."""
    transcript = TranscriptPayload.model_validate({"transcript": [{"text": "Hello", **item}]})
    assert transcript.transcript[0].speaker_type == speaker


def test_unknown_speaker_is_refused():
    """A speaker outside DOCTOR/PATIENT/UNSPECIFIED is refused."""
    payload = _sample("transcribe_async.succeeded")
    payload["data"]["payload"]["transcript"][0]["speaker_type"] = "NURSE"
    with pytest.raises(PayloadValidationError, match=r"transcript\.0\.speaker_type"):
        _parse(payload)


def test_unknown_type_uses_job_when_present():
    """An unknown type is unhandled; its subject is still the job when data.id is there."""
    event = _parse({"id": "e1", "type": "translate_async.succeeded", "data": {"id": "j1"}})
    assert (event.subject, event.handled) == ("nabla:job:j1", False)
    assert _parse({"id": "e2", "type": "ping.sent"}).subject == "nabla:event:e2"


def test_unknown_section_keys_and_untitled_sections_are_accepted():
    """A key outside Nabla's documented enum, or a section without a title, is not refused."""
    payload = _sample("generate_note_async.succeeded")
    sections = payload["data"]["payload"]["note"]["sections"]
    sections += [{"key": "REVIEW_OF_SYSTEMS", "title": "Review of systems", "text": "Negative."},
                 {"key": "SOMETHING_NEW_IN_2027", "text": "Kept."}]
    assert _parse(payload).handled
    sections.append({"key": "NO_TEXT", "title": "No text"})
    with pytest.raises(PayloadValidationError, match=r"note\.sections\.\d+\.text: missing"):
        _parse(payload)
