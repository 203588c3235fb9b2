"""Abridge notes into the EHR: the note's lifecycle, patient summaries and the provider roster.

The note lifecycle is a DocumentReference per Abridge note (identifier
``urn:carehook:abridge:note|<note id>``):

- ``encounter.session.completed``: fetch the note, conditional create with docStatus
  ``preliminary``. A note that already exists is left as it is (a duplicate, a replay, or a
  ``signed`` that arrived first and already wrote the final note).
- ``encounter.note.reviewed``: fetch the final text, update with docStatus ``amended`` — unless
  the note is locked, which the step reports as ``refused: note signed`` (the event still ends
  ``done``: refusing is the right outcome, not a failure).
- ``encounter.note.signed``: fetch the note, write it with docStatus ``final`` (creating it if
  ``completed`` has not been processed yet), and lock it.

Before each write the note's Patient and Encounter (the EHR ids Abridge gives) are looked up in
the EHR (:func:`resolve_references`): one it does not know is left out of ``subject`` /
``context.encounter`` and named in the step's detail (``patient skipped: ... not found``), rather
than sending a dangling reference Epic or Oracle would refuse.

"Locked" is known twice: in the subject's working data (``locked``) and in the EHR itself (a
DocumentReference whose docStatus is ``final``). The EHR's answer covers note events whose
subject differs (an event naming only the note id, not its session).

``patient.summary.ready`` pushes the summary to the ``portal`` destination;
``provider.enrolled`` upserts a Practitioner by the provider's identifier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from carehook.connectors.fhir import mapping as fhir
from carehook.errors import PermanentError
from carehook.workflows import Step, StepContext, StepResult, TimelineEntry, Workflow
from carehook.workflows._alerting import NOT_CONFIGURED, message_id
from carehook.workflows.catalog import WorkflowConfig
from carehook.workflows.ports import AbridgeApi, ClinicalNote, Ehr, Services

REFUSED_SIGNED = "refused: note signed"


def not_configured(ctx: StepContext, what: str) -> StepResult:
    """``skipped: not configured``, with the event still on its subject's timeline."""
    return StepResult(NOT_CONFIGURED, what,
                      TimelineEntry(ctx.item.subject, ctx.item.type, f"{NOT_CONFIGURED}: {what}"))


def _data(ctx: StepContext) -> Mapping[str, Any]:
    data = ctx.item.payload.get("data")
    return data if isinstance(data, Mapping) else {}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


async def _known(ehr: Ehr, kind: str, logical_id: str | None) -> str | None:
    """Why a reference to ``kind/logical_id`` is left out, or None when the EHR has it."""
    if logical_id is None:
        return f"{kind.lower()} skipped: the event names none"
    try:
        await ehr.read(kind, logical_id)
    except PermanentError:  # 404, or an id the server does not accept
        return f"{kind.lower()} skipped: {kind}/{logical_id} not found in the EHR"
    return None


async def resolve_references(ehr: Ehr, note: ClinicalNote) -> tuple[ClinicalNote, str]:
    """The note with only the Patient and Encounter references the EHR resolves (``subject``,
    ``context.encounter``), and a detail naming each one left out (empty when none was)."""
    patient = await _known(ehr, "Patient", note.patient_id)
    encounter = await _known(ehr, "Encounter", note.encounter_id)
    if patient is not None:
        note = dataclasses.replace(note, patient_id=None)
    if encounter is not None:
        note = dataclasses.replace(note, encounter_id=None)
    return note, "; ".join(why for why in (patient, encounter) if why)


def _with(detail: str, skipped: str) -> str:
    return f"{detail}; {skipped}" if skipped else detail


class AbridgeNotes:
    """The steps of the Abridge note workflows over one set of services."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def _api(self, ctx: StepContext) -> AbridgeApi | None:
        return self._services.abridge.get(ctx.item.source)

    def _connected(self, ctx: StepContext) -> tuple[Ehr, AbridgeApi] | StepResult:
        """The EHR and the source's Abridge API, or ``skipped: not configured`` for either."""
        ehr, api = self._services.ehr, self._api(ctx)
        if ehr is None:
            return not_configured(ctx, "destination ehr")
        if api is None:
            return not_configured(ctx, f"api_url of source {ctx.item.source}")
        return ehr, api

    @staticmethod
    async def _fetch(api: AbridgeApi, ctx: StepContext) -> ClinicalNote:
        data = _data(ctx)
        return await api.note(_str(data.get("session_id")), _str(data.get("note_id")))

    @classmethod
    async def _fetch_resolved(
        cls, ehr: Ehr, api: AbridgeApi, ctx: StepContext
    ) -> tuple[ClinicalNote, str]:
        """The note, its Patient/Encounter references checked against the EHR."""
        return await resolve_references(ehr, await cls._fetch(api, ctx))

    async def create_preliminary(self, ctx: StepContext) -> StepResult:
        """Fetch the note and create it as preliminary, once."""
        if isinstance(connected := self._connected(ctx), StepResult):
            return connected
        ehr, api = connected
        note, skipped = await self._fetch_resolved(ehr, api, ctx)
        system = fhir.NOTE_SYSTEM["abridge"]
        resource = fhir.note_document_reference(note, "preliminary")
        stored, created = await ehr.create(
            resource, if_none_exist=fhir.if_none_exist(system, note.note_id)
        )
        status = fhir.doc_status(stored) or "preliminary"
        detail = f"DocumentReference/{stored.get('id')} {'created' if created else 'exists'}"
        detail = _with(detail, skipped)
        state = {**ctx.state, "note_id": note.note_id, "doc_status": status}
        return StepResult("ok", f"{detail} ({status})",
                          TimelineEntry(ctx.item.subject, f"note.{status}", detail), state)

    async def amend(self, ctx: StepContext) -> StepResult:
        """Write the reviewed text as amended, unless the note is locked."""
        if isinstance(connected := self._connected(ctx), StepResult):
            return connected
        ehr, api = connected
        if ctx.state.get("locked"):
            return self._refused(ctx, "carehook lock")
        note, skipped = await self._fetch_resolved(ehr, api, ctx)
        existing = await ehr.search("DocumentReference", fhir.NOTE_SYSTEM["abridge"], note.note_id)
        if existing is not None and fhir.doc_status(existing) == "final":
            return self._refused(ctx, "EHR docStatus final")
        stored = await self._write(ehr, note, "amended", existing)
        detail = _with(f"DocumentReference/{stored.get('id')} amended", skipped)
        state = {**ctx.state, "note_id": note.note_id, "doc_status": "amended"}
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "note.amended", detail),
                          state)

    async def lock(self, ctx: StepContext) -> StepResult:
        """Write the note as final and lock it; later edits are refused."""
        if isinstance(connected := self._connected(ctx), StepResult):
            return connected
        ehr, api = connected
        note, skipped = await self._fetch_resolved(ehr, api, ctx)
        existing = await ehr.search("DocumentReference", fhir.NOTE_SYSTEM["abridge"], note.note_id)
        if existing is not None and fhir.doc_status(existing) == "final":
            stored, verb = existing, "already final"
        else:
            stored, verb = await self._write(ehr, note, "final", existing), "final"
        detail = _with(f"DocumentReference/{stored.get('id')} {verb}; locked", skipped)
        state = {**ctx.state, "note_id": note.note_id, "doc_status": "final", "locked": True}
        return StepResult("ok", detail, TimelineEntry(ctx.item.subject, "note.signed", detail),
                          state)

    @staticmethod
    async def _write(
        ehr: Ehr, note: ClinicalNote, status: str, existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Update ``existing`` to ``status``, or create the note with it (conditionally)."""
        resource = fhir.note_document_reference(note, status, existing=existing)
        if existing is not None:
            return await ehr.update(resource)
        system = fhir.NOTE_SYSTEM["abridge"]
        stored, _created = await ehr.create(
            resource, if_none_exist=fhir.if_none_exist(system, note.note_id)
        )
        if fhir.doc_status(stored) != status and fhir.doc_status(stored) != "final":
            # created meanwhile by someone else: bring it to this status
            return await ehr.update(fhir.note_document_reference(note, status, existing=stored))
        return stored

    @staticmethod
    def _refused(ctx: StepContext, why: str) -> StepResult:
        detail = f"note is signed ({why}); the edit was not written"
        return StepResult(REFUSED_SIGNED, detail,
                          TimelineEntry(ctx.item.subject, "note.edit_refused", detail))

    async def push_summary(self, ctx: StepContext) -> StepResult:
        """Fetch the patient summary and POST it to the ``portal`` destination."""
        portal = self._services.destinations.get("portal")
        api = self._api(ctx)
        if portal is None:
            return not_configured(ctx, "destination portal")
        if api is None:
            return not_configured(ctx, f"api_url of source {ctx.item.source}")
        summary = await api.patient_summary(str(_data(ctx).get("session_id")))
        body = {
            "type": "patient.summary", "summary_id": summary.summary_id,
            "session_id": summary.session_id, "patient_id": summary.patient_id,
            "language": summary.language, "text": summary.text,
        }  # fmt: skip
        item = ctx.item
        sent = await portal.deliver(message_id(item, "portal"), body)
        detail = f"summary {summary.summary_id} delivered ({sent.status})"
        return StepResult("ok", detail, TimelineEntry(item.subject, "summary.delivered", detail))

    async def upsert_provider(self, ctx: StepContext) -> StepResult:
        """Fetch the provider and create or update its Practitioner by identifier."""
        if isinstance(connected := self._connected(ctx), StepResult):
            return connected
        ehr, api = connected
        provider = await api.provider(str(_data(ctx).get("provider_id")))
        system = fhir.PRACTITIONER_SYSTEM
        existing = await ehr.search("Practitioner", system, provider.provider_id)
        resource = fhir.practitioner(provider, existing=existing)
        if existing is not None:
            stored, verb = await ehr.update(resource), "updated"
        else:
            stored, created = await ehr.create(
                resource, if_none_exist=fhir.if_none_exist(system, provider.provider_id)
            )
            verb = "created" if created else "exists"
        detail = f"Practitioner/{stored.get('id')} {verb}"
        line = TimelineEntry(ctx.item.subject, "provider.enrolled", detail)
        return StepResult("ok", detail, line)


def workflows(config: WorkflowConfig, services: Services) -> dict[tuple[str, str], Workflow]:  # noqa: ARG001
    """The Abridge note, summary and roster workflows."""
    s = AbridgeNotes(services)

    def one(name: str, step: str, run: Any) -> Workflow:
        return Workflow(name, (Step(step, run),), stateful=True)

    return {
        ("abridge", "encounter.session.completed"): one("abridge.note", "ehr.note.create",
                                                        s.create_preliminary),
        ("abridge", "encounter.note.reviewed"): one("abridge.note", "ehr.note.amend", s.amend),
        ("abridge", "encounter.note.signed"): one("abridge.note", "ehr.note.lock", s.lock),
        ("abridge", "patient.summary.ready"): one("abridge.summary", "portal.summary",
                                                  s.push_summary),
        ("abridge", "provider.enrolled"): one("abridge.roster", "ehr.practitioner",
                                              s.upsert_provider),
    }  # fmt: skip
