"""Synthetic Nabla payloads for ``carehook simulate`` and the fixtures (no real person)."""

from __future__ import annotations

import copy
from typing import Any

_NOTE: dict[str, Any] = {
    "title": "Follow-up consultation: seasonal allergic rhinitis",
    "locale": "ENGLISH_US",
    "template_key": "GENERAL_MEDICINE",
    "sections": [
        {
            "key": "CHIEF_COMPLAINT",
            "title": "Chief complaint",
            "text": "Nasal congestion and sneezing for three weeks.",
        },
        {
            "key": "HISTORY_OF_PRESENT_ILLNESS",
            "title": "History of present illness",
            "text": "Symptoms worse outdoors in the morning; partial relief with saline rinses. "
            "No fever, no facial pain.",
        },
        {
            "key": "CURRENT_MEDICATIONS",
            "title": "Current medications",
            "text": "Cetirizine 10 mg once daily as needed.",
        },
        {
            "key": "ASSESSMENT_AND_PLAN",
            "title": "Assessment & plan",
            "text": "Seasonal allergic rhinitis. Start intranasal fluticasone 50 mcg, two sprays "
            "per nostril daily. Review in six weeks.",
        },
    ],
}

_DOT_PHRASES: list[dict[str, Any]] = [
    {
        "dot_phrase": {
            "id": "dp_allergy_counsel",
            "title": "Allergen avoidance counselling",
            "trigger": ".allergycounsel",
            "replacement": "Discussed allergen avoidance: keep windows closed during high pollen "
            "counts, shower after outdoor activity.",
        },
        "note_section": {"key": "ASSESSMENT_AND_PLAN", "title": "Assessment & plan"},
        "text_to_insert": "Discussed allergen avoidance, including keeping windows closed on "
        "high pollen days.",
    },
    {
        "dot_phrase": {
            "id": "dp_followup",
            "title": "Follow-up",
            "trigger": ".fu6",
            "replacement": "Follow up in 6 weeks or sooner if symptoms worsen.",
        },
        "note_section": {"key": "APPOINTMENTS", "title": "Appointments"},
        "text_to_insert": "Follow up in 6 weeks or sooner if symptoms worsen.",
    },
    {
        "dot_phrase": {
            "id": "dp_return",
            "title": "Return precautions",
            "trigger": ".returnprec",
            "replacement": "Return if fever, facial pain or shortness of breath develops.",
        },
        "note_section": None,
        "text_to_insert": "Return if fever, facial pain or shortness of breath develops.",
    },
]

_TRANSCRIPT: list[dict[str, Any]] = [
    {
        "id": "ti_1",
        "text": "What brings you in today?",
        "speaker_type": "DOCTOR",
        "start_offset_ms": 0,
        "end_offset_ms": 1800,
        "is_final": True,
    },
    {
        "id": "ti_2",
        "text": "My nose has been blocked for about three weeks, mostly in the mornings.",
        "speaker_type": "PATIENT",
        "start_offset_ms": 2100,
        "end_offset_ms": 6400,
        "is_final": True,
    },
    {
        "id": "ti_3",
        "text": "Any fever or pain around the eyes?",
        "speaker": "DOCTOR",
        "start_offset_ms": 6900,
        "end_offset_ms": 8800,
        "is_final": True,
    },
]

_FAILURES = {
    "generate_note_async.failed": {
        "error": {"code": "TRANSCRIPT_TOO_SHORT", "message": "Not enough content to write a note."}
    },
    "transcribe_async.failed": {
        "error": {"code": "AUDIO_UNREADABLE", "message": "The audio could not be decoded."}
    },
}


def sample_payload(event_type: str) -> dict[str, Any]:
    """``data.payload`` of a sample Nabla event of ``event_type``."""
    payloads: dict[str, dict[str, Any]] = {
        "generate_note_async.succeeded": {"note": _NOTE, "suggested_dot_phrases": _DOT_PHRASES},
        "transcribe_async.succeeded": {"transcript": _TRANSCRIPT},
        **_FAILURES,
    }
    return copy.deepcopy(payloads[event_type])  # callers may edit their copy
