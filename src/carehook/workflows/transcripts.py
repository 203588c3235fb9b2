"""Nabla notes and transcripts, and Healthie transcripts, into the EHR.

- nabla ``generate_note_async.succeeded``: the note (suggested dot phrases merged in, see
  :func:`merge_dot_phrases`) becomes a DocumentReference and a Composition whose sections carry
  LOINC section codes; both are conditional creates on the Nabla job id, and both carry the
  client's ``external_id`` so the client's request can be found from either.
- nabla ``transcribe_async.succeeded``: the transcript is stored in the job's working data
  (encrypted) and written as a transcript DocumentReference, items in spoken order.
- healthie ``appointment.transcript_available``: the appointment is queried over GraphQL (its
  ``transcripts`` field, Healthie's real schema), the chosen transcript's WebVTT file is
  downloaded from its ``expiring_url`` (re-querying for a fresh link when it has expired) and
  parsed into items with speaker and offsets (:mod:`carehook.workflows.vtt`); then the same path.
  The AI scribe's note read with it (``generated_form_answer_group``, one section per answered
  module) is kept too and filed as a preliminary DocumentReference: an appointment without one
  makes that step ``skipped``.

Storing the transcript is its own step, so a retry of the EHR write does not fetch it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from carehook.connectors.fhir import mapping as fhir
from carehook.errors import PermanentError, RetryableError
from carehook.workflows import Step, StepContext, StepResult, TimelineEntry, Workflow
from carehook.workflows.catalog import WorkflowConfig
from carehook.workflows.healthie_lifecycle import lifecycle_step
from carehook.workflows.notes import not_configured
from carehook.workflows.ports import (
    Appointment,
    ClinicalNote,
    HealthieApi,
    NoteSection,
    Services,
    Transcript,
    TranscriptItem,
    TranscriptLink,
    TranscriptLinkExpired,
)
from carehook.workflows.vtt import parse_vtt, speaker_roles

#: where a dot phrase goes when Nabla suggests no section (the brief's first rule: "decide for a
#: default, for instance any kind of free-text area")
FREE_TEXT_KEY = "ADDITIONAL_NOTES"
FREE_TEXT_TITLE = "Additional notes"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _job(ctx: StepContext) -> Mapping[str, Any]:
    data = ctx.item.payload.get("data")
    return data if isinstance(data, Mapping) else {}


def _inner(ctx: StepContext) -> Mapping[str, Any]:
    payload = _job(ctx).get("payload")
    return payload if isinstance(payload, Mapping) else {}


def merge_dot_phrases(
    sections: Sequence[NoteSection], suggestions: Sequence[Mapping[str, Any]]
) -> tuple[NoteSection, ...]:
    """Insert each suggested dot phrase by the brief's three rules.

    No suggested section: append to the free-text section (added at the end if absent).
    Suggested section present: append ``text_to_insert`` to it. Suggested section absent: add
    it (with Nabla's key and title) holding ``text_to_insert``.
    """
    merged = list(sections)
    for suggestion in suggestions:
        text = str(suggestion.get("text_to_insert") or "")
        ref = suggestion.get("note_section")
        if isinstance(ref, Mapping) and ref.get("key"):
            key, title = str(ref["key"]), section_title(ref)
        else:
            key, title = FREE_TEXT_KEY, FREE_TEXT_TITLE
        at = next((i for i, s in enumerate(merged) if s.key == key), None)
        if at is None:
            merged.append(NoteSection(key, title, text))
        else:
            old = merged[at]
            joined = f"{old.text}\n\n{text}" if old.text else text
            merged[at] = NoteSection(old.key, old.title, joined)
    return tuple(merged)


def section_title(section: Mapping[str, Any]) -> str:
    """A section's title; one Nabla sent without a title is named from its key
    (``REVIEW_OF_SYSTEMS`` -> ``Review of systems``): an unknown key is kept, never dropped."""
    title = section.get("title")
    if isinstance(title, str) and title.strip():
        return title
    return str(section.get("key") or "Section").replace("_", " ").strip().capitalize()


def nabla_note(ctx: StepContext) -> ClinicalNote:
    """The note of a ``generate_note_async.succeeded`` event, dot phrases merged."""
    job, inner = _job(ctx), _inner(ctx)
    note = inner.get("note")
    if not isinstance(note, Mapping):
        raise PermanentError(f"nabla event {ctx.item.event_id}: no note in the payload")
    sections = tuple(
        NoteSection(str(s.get("key")), section_title(s), str(s.get("text") or ""))
        for s in note.get("sections") or () if isinstance(s, Mapping)
    )  # fmt: skip
    suggestions = [s for s in inner.get("suggested_dot_phrases") or () if isinstance(s, Mapping)]
    return ClinicalNote(
        vendor="nabla", note_id=str(job.get("id")),
        sections=merge_dot_phrases(sections, suggestions),
        title=str(note.get("title") or "Clinical note"), locale=note.get("locale"),
        external_id=job.get("external_id"),
    )  # fmt: skip


def nabla_transcript(ctx: StepContext) -> Transcript:
    """The transcript of a ``transcribe_async.succeeded`` event, in spoken order."""
    job = _job(ctx)
    items = tuple(
        TranscriptItem(
            speaker=str(i.get("speaker_type") or i.get("speaker") or "UNSPECIFIED").upper(),
            text=str(i.get("text", "")),
            start_ms=i.get("start_offset_ms"),
            end_ms=i.get("end_offset_ms"),
        )
        for i in _inner(ctx).get("transcript") or ()
        if isinstance(i, Mapping)
    )
    return Transcript(vendor="nabla", transcript_id=str(job.get("id")), items=items,
                      external_id=job.get("external_id"))  # fmt: skip


def transcript_to_state(t: Transcript) -> dict[str, Any]:
    """A transcript as working data (JSON; encrypted at rest by the store)."""
    return {
        "vendor": t.vendor, "transcript_id": t.transcript_id, "patient_id": t.patient_id,
        "encounter_id": t.encounter_id, "author_id": t.author_id, "language": t.language,
        "external_id": t.external_id,
        "items": [[i.speaker, i.text, i.start_ms, i.end_ms] for i in t.items],
    }  # fmt: skip


def note_to_state(note: ClinicalNote) -> dict[str, Any]:
    """A note as working data (JSON; encrypted at rest by the store)."""
    return {
        "vendor": note.vendor, "note_id": note.note_id, "title": note.title,
        "patient_id": note.patient_id, "encounter_id": note.encounter_id,
        "author_id": note.author_id, "external_id": note.external_id,
        "created_at": None if note.created_at is None else note.created_at.isoformat(),
        "sections": [[s.key, s.title, s.text] for s in note.sections],
    }  # fmt: skip


def note_from_state(d: Mapping[str, Any]) -> ClinicalNote:
    """The note :func:`note_to_state` stored."""
    created = d.get("created_at")
    return ClinicalNote(
        vendor=d["vendor"], note_id=d["note_id"], title=d.get("title") or "Clinical note",
        sections=tuple(NoteSection(k, t, text) for k, t, text in d["sections"]),
        patient_id=d.get("patient_id"), encounter_id=d.get("encounter_id"),
        author_id=d.get("author_id"), external_id=d.get("external_id"),
        created_at=None if created is None else datetime.fromisoformat(created),
    )  # fmt: skip


def transcript_from_state(d: Mapping[str, Any]) -> Transcript:
    """The transcript :func:`transcript_to_state` stored."""
    items = tuple(TranscriptItem(s, text, start, end) for s, text, start, end in d["items"])
    return Transcript(
        vendor=d["vendor"], transcript_id=d["transcript_id"], items=items,
        patient_id=d.get("patient_id"), encounter_id=d.get("encounter_id"),
        author_id=d.get("author_id"), language=d.get("language"),
        external_id=d.get("external_id"),
    )  # fmt: skip


#: how often an expired ``expiring_url`` is replaced by re-querying the appointment
LINK_REFRESHES = 2
#: which transcript is filed when an appointment has several: the processed recording's first
_PREFERENCE = {"processed_recording": 0, "realtime_capture": 1}


def pick_transcript(links: Sequence[TranscriptLink]) -> TranscriptLink | None:
    """The completed transcript to file (processed recording over real-time capture, then the
    latest); None when none is completed."""
    done = [link for link in links if link.status == "completed"]
    if not done:
        return None
    return min(done, key=lambda link: (_PREFERENCE.get(link.kind or "", 2),
                                       -(link.ends_at or link.starts_at or _EPOCH).timestamp()))


async def fetch_vtt(api: HealthieApi, appointment_id: str
                    ) -> tuple[Appointment, str, TranscriptLink]:  # fmt: skip
    """The appointment, its chosen transcript's VTT text and link; a refused (expired) link is
    replaced by querying the appointment again, up to :data:`LINK_REFRESHES` times."""
    for attempt in range(LINK_REFRESHES + 1):
        appointment = await api.appointment(appointment_id)
        link = pick_transcript(appointment.transcripts)
        if link is None:
            pending = sum(1 for t in appointment.transcripts if t.status == "processing")
            raise RetryableError(f"healthie appointment {appointment_id}: no completed "
                                 f"transcript yet ({pending} processing)")  # fmt: skip
        try:
            return appointment, await api.transcript_file(link), link
        except TranscriptLinkExpired:
            if attempt == LINK_REFRESHES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class TranscriptSteps:
    """The steps of the Nabla and Healthie note and transcript workflows."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def note_document(self, ctx: StepContext) -> StepResult:
        """The Nabla note as a preliminary DocumentReference (conditional create)."""
        ehr = self._services.ehr
        if ehr is None:
            return not_configured(ctx, "destination ehr")
        note = nabla_note(ctx)
        system = fhir.NOTE_SYSTEM["nabla"]
        stored, created = await ehr.create(
            fhir.note_document_reference(note, "preliminary"),
            if_none_exist=fhir.if_none_exist(system, note.note_id),
        )
        detail = f"DocumentReference/{stored.get('id')} {'created' if created else 'exists'}"
        state = {**ctx.state, "document_reference": stored.get("id")}
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "note.preliminary", detail),
                          state)

    async def note_composition(self, ctx: StepContext) -> StepResult:
        """The Nabla note as a Composition with LOINC-coded sections (conditional create)."""
        ehr = self._services.ehr
        if ehr is None:
            return not_configured(ctx, "destination ehr")
        note = nabla_note(ctx)
        doc_id = ctx.state.get("document_reference")
        resource = fhir.note_composition(note, None if doc_id is None else str(doc_id),
                                         date=ctx.item.received_at)
        stored, created = await ehr.create(
            resource, if_none_exist=fhir.if_none_exist(fhir.NOTE_SYSTEM["nabla"], note.note_id)
        )
        coded = sum(1 for s in note.sections if s.key in fhir.LOINC_SECTIONS)
        verb = "created" if created else "exists"
        detail = f"Composition/{stored.get('id')} {verb}; {coded}/{len(note.sections)} coded"
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "note.composed", detail))

    async def store_nabla_transcript(self, ctx: StepContext) -> StepResult:
        """Keep the transcript in the job's working data (encrypted)."""
        t = nabla_transcript(ctx)
        return StepResult("ok", f"{len(t.items)} items stored",
                          TimelineEntry(ctx.item.subject, "transcript.stored"),
                          {**ctx.state, "transcript": transcript_to_state(t)})  # fmt: skip

    async def fetch_healthie_transcript(self, ctx: StepContext) -> StepResult:
        """Query the appointment, download its transcript's VTT file, parse and keep it
        (encrypted); an expired link is replaced by querying the appointment again."""
        api = self._services.healthie.get(ctx.item.source)
        if api is None:
            return not_configured(ctx, f"api_url of source {ctx.item.source}")
        appointment_id = str(ctx.item.payload.get("resource_id"))
        appointment, text, link = await fetch_vtt(api, appointment_id)
        roles = speaker_roles(appointment.provider_name, appointment.patient_name)
        items = parse_vtt(text, roles, f"healthie transcript {link.transcript_id}")
        t = Transcript(
            vendor="healthie", transcript_id=link.transcript_id, items=items,
            patient_id=appointment.patient_id, author_id=appointment.provider_id,
            created_at=link.ends_at, external_id=appointment_id,
        )  # fmt: skip
        note = appointment.scribe_note
        state = {**ctx.state, "transcript": transcript_to_state(t),
                 "scribe_note": None if note is None else note_to_state(note)}  # fmt: skip
        detail = (f"transcript {t.transcript_id} ({link.kind or 'unknown type'}): "
                  f"{len(t.items)} items stored; "
                  + ("no scribe note" if note is None else f"scribe note {note.note_id} "
                     f"({len(note.sections)} sections) stored"))  # fmt: skip
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "transcript.stored"), state)

    async def scribe_note_document(self, ctx: StepContext) -> StepResult:
        """The appointment's AI scribe note as a preliminary DocumentReference (conditional
        create on the note's id); skipped when Healthie had none."""
        ehr = self._services.ehr
        if ehr is None:
            return not_configured(ctx, "destination ehr")
        stored_note = ctx.state.get("scribe_note")
        if not isinstance(stored_note, Mapping):
            return StepResult("skipped: the appointment has no AI scribe note")
        note = note_from_state(stored_note)
        stored, created = await ehr.create(
            fhir.note_document_reference(note, "preliminary"),
            if_none_exist=fhir.if_none_exist(fhir.NOTE_SYSTEM["healthie"], note.note_id),
        )
        detail = f"DocumentReference/{stored.get('id')} {'created' if created else 'exists'}"
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "note.preliminary", detail))

    async def transcript_document(self, ctx: StepContext) -> StepResult:
        """The stored transcript as a DocumentReference (conditional create)."""
        ehr = self._services.ehr
        stored_t = ctx.state.get("transcript")
        if ehr is None:
            return not_configured(ctx, "destination ehr")
        if not isinstance(stored_t, Mapping):
            raise PermanentError(f"event {ctx.item.pk}: no stored transcript")
        t = transcript_from_state(stored_t)
        system = fhir.TRANSCRIPT_SYSTEM[t.vendor]
        stored, created = await ehr.create(
            fhir.transcript_document_reference(t),
            if_none_exist=fhir.if_none_exist(system, t.transcript_id),
        )
        detail = f"DocumentReference/{stored.get('id')} {'created' if created else 'exists'}"
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "transcript.filed", detail))


def workflows(config: WorkflowConfig, services: Services) -> dict[tuple[str, str], Workflow]:  # noqa: ARG001
    """The Nabla note and transcript workflows and Healthie's transcript (and scribe note)
    workflow."""
    s = TranscriptSteps(services)
    return {
        ("nabla", "generate_note_async.succeeded"): Workflow("nabla.note", (
            Step("ehr.note.document", s.note_document),
            Step("ehr.note.composition", s.note_composition),
        ), stateful=True),
        ("nabla", "transcribe_async.succeeded"): Workflow("nabla.transcript", (
            Step("transcript.store", s.store_nabla_transcript),
            Step("ehr.transcript", s.transcript_document),
        ), stateful=True),
        ("healthie", "appointment.transcript_available"): Workflow("healthie.transcript", (
            lifecycle_step,
            Step("transcript.fetch", s.fetch_healthie_transcript),
            Step("ehr.transcript", s.transcript_document),
            Step("ehr.note", s.scribe_note_document),
        ), stateful=True),
    }  # fmt: skip
