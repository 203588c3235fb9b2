"""Pure mapping of carehook's values to FHIR R4 resources as plain JSON dicts (no I/O here).

Every builder validates what it builds with the ``fhir.resources`` model of its type and returns
``model_dump(mode="json", exclude_none=True)``. ``fhir.resources`` 8.x ships R5 by default and
R4B (4.3.0) in ``fhir.resources.R4B``; R4 (4.0.1) proper is not shipped. R4B is identical to R4
for every resource used here (DocumentReference, Composition, Practitioner, Bundle,
OperationOutcome), so the JSON is valid R4.

Codes:

* note type: LOINC ``11506-3`` "Progress note" (the US Core clinical-note type; older LOINC
  releases display it as "Provider-unspecified progress note"), category US Core ``clinical-note``;
* note sections: the LOINC section codes of FHIR R4's ``doc-section-codes`` value set (the C-CDA
  sections), with their R4-era displays, where one truly exists for the vendor's section key
  (:data:`LOINC_SECTIONS`); any other key gets no code, never an invented one;
* transcript type: LOINC has no document code for an encounter transcript, so carehook's own
  ``urn:carehook:document-type|transcript`` ("Encounter transcript") is used.

Attachments: every DocumentReference has exactly ONE ``content`` entry, a ``text/plain;
charset=utf-8`` attachment with the data base64 inline (Epic keeps only the first attachment and
Oracle Health accepts exactly one; both keep Binary read-only). A note is its title, then each
section's title and text (:func:`render_note`). A transcript is one line per item, in spoken
order (:func:`transcript_lines`, read back by :func:`parse_transcript_lines`)::

    [00:00:01.250-00:00:03.000] DOCTOR: What brings you in?
    [00:01:05.000-00:01:06.500] PATIENT: A cough,
      mostly at night.
    [??:??:??.???-??:??:??.???] UNSPECIFIED: (door closes)

``[start-end]`` are the item's offsets from the start of the encounter as ``HH:MM:SS.mmm`` (hours
grow past 99 if they must), ``??:??:??.???`` when unknown; then the speaker (a role token:
DOCTOR, PATIENT, UNSPECIFIED), ``": "`` and the text. A line break inside an item's text
(``\\r\\n``, ``\\r`` or ``\\n``) starts a continuation line indented by two spaces; every line
ends with ``\\n``.

Identifiers: a note is ``NOTE_SYSTEM[vendor]|note_id`` (DocumentReference and Composition alike),
a transcript ``TRANSCRIPT_SYSTEM[vendor]|transcript_id``, a provider
``PRACTITIONER_SYSTEM|provider_id`` (plus the NPI); the vendor's correlation id, when present, is
a second identifier ``urn:carehook:<vendor>:external-id|<external_id>``.

Errors: a bad argument (unknown status or vendor) is a ``ValueError``, a bug in the caller; a
resource that fails its model (vendor data FHIR cannot carry) is a
:class:`~carehook.errors.PermanentError` naming field locations only, never a value
(``str(ValidationError)`` quotes the input, which may be PHI).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from carehook.errors import PermanentError
from carehook.workflows.ports import ClinicalNote, Provider, Transcript, TranscriptItem

NOTE_SYSTEM = {
    "abridge": "urn:carehook:abridge:note",
    "nabla": "urn:carehook:nabla:note",
    "healthie": "urn:carehook:healthie:note",
}
TRANSCRIPT_SYSTEM = {
    "nabla": "urn:carehook:nabla:transcript",
    "healthie": "urn:carehook:healthie:transcript",
}
PRACTITIONER_SYSTEM = "urn:carehook:abridge:provider"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
DOCUMENT_TYPE_SYSTEM = "urn:carehook:document-type"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
XHTML = "http://www.w3.org/1999/xhtml"

NOTE_TYPE = (LOINC, "11506-3", "Progress note")
TRANSCRIPT_TYPE = (DOCUMENT_TYPE_SYSTEM, "transcript", "Encounter transcript")

#: vendor section key -> LOINC (code, display). Nabla keys left out on purpose, for want of a
#: true LOINC section code: IMAGING_RESULTS, PRESCRIPTION, APPOINTMENTS, DIAGNOSTIC_TESTS_ORDERED,
#: CARDIOVASCULAR_RISK_FACTORS, MENTAL_HEALTH_HISTORY, FOOD_HABITS, LIFESTYLE,
#: OBJECTIVES_AND_ADVICE.
LOINC_SECTIONS: dict[str, tuple[str, str]] = {
    "CHIEF_COMPLAINT": ("10154-3", "Chief complaint Narrative - Reported"),
    "HISTORY_OF_PRESENT_ILLNESS": ("10164-2", "History of Present illness Narrative"),
    "REVIEW_OF_SYSTEMS": ("10187-3", "Review of systems Narrative - Reported"),
    "PAST_MEDICAL_HISTORY": ("11348-0", "History of Past illness Narrative"),
    "PAST_SURGICAL_HISTORY": ("10167-5", "History of Surgical procedures Narrative"),
    "PAST_OBSTETRIC_HISTORY": ("10162-6", "History of pregnancies Narrative"),
    "FAMILY_HISTORY": ("10157-6", "History of family member diseases Narrative"),
    "SOCIAL_HISTORY": ("29762-2", "Social history Narrative"),
    "ALLERGIES": ("48765-2", "Allergies and adverse reactions Document"),
    "CURRENT_MEDICATIONS": ("10160-0", "History of Medication use Narrative"),
    "IMMUNIZATIONS": ("11369-6", "History of Immunization Narrative"),
    "VITALS": ("8716-3", "Vital signs"),
    "PHYSICAL_EXAM": ("29545-1", "Physical findings Narrative"),
    "MENTAL_HEALTH_EXAM": ("10190-7", "Mental status Narrative"),
    "LAB_RESULTS": ("30954-2", "Relevant diagnostic tests/laboratory data Narrative"),
    "PROCEDURES": ("47519-4", "History of Procedures Document"),
    "SUBJECTIVE": ("61150-9", "Subjective Narrative"),
    "OBJECTIVE": ("61149-1", "Objective Narrative"),
    "ASSESSMENT": ("51848-0", "Evaluation note"),
    "PLAN": ("18776-5", "Plan of care note"),
    "ASSESSMENT_AND_PLAN": ("51847-2", "Evaluation + Plan note"),
}

DOC_STATUSES = frozenset({"preliminary", "final", "amended", "entered-in-error"})
#: Nabla's note locales; anything already shaped like a BCP 47 tag passes through
_LOCALES = {"ENGLISH_US": "en-US", "ENGLISH_UK": "en-GB", "FRENCH_FR": "fr-FR"}
_BCP47 = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_PATH = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\[\d+\])?(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])?)*")
_TOKEN = re.compile(r"[a-z][a-z-]{0,30}")
_TEXT_PLAIN = "text/plain; charset=utf-8"
_NO_CLOCK = "??:??:??.???"
_CLOCK = r"(?:\d{2,}:[0-5]\d:[0-5]\d\.\d{3}|\?\?:\?\?:\?\?\.\?\?\?)"
_ITEM_LINE = re.compile(
    rf"\[(?P<start>{_CLOCK})-(?P<end>{_CLOCK})\] (?P<speaker>[^:\n]+): (?P<text>.*)", re.DOTALL
)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CONTINUATION = "  "

# -- validation --------------------------------------------------------------------------------


def _location(resource_type: str, loc: Iterable[int | str]) -> str:
    """``DocumentReference.content[0].attachment.data`` from a pydantic error location."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif not part.startswith("__"):
            path += f".{part}"
    return path


def invalid_locations(resource: Mapping[str, Any]) -> list[str]:
    """Where ``resource`` fails the R4B model of its ``resourceType`` (empty: valid)."""
    return _check(resource)[1]


def validate(resource: Mapping[str, Any]) -> dict[str, Any]:
    """``resource`` validated by its R4B model, as JSON; PermanentError naming locations only."""
    data, problems = _check(resource)
    if data is None:
        kind = resource.get("resourceType")
        name = kind if isinstance(kind, str) and _PATH.fullmatch(kind) else "resource"
        raise PermanentError(f"fhir mapping {name}: invalid at {', '.join(problems[:5])}")
    return data


def _check(resource: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or not _PATH.fullmatch(kind):
        return None, ["resourceType"]
    try:
        model = get_fhir_model_class(kind)
    except ValueError:
        return None, [f"{kind}.resourceType"]
    if not issubclass(model, Resource):
        return None, [f"{kind}.resourceType"]
    try:
        instance = model.model_validate(dict(resource))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return None, sorted({_location(kind, error["loc"]) for error in errors})
    return instance.model_dump(mode="json", exclude_none=True), []


# -- small parts -------------------------------------------------------------------------------


def identifier_token(system: str, value: str) -> str:
    """A FHIR token ``system|value``, escaping the search separators (``\\ | , $``)."""
    return f"{_escape(system)}|{_escape(value)}"


def if_none_exist(system: str, value: str) -> str:
    """The ``If-None-Exist`` header of a conditional create: ``identifier=system|value``."""
    return "identifier=" + quote(identifier_token(system, value), safe=":/|")


def _escape(text: str) -> str:
    return re.sub(r"([\\|,$])", r"\\\1", text)


def _identifier(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


def _external_id(vendor: str, external_id: str | None) -> list[dict[str, str]]:
    if external_id is None:
        return []
    return [_identifier(f"urn:carehook:{vendor}:external-id", external_id)]


def _system(table: Mapping[str, str], vendor: str, what: str) -> str:
    try:
        return table[vendor]
    except KeyError:
        raise ValueError(f"no {what} identifier system for vendor {vendor!r}") from None


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _ref(kind: str, logical_id: str | None) -> dict[str, str] | None:
    return None if logical_id is None else {"reference": f"{kind}/{logical_id}"}


def _listed(item: dict[str, str] | None) -> list[dict[str, str]] | None:
    return None if item is None else [item]


def _context(encounter_id: str | None) -> dict[str, Any] | None:
    encounter = _ref("Encounter", encounter_id)
    return None if encounter is None else {"encounter": [encounter]}


def _instant(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).isoformat()


def _language(locale: str | None) -> str | None:
    if locale is None:
        return None
    tag = _LOCALES.get(locale.upper(), locale)
    return tag if _BCP47.fullmatch(tag) else None


def _attachment(data: bytes, content_type: str, title: str, **extra: Any) -> dict[str, Any]:
    """An inline attachment; ``hash`` is the base64 SHA-1 of the data, as FHIR defines it."""
    return {
        "contentType": content_type,
        "data": base64.b64encode(data).decode("ascii"),
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),  # noqa: S324
        "size": len(data),
        "title": title,
        **{key: value for key, value in extra.items() if value is not None},
    }


def _keep_identity(resource: dict[str, Any], existing: Mapping[str, Any] | None) -> None:
    """Carry the stored ``id`` and ``meta`` over, so the result can be PUT as an update."""
    if existing is not None:
        for key in ("id", "meta"):
            if key in existing:
                resource[key] = existing[key]


def _drop_none(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if value not in (None, [], {})}


# -- notes -------------------------------------------------------------------------------------


def _title(note: ClinicalNote) -> str:
    """The note's title; FHIR forbids empty strings, and a Composition must have a title."""
    return note.title if note.title.strip() else "Clinical note"


def render_note(note: ClinicalNote) -> str:
    """The note as plain text: its title, then each section's title and text."""
    blocks = [_title(note), *(f"{section.title}\n{section.text}" for section in note.sections)]
    return "\n\n".join(blocks) + "\n"


def note_document_reference(
    note: ClinicalNote, doc_status: str, *, existing: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A DocumentReference holding the note as text; ``existing`` keeps its id for an update."""
    if doc_status not in DOC_STATUSES:
        raise ValueError(f"unknown docStatus {doc_status!r}")
    system = _system(NOTE_SYSTEM, note.vendor, "note")
    created = _instant(note.created_at)
    text = render_note(note).encode("utf-8")
    attachment = _attachment(
        text, _TEXT_PLAIN, _title(note), language=_language(note.locale), creation=created
    )
    resource = {
        "resourceType": "DocumentReference",
        "identifier": [
            _identifier(system, note.note_id),
            *_external_id(note.vendor, note.external_id),
        ],
        "status": "current",
        "docStatus": doc_status,
        "type": _concept(*NOTE_TYPE),
        "category": [_concept(US_CORE_CATEGORY, "clinical-note", "Clinical Note")],
        "subject": _ref("Patient", note.patient_id),
        "date": created,
        "author": _listed(_ref("Practitioner", note.author_id)),
        "content": [{"attachment": attachment}],
        "context": _context(note.encounter_id),
    }
    resource = _drop_none(resource)
    _keep_identity(resource, existing)
    return validate(resource)


def _narrative(text: str) -> dict[str, str]:
    paragraphs = [line for line in text.splitlines() if line.strip()]
    body = "".join(f"<p>{html.escape(line, quote=False)}</p>" for line in paragraphs)
    return {"status": "generated", "div": f'<div xmlns="{XHTML}">{body}</div>'}


def _section(key: str, title: str, text: str) -> dict[str, Any]:
    section: dict[str, Any] = {"title": title} if title.strip() else {}
    if key in LOINC_SECTIONS:
        section["code"] = _concept(LOINC, *LOINC_SECTIONS[key])
    if text.strip():
        section["text"] = _narrative(text)
    else:  # a section must carry text; an empty one says why it is empty
        section["text"] = _narrative("No information.")
        section["emptyReason"] = _concept(
            "http://terminology.hl7.org/CodeSystem/list-empty-reason", "unavailable", "Unavailable"
        )
    return section


def note_composition(
    note: ClinicalNote,
    document_reference_id: str | None,
    *,
    status: str = "preliminary",
    date: datetime | None = None,
) -> dict[str, Any]:
    """A Composition with one coded section per note section.

    A Composition must have a date: the note's ``created_at``, else ``date``, else the time of
    the call (FHIR's Composition.date is the editing time, so the build time is a fair value).
    The DocumentReference holding the same note as text, when given, is linked through
    ``relatesTo`` (``transforms``: this is a structured rendering of the same note).
    """
    if status not in DOC_STATUSES:
        raise ValueError(f"unknown Composition status {status!r}")
    when = _instant(note.created_at or date or datetime.now(UTC))
    author = _ref("Practitioner", note.author_id) or {"display": f"{note.vendor} AI scribe"}
    related = _ref("DocumentReference", document_reference_id)
    resource = {
        "resourceType": "Composition",
        "identifier": _identifier(_system(NOTE_SYSTEM, note.vendor, "note"), note.note_id),
        "status": status,
        "type": _concept(*NOTE_TYPE),
        "subject": _ref("Patient", note.patient_id),
        "encounter": _ref("Encounter", note.encounter_id),
        "date": when,
        "author": [author],
        "title": _title(note),
        "language": _language(note.locale),
        "relatesTo": [{"code": "transforms", "targetReference": related}] if related else None,
        "section": [_section(s.key, s.title, s.text) for s in note.sections],
    }
    return validate(_drop_none(resource))


# -- transcripts -------------------------------------------------------------------------------


def _clock(ms: int | None) -> str:
    if ms is None:
        return _NO_CLOCK
    seconds, millis = divmod(max(ms, 0), 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _transcript_item(item: TranscriptItem) -> str:
    first, *rest = _LINE_BREAK.split(item.text)
    head = f"[{_clock(item.start_ms)}-{_clock(item.end_ms)}] {item.speaker}: {first}\n"
    return head + "".join(f"{_CONTINUATION}{line}\n" for line in rest)


def transcript_lines(items: Iterable[TranscriptItem]) -> str:
    """The transcript text: one ``[start-end] SPEAKER: text`` line per item, in spoken order
    (the format is in the module docstring; :func:`parse_transcript_lines` reads it back)."""
    return "".join(_transcript_item(item) for item in items)


def _offset(clock: str) -> int | None:
    if clock == _NO_CLOCK:
        return None
    hours, minutes, rest = clock.split(":")
    seconds, millis = rest.split(".")
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def parse_transcript_lines(text: str) -> list[TranscriptItem]:
    """The items of a :func:`transcript_lines` text; ValueError naming a line number only."""
    items: list[TranscriptItem] = []
    for number, line in enumerate(text.split("\n")[:-1] if text else [], start=1):
        match = _ITEM_LINE.fullmatch(line)
        if match:
            start, end = _offset(match["start"]), _offset(match["end"])
            items.append(TranscriptItem(match["speaker"], match["text"], start, end))
        elif line.startswith(_CONTINUATION) and items:
            last = items[-1]
            items[-1] = TranscriptItem(last.speaker, f"{last.text}\n{line[2:]}",
                                       last.start_ms, last.end_ms)  # fmt: skip
        else:
            raise ValueError(f"transcript text line {number} is not an item line")
    return items


def transcript_document_reference(transcript: Transcript) -> dict[str, Any]:
    """A DocumentReference holding a transcript as ONE ``text/plain; charset=utf-8`` attachment
    (Epic keeps only the first attachment, Oracle Health accepts exactly one)."""
    system = _system(TRANSCRIPT_SYSTEM, transcript.vendor, "transcript")
    created = _instant(transcript.created_at)
    text = transcript_lines(transcript.items).encode("utf-8")
    attachment = _attachment(text, _TEXT_PLAIN, "Transcript",
                             language=_language(transcript.language), creation=created)  # fmt: skip
    resource = {
        "resourceType": "DocumentReference",
        "identifier": [
            _identifier(system, transcript.transcript_id),
            *_external_id(transcript.vendor, transcript.external_id),
        ],
        "status": "current",
        "docStatus": "final",
        "type": _concept(*TRANSCRIPT_TYPE),
        "subject": _ref("Patient", transcript.patient_id),
        "date": created,
        "author": _listed(_ref("Practitioner", transcript.author_id)),
        "content": [{"attachment": attachment}],
        "context": _context(transcript.encounter_id),
    }
    return validate(_drop_none(resource))


# -- providers ---------------------------------------------------------------------------------


def practitioner(
    provider: Provider, *, existing: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A Practitioner identified by the vendor's provider id (and NPI when known)."""
    identifiers = [_identifier(PRACTITIONER_SYSTEM, provider.provider_id)]
    if provider.npi:
        identifiers.append(_identifier(NPI_SYSTEM, provider.npi))
    name = _drop_none(
        {"use": "official", "family": provider.family_name, "given": list(provider.given_names)}
    )
    resource = {
        "resourceType": "Practitioner",
        "identifier": identifiers,
        "active": provider.active,
        "name": [name],
        "telecom": [{"system": "email", "value": provider.email}] if provider.email else None,
    }
    resource = _drop_none(resource)
    _keep_identity(resource, existing)
    return validate(resource)


# -- reading -----------------------------------------------------------------------------------


def doc_status(resource: Mapping[str, Any]) -> str | None:
    """A DocumentReference's ``docStatus`` (None when absent)."""
    value = resource.get("docStatus")
    return value if isinstance(value, str) else None


def _issue_summary(issue: Any) -> str | None:
    if not isinstance(issue, Mapping):
        return None
    severity, code = issue.get("severity"), issue.get("code")
    head = "/".join(
        value if isinstance(value, str) and _TOKEN.fullmatch(value) else "?"
        for value in (severity, code)
    )
    paths = issue.get("expression") or issue.get("location")
    listed = paths if isinstance(paths, list) else []
    safe = [path for path in listed if isinstance(path, str) and _PATH.fullmatch(path)]
    return f"{head} at {', '.join(safe[:3])}" if safe else head


def operation_outcome_summary(body: Any, limit: int = 200) -> str:
    """``error/invalid at DocumentReference.subject; ...``: severity, code and plain element
    paths only. Never ``diagnostics`` or ``details`` (servers echo input there), nor an
    expression that is more than a path (a FHIRPath filter may quote a value)."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return "no OperationOutcome"
    issues = body.get("issue")
    parts = [s for s in map(_issue_summary, issues if isinstance(issues, list) else []) if s]
    summary = "; ".join(parts) or "no issues"
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."
