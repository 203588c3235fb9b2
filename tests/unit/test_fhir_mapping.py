"""The pure FHIR mapping: notes, transcripts and providers to valid R4 JSON, and back."""

from __future__ import annotations

import ast
import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.practitioner import Practitioner

from carehook.connectors.fhir import mapping
from carehook.errors import PermanentError
from carehook.workflows.ports import (
    ClinicalNote,
    NoteSection,
    Provider,
    Transcript,
    TranscriptItem,
)

CANARY = "CANARY-PHI-7731"
WHEN = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


def _note(**changes: Any) -> ClinicalNote:
    note = ClinicalNote(
        vendor="nabla",
        note_id="note-1",
        sections=(
            NoteSection("CHIEF_COMPLAINT", "Chief complaint", f"Cough for a week. {CANARY}"),
            NoteSection("ASSESSMENT_AND_PLAN", "Assessment & plan", "Rest <fluids> & review."),
        ),
        title="Follow-up visit",
        patient_id="pat-1",
        encounter_id="enc-1",
        author_id="prac-1",
        created_at=WHEN,
        locale="ENGLISH_US",
        external_id="ext-9",
    )
    return replace(note, **changes)


def _transcript(**changes: Any) -> Transcript:
    items = (
        TranscriptItem("DOCTOR", f"What brings you in? {CANARY}", 0, 2_400),
        TranscriptItem("PATIENT", "A cough.", 65_000, 66_500),
        TranscriptItem("UNSPECIFIED", "(door closes)", None, None),
    )
    transcript = Transcript(vendor="healthie", transcript_id="tr-1", items=items,
                            patient_id="pat-1", encounter_id="enc-1", language="en-US",
                            created_at=WHEN)  # fmt: skip
    return replace(transcript, **changes)


def _data(attachment: dict[str, Any]) -> bytes:
    return base64.b64decode(attachment["data"])


# -- DocumentReference of a note ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["preliminary", "amended", "final"])
def test_note_document_reference_is_valid_r4(status: str) -> None:
    """The note becomes a DocumentReference the R4 model accepts, with the docStatus asked for."""
    resource = mapping.note_document_reference(_note(), status)
    DocumentReference.model_validate(resource)
    assert (resource["status"], resource["docStatus"]) == ("current", status)
    assert mapping.doc_status(resource) == status


def test_note_document_reference_identifies_and_types_the_note() -> None:
    """Identifier = vendor note system | note id; external id second; LOINC progress note."""
    resource = mapping.note_document_reference(_note(), "preliminary")
    assert resource["identifier"] == [
        {"system": "urn:carehook:nabla:note", "value": "note-1"},
        {"system": "urn:carehook:nabla:external-id", "value": "ext-9"},
    ]
    assert resource["type"]["coding"] == [
        {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}
    ]
    assert resource["subject"] == {"reference": "Patient/pat-1"}
    assert resource["author"] == [{"reference": "Practitioner/prac-1"}]
    assert resource["context"]["encounter"] == [{"reference": "Encounter/enc-1"}]
    assert resource["date"] == "2026-03-04T09:30:00Z"


def test_note_attachment_holds_the_rendered_note_and_its_hash() -> None:
    """One text attachment: title, section titles and texts; hash is base64 SHA-1 of the data."""
    [content] = mapping.note_document_reference(_note(), "final")["content"]
    attachment = content["attachment"]
    text = _data(attachment).decode("utf-8")
    assert text.startswith("Follow-up visit\n\nChief complaint\nCough for a week.")
    assert "Assessment & plan\nRest <fluids> & review." in text
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(_data(attachment)).digest()).decode()
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert (attachment["language"], attachment["title"]) == ("en-US", "Follow-up visit")
    assert attachment["creation"] == "2026-03-04T09:30:00Z"


def test_note_without_ehr_ids_leaves_references_out() -> None:
    """Unknown patient, encounter, author and time are omitted, and the result still validates."""
    note = _note(patient_id=None, encounter_id=None, author_id=None, created_at=None, locale=None)
    resource = mapping.note_document_reference(note, "preliminary")
    DocumentReference.model_validate(resource)
    assert not {"subject", "author", "context", "date"} & resource.keys()


def test_existing_keeps_id_and_meta_for_an_update() -> None:
    """With ``existing``, the stored id and meta are kept so the result can be PUT."""
    existing = {"resourceType": "DocumentReference", "id": "42", "meta": {"versionId": "3"}}
    resource = mapping.note_document_reference(_note(), "amended", existing=existing)
    assert (resource["id"], resource["meta"]) == ("42", {"versionId": "3"})


def test_bad_arguments_are_value_errors() -> None:
    """An unknown docStatus or vendor is the caller's bug."""
    with pytest.raises(ValueError, match="docStatus"):
        mapping.note_document_reference(_note(), "draft")
    with pytest.raises(ValueError, match="vendor"):
        mapping.note_document_reference(_note(vendor="openevidence"), "final")


def test_vendor_data_fhir_cannot_carry_is_permanent_and_names_no_value() -> None:
    """An id FHIR refuses becomes a PermanentError naming the field, not its value."""
    with pytest.raises(PermanentError, match=r"DocumentReference\.id") as info:
        mapping.note_document_reference(_note(), "final", existing={"id": f"bad id {CANARY}"})
    assert CANARY not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


# -- Composition ---------------------------------------------------------------------------------


def test_composition_is_valid_and_sectioned() -> None:
    """A Composition with one section per note section, in order, and the note's identifier."""
    resource = mapping.note_composition(_note(), "42", status="final")
    Composition.model_validate(resource)
    assert resource["status"] == "final"
    assert resource["identifier"] == {"system": "urn:carehook:nabla:note", "value": "note-1"}
    assert resource["type"]["coding"][0]["code"] == "11506-3"
    assert [s["title"] for s in resource["section"]] == ["Chief complaint", "Assessment & plan"]
    assert resource["relatesTo"] == [
        {"code": "transforms", "targetReference": {"reference": "DocumentReference/42"}}
    ]
    assert resource["encounter"] == {"reference": "Encounter/enc-1"}


def test_composition_defaults_to_preliminary_without_a_document_link() -> None:
    """Status defaults to preliminary; no DocumentReference id means no relatesTo."""
    resource = mapping.note_composition(_note(), None)
    assert resource["status"] == "preliminary"
    assert "relatesTo" not in resource


@pytest.mark.parametrize(("key", "coded"), sorted(mapping.LOINC_SECTIONS.items()))
def test_every_known_section_key_gets_its_loinc_code(key: str, coded: tuple[str, str]) -> None:
    """Each mapped vendor key yields a LOINC-coded section."""
    note = _note(sections=(NoteSection(key, "Some title", "Some text."),))
    [section] = mapping.note_composition(note, None)["section"]
    assert section["code"]["coding"] == [
        {"system": "http://loinc.org", "code": coded[0], "display": coded[1]}
    ]


def test_loinc_section_table_holds_the_agreed_codes() -> None:
    """The section codes the design names (C-CDA section LOINC codes)."""
    expected = {
        "CHIEF_COMPLAINT": "10154-3", "HISTORY_OF_PRESENT_ILLNESS": "10164-2",
        "ASSESSMENT_AND_PLAN": "51847-2",
        "PLAN": "18776-5", "ALLERGIES": "48765-2", "CURRENT_MEDICATIONS": "10160-0",
        "PHYSICAL_EXAM": "29545-1", "VITALS": "8716-3", "PAST_MEDICAL_HISTORY": "11348-0",
        "FAMILY_HISTORY": "10157-6", "SOCIAL_HISTORY": "29762-2", "REVIEW_OF_SYSTEMS": "10187-3",
        "ASSESSMENT": "51848-0", "IMMUNIZATIONS": "11369-6", "LAB_RESULTS": "30954-2",
        "PROCEDURES": "47519-4",
    }  # fmt: skip
    assert {key: mapping.LOINC_SECTIONS[key][0] for key in expected} == expected
    assert mapping.LOINC_SECTIONS["CHIEF_COMPLAINT"][1] == "Chief complaint Narrative - Reported"


@pytest.mark.parametrize("key", ["IMAGING_RESULTS", "PRESCRIPTION", "APPOINTMENTS", "MADE_UP"])
def test_a_key_without_a_true_loinc_code_stays_uncoded(key: str) -> None:
    """No invented code: the section keeps its title and text only."""
    note = _note(sections=(NoteSection(key, "Other", "Some text."),))
    [section] = mapping.note_composition(note, None)["section"]
    assert "code" not in section
    assert section["title"] == "Other"


def test_section_narrative_is_escaped_xhtml() -> None:
    """Section text becomes an escaped XHTML div, one paragraph per line."""
    note = _note(sections=(NoteSection("PLAN", "Plan", "Rest <b>now</b> & drink\nReturn in 2w"),))
    [section] = mapping.note_composition(note, None)["section"]
    assert section["text"] == {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Rest &lt;b&gt;now&lt;/b&gt; &amp; '
        "drink</p><p>Return in 2w</p></div>",
    }


def test_an_empty_section_says_why() -> None:
    """An empty section still has narrative (FHIR requires it) and an emptyReason."""
    note = _note(sections=(NoteSection("PLAN", "Plan", "  "),))
    [section] = mapping.note_composition(note, None)["section"]
    assert section["emptyReason"]["coding"][0]["code"] == "unavailable"
    Composition.model_validate(mapping.note_composition(note, None))


def test_composition_without_author_names_the_ai_scribe() -> None:
    """Composition.author is required: without an author id it is the vendor's AI scribe."""
    resource = mapping.note_composition(_note(author_id=None), None)
    assert resource["author"] == [{"display": "nabla AI scribe"}]


def test_composition_date_falls_back_to_the_given_date() -> None:
    """A note without created_at takes ``date=`` (a Composition must have a date)."""
    resource = mapping.note_composition(_note(created_at=None), None, date=WHEN)
    assert resource["date"] == "2026-03-04T09:30:00Z"


# -- transcripts ---------------------------------------------------------------------------------


def test_transcript_document_reference_is_valid_and_identified() -> None:
    """A valid DocumentReference with the transcript identifier and carehook's transcript type."""
    resource = mapping.transcript_document_reference(_transcript(external_id="ext-1"))
    DocumentReference.model_validate(resource)
    assert resource["identifier"] == [
        {"system": "urn:carehook:healthie:transcript", "value": "tr-1"},
        {"system": "urn:carehook:healthie:external-id", "value": "ext-1"},
    ]
    assert resource["type"]["coding"] == [
        {"system": "urn:carehook:document-type", "code": "transcript",
         "display": "Encounter transcript"}
    ]  # fmt: skip


def test_transcript_is_one_utf8_text_attachment() -> None:
    """Exactly one content entry, ``text/plain; charset=utf-8`` inline (what Epic and Oracle keep),
    with the transcript's language, creation time and a base64 SHA-1 hash of the data."""
    [content] = mapping.transcript_document_reference(_transcript())["content"]
    attachment = content["attachment"]
    assert attachment["contentType"] == "text/plain; charset=utf-8"
    assert (attachment["title"], attachment["language"]) == ("Transcript", "en-US")
    assert attachment["creation"] == "2026-03-04T09:30:00Z"
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(_data(attachment)).digest()).decode()
    assert attachment["size"] == len(_data(attachment))


def test_transcript_text_keeps_order_speakers_and_offsets() -> None:
    """One ``[start-end] SPEAKER: text`` line per item in spoken order, offsets as HH:MM:SS.mmm,
    ``??:??:??.???`` when unknown."""
    [content] = mapping.transcript_document_reference(_transcript())["content"]
    assert _data(content["attachment"]).decode("utf-8") == (
        f"[00:00:00.000-00:00:02.400] DOCTOR: What brings you in? {CANARY}\n"
        "[00:01:05.000-00:01:06.500] PATIENT: A cough.\n"
        "[??:??:??.???-??:??:??.???] UNSPECIFIED: (door closes)\n"
    )


def test_transcript_text_reads_back_into_the_same_items() -> None:
    """The text parses back into every item, in order, with speaker, text and offsets."""
    [content] = mapping.transcript_document_reference(_transcript())["content"]
    parsed = mapping.parse_transcript_lines(_data(content["attachment"]).decode("utf-8"))
    assert parsed == list(_transcript().items)


def test_transcript_text_of_long_and_multi_line_items() -> None:
    """Hours past the first, and a line break in an item's text (a continuation line indented by
    two spaces), still read back exactly; ``\\r\\n`` is written as a plain line break."""
    items = (TranscriptItem("PATIENT", "Mostly at night,\r\n  and when lying down.", 3_725_004,
                            3_730_999),
             TranscriptItem("DOCTOR", "", 360_000_000, None))  # fmt: skip
    text = mapping.transcript_lines(items)
    assert text == ("[01:02:05.004-01:02:10.999] PATIENT: Mostly at night,\n"
                    "    and when lying down.\n"
                    "[100:00:00.000-??:??:??.???] DOCTOR: \n")  # fmt: skip
    assert mapping.parse_transcript_lines(text) == [
        TranscriptItem("PATIENT", "Mostly at night,\n  and when lying down.", 3_725_004, 3_730_999),
        items[1],
    ]


@pytest.mark.parametrize("text", ["DOCTOR [00:00] hi\n", "[00:00:00.000-00:00:01.000] hi\n",
                                  "  orphan continuation\n"])  # fmt: skip
def test_a_line_that_is_not_an_item_is_refused_by_number(text: str) -> None:
    """The reader refuses a line of another form, naming its number and not its content."""
    with pytest.raises(ValueError, match="line 1 ") as info:
        mapping.parse_transcript_lines(text)
    assert "hi" not in str(info.value)
    assert "orphan" not in str(info.value)


def test_transcript_of_an_unknown_vendor_is_refused() -> None:
    """Only vendors with a transcript identifier system are mapped."""
    with pytest.raises(ValueError, match="vendor"):
        mapping.transcript_document_reference(_transcript(vendor="abridge"))


# -- Practitioner --------------------------------------------------------------------------------


def test_practitioner_carries_ids_name_email_and_status() -> None:
    """Provider id and NPI identifiers, official name, email, active flag; valid R4."""
    provider = Provider("prov-1", "Rivera", ("Ana", "M"), npi="1234567893",
                        email="ana@example.org", active=False)  # fmt: skip
    resource = mapping.practitioner(provider, existing={"id": "7", "meta": {"versionId": "1"}})
    Practitioner.model_validate(resource)
    assert resource["identifier"] == [
        {"system": "urn:carehook:abridge:provider", "value": "prov-1"},
        {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
    ]
    assert resource["name"] == [{"use": "official", "family": "Rivera", "given": ["Ana", "M"]}]
    assert resource["telecom"] == [{"system": "email", "value": "ana@example.org"}]
    assert (resource["active"], resource["id"]) == (False, "7")


def test_practitioner_without_npi_or_email() -> None:
    """Optional parts are left out."""
    resource = mapping.practitioner(Provider("prov-2", "Okafor"))
    assert len(resource["identifier"]) == 1
    assert "telecom" not in resource


# -- identifiers and outcomes --------------------------------------------------------------------


def test_identifier_token_and_if_none_exist() -> None:
    """``system|value``; search separators escaped; the header is URL-encoded."""
    assert mapping.identifier_token("urn:a", "n-1") == "urn:a|n-1"
    assert mapping.identifier_token("urn:a", "x|y,z") == "urn:a|x\\|y\\,z"
    assert mapping.if_none_exist("urn:a", "n-1") == "identifier=urn:a|n-1"
    assert mapping.if_none_exist("urn:a", "a b&c") == "identifier=urn:a|a%20b%26c"


def test_operation_outcome_summary_never_echoes_diagnostics() -> None:
    """Severity, code and plain paths only; diagnostics and filtered expressions are dropped."""
    body = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": CANARY,
         "details": {"text": CANARY}, "expression": ["DocumentReference.subject"]},
        {"severity": "warning", "code": "business-rule",
         "expression": [f"Patient.name.where(family='{CANARY}')"]},
        {"severity": CANARY, "code": "invalid"},
    ]}  # fmt: skip
    summary = mapping.operation_outcome_summary(body)
    assert summary == (
        "error/invalid at DocumentReference.subject; warning/business-rule; ?/invalid"
    )


def test_operation_outcome_summary_is_short_and_total() -> None:
    """At most 200 characters; anything that is not an OperationOutcome says so."""
    issue = {"severity": "error", "code": "invalid", "expression": ["Composition.section[0]"]}
    many = {"resourceType": "OperationOutcome", "issue": [issue] * 50}
    summary = mapping.operation_outcome_summary(many)
    assert len(summary) <= 200
    assert summary.startswith("error/invalid at Composition.section[0]; ")
    assert mapping.operation_outcome_summary("<html>") == "no OperationOutcome"
    assert mapping.operation_outcome_summary({"resourceType": "Patient"}) == "no OperationOutcome"


def test_validate_names_locations_only() -> None:
    """An invalid resource is refused naming its fields, never their values."""
    bad = {"resourceType": "DocumentReference", "status": "current", "date": CANARY,
           "content": [{"attachment": {"creation": CANARY}}]}  # fmt: skip
    assert mapping.invalid_locations(bad) == [
        "DocumentReference.content[0].attachment.creation",
        "DocumentReference.date",
    ]
    with pytest.raises(PermanentError) as info:
        mapping.validate(bad)
    assert CANARY not in str(info.value)
    assert mapping.invalid_locations({"resourceType": "NoSuchThing"}) == [
        "NoSuchThing.resourceType"
    ]


def test_values_keep_clinical_text_out_of_repr() -> None:
    """Printing a note, transcript or provider shows ids, never text or names."""
    provider = Provider("p", CANARY, (CANARY,), email=CANARY)
    for value in (_note(), _note().sections[0], _transcript(), _transcript().items[0], provider):
        assert CANARY not in repr(value)


def test_mapping_imports_no_io_library() -> None:
    """The mapping is pure: no httpx, starlette or sqlalchemy import."""
    source = Path(mapping.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"httpx", "starlette", "sqlalchemy", "uvicorn", "psycopg"}
