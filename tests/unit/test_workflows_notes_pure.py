"""The pure halves of the note and transcript workflows: dot phrases, Nabla note and transcript
parsing, and the transcript's round trip through working data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from carehook.vendors.nabla import VENDOR as NABLA
from carehook.workflows import StepContext, WorkItem
from carehook.workflows.ports import NoteSection
from carehook.workflows.transcripts import (
    FREE_TEXT_KEY,
    merge_dot_phrases,
    nabla_note,
    nabla_transcript,
    transcript_from_state,
    transcript_to_state,
)

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def _ctx(payload: dict[str, Any]) -> StepContext:
    item = WorkItem(pk=1, source="nabla", vendor="nabla", event_id="e1", type=payload["type"],
                    subject="nabla:job:j", attempts=1, received_at=NOW, payload=payload)
    return StepContext(item=item, now=NOW)


def _suggest(key: str | None, text: str) -> dict[str, Any]:
    section = None if key is None else {"key": key, "title": key.title()}
    return {"dot_phrase": {"id": "d", "trigger": ".x", "replacement": "r"},
            "note_section": section, "text_to_insert": text}  # fmt: skip


def test_a_dot_phrase_for_a_present_section_is_appended_to_it() -> None:
    """Rule 2: the suggested section exists, so the text goes at its end."""
    merged = merge_dot_phrases([NoteSection("PLAN", "Plan", "Rest.")],
                               [_suggest("PLAN", "Fluids.")])  # fmt: skip
    assert [(s.key, s.text) for s in merged] == [("PLAN", "Rest.\n\nFluids.")]


def test_a_dot_phrase_for_an_absent_section_adds_that_section() -> None:
    """Rule 3: the suggested section is missing, so it is added with Nabla's key and title."""
    merged = merge_dot_phrases([NoteSection("PLAN", "Plan", "Rest.")],
                               [_suggest("APPOINTMENTS", "Six weeks.")])  # fmt: skip
    assert [(s.key, s.title, s.text) for s in merged] == [
        ("PLAN", "Plan", "Rest."), ("APPOINTMENTS", "Appointments", "Six weeks.")]


def test_a_dot_phrase_without_a_section_goes_to_the_free_text_section() -> None:
    """Rule 1: no suggestion, so the default free-text section (created once) takes them all."""
    merged = merge_dot_phrases([], [_suggest(None, "One."), _suggest(None, "Two.")])
    assert [(s.key, s.text) for s in merged] == [(FREE_TEXT_KEY, "One.\n\nTwo.")]


def test_the_sample_nabla_note_merges_all_three_rules_and_keeps_the_external_id() -> None:
    """The simulated note: plan appended, APPOINTMENTS added, return precautions in free text."""
    payload = NABLA.sample("generate_note_async.succeeded", NOW, 3)
    note = nabla_note(_ctx(payload))
    keys = [s.key for s in note.sections]
    assert keys[-2:] == ["APPOINTMENTS", FREE_TEXT_KEY]
    plan = next(s for s in note.sections if s.key == "ASSESSMENT_AND_PLAN")
    assert plan.text.endswith("high pollen days.")
    assert note.note_id == payload["data"]["id"]
    assert note.external_id == payload["data"].get("external_id")
    assert "pollen" not in repr(note)


def test_a_nabla_transcript_keeps_order_speakers_and_offsets_through_working_data() -> None:
    """Items stay in spoken order with speaker and offsets, and survive the JSON round trip."""
    payload = NABLA.sample("transcribe_async.succeeded", NOW, 3)
    payload["data"]["payload"]["transcript"][0]["speaker"] = "patient"
    payload["data"]["payload"]["transcript"][0].pop("speaker_type", None)
    t = nabla_transcript(_ctx(payload))
    raw = payload["data"]["payload"]["transcript"]
    assert [i.text for i in t.items] == [r["text"] for r in raw]
    assert t.items[0].speaker == "PATIENT"
    assert [(i.start_ms, i.end_ms) for i in t.items] == [
        (r.get("start_offset_ms"), r.get("end_offset_ms")) for r in raw]
    assert transcript_from_state(transcript_to_state(t)) == t
