"""Parsing WebVTT transcripts into items, and choosing which Healthie transcript to file."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carehook.errors import PermanentError
from carehook.workflows.ports import TranscriptLink
from carehook.workflows.transcripts import pick_transcript
from carehook.workflows.vtt import normalise_name, parse_vtt, speaker_roles

ROLES = speaker_roles("Dr. Maya Okafor", "Jordan Avery")
CANARY = "CANARY-chest-pain-91b"


def test_voice_spans_and_zoom_prefixes_give_roles_text_and_milliseconds() -> None:
    """``<v Name>`` and ``Name: text`` both name the speaker; offsets are exact milliseconds."""
    text = ("WEBVTT\n\n1\n00:00:01.250 --> 00:00:03.900\n<v Dr. Maya Okafor>How are you?\n\n"
            "2\n00:00:04.000 --> 00:01:02.005\nJordan Avery: Better, thanks.\n\n"
            "3\n01:00:00.000 --> 01:00:01.000\nInterpreter: (translating)\n")
    items = parse_vtt(text, ROLES, "t")
    assert [(i.speaker, i.text, i.start_ms, i.end_ms) for i in items] == [
        ("DOCTOR", "How are you?", 1250, 3900),
        ("PATIENT", "Better, thanks.", 4000, 62005),
        ("UNSPECIFIED", "(translating)", 3_600_000, 3_601_000),
    ]


def test_names_match_without_case_punctuation_or_honorific() -> None:
    """``DR MAYA OKAFOR`` and ``maya okafor`` are the provider; generic labels map too."""
    assert normalise_name("Dr. Maya  Okafor") == normalise_name("maya okafor") == "maya okafor"
    text = ("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nDR MAYA OKAFOR: one\n\n"
            "00:00:02.000 --> 00:00:03.000\n<v Patient>two\n\n"
            "00:00:03.000 --> 00:00:04.000\n<v Provider>three\n")
    assert [i.speaker for i in parse_vtt(text, ROLES, "t")] == ["DOCTOR", "PATIENT", "DOCTOR"]


def test_sentences_with_colons_are_not_mistaken_for_speakers() -> None:
    """A cue without a name prefix keeps its whole text and an unknown speaker."""
    text = ("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nThe plan is simple, really: rest and fluids."
            "\n\n00:00:02.000 --> 00:00:03.000\nTake 2: one at night\n")
    items = parse_vtt(text, ROLES, "t")
    assert [(i.speaker, i.text) for i in items] == [
        ("UNSPECIFIED", "The plan is simple, really: rest and fluids."),
        ("UNSPECIFIED", "Take 2: one at night")]


def test_cues_are_ordered_by_start_and_multi_line_cues_joined() -> None:
    """Out-of-order cues come back in spoken order; a cue's lines become one text."""
    text = ("WEBVTT\n\n00:00:05.000 --> 00:00:06.000\n<v Jordan Avery>second\n\n"
            "00:00:01.000 --> 00:00:02.000\n<v Dr. Maya Okafor>first line\nand more\n\n"
            "00:00:03.000 --> 00:00:04.000\n\n")
    items = parse_vtt(text, ROLES, "t")
    assert [i.text for i in items] == ["first line and more", "second"]


@pytest.mark.parametrize("text", ["", f"not a vtt file {CANARY}", f"<html>{CANARY}</html>"])
def test_a_malformed_file_is_permanent_and_quotes_nothing(text: str) -> None:
    """webvtt-py's refusal becomes one permanent error naming the transcript only."""
    with pytest.raises(PermanentError) as caught:
        parse_vtt(text, ROLES, "healthie transcript 9")
    assert str(caught.value) == "healthie transcript 9: not a valid WebVTT file"


def _link(tid: str, kind: str, status: str = "completed", hour: int = 10) -> TranscriptLink:
    return TranscriptLink(tid, status, kind, f"https://x/{tid}",
                          ends_at=datetime(2026, 3, 2, hour, tzinfo=UTC))  # fmt: skip


def test_the_processed_recording_is_filed_over_the_realtime_capture() -> None:
    """Completed only; processed recording first; of one type, the latest."""
    links = [_link("a", "realtime_capture", hour=12), _link("b", "processed_recording", hour=9),
             _link("c", "processed_recording", hour=11), _link("d", "processed_recording",
                                                               "processing", hour=13)]  # fmt: skip
    chosen = pick_transcript(links)
    assert chosen is not None
    assert chosen.transcript_id == "c"
    chosen = pick_transcript([_link("a", "realtime_capture"), _link("x", "processed_recording",
                                                                    "failed")])  # fmt: skip
    assert chosen is not None
    assert chosen.transcript_id == "a"
    assert pick_transcript([_link("p", "processed_recording", "processing")]) is None


def test_crlf_notes_cue_settings_short_stamps_and_markup_are_read() -> None:
    """What real files carry: CRLF, NOTE blocks, cue settings, mm:ss.ttt, voice classes, tags."""
    text = ("WEBVTT\r\n\r\nNOTE exported by Zoom\r\n\r\n1\r\n00:00:01.000 --> 00:00:02.000 "
            "align:start\r\nDr. Maya Okafor: hello\r\n\r\n00:01.500 --> 00:03.000\r\n"
            "<v.loud Jordan Avery>hey <b>you</b>\r\n")
    assert [(i.speaker, i.text, i.start_ms) for i in parse_vtt(text, ROLES, "t")] == [
        ("DOCTOR", "hello", 1000), ("PATIENT", "hey you", 1500)]
