"""Nabla Core API (ambient note generation and transcription): catalog, models, samples.

Body: ``{id, created_at, type, data: {id, external_id?, status, payload}}`` (seed 002). The event
id is ``id``; the subject is the asynchronous job, ``nabla:job:<data.id>``. ``external_id`` (the
client's own correlation id) is validated and kept in the payload, but correlating it with the
client's request is the workflow's job, not the subject's: a job id is always present, an
external id only when the client sent one.

``generate_note_async.succeeded`` carries the note (``{title, sections: [{key, title, text}],
locale?, template_key?}``) and optional suggested dot phrases; ``transcribe_async.succeeded``
carries transcript items whose speaker is ``speaker_type`` (Nabla's sample app) or ``speaker``
(the brief): both are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from carehook.envelope import ParsedEvent
from carehook.errors import PayloadValidationError
from carehook.signatures import Scheme, SchemeOptions
from carehook.signatures.nabla import NablaScheme
from carehook.vendors import EMPTY_HEADERS
from carehook.vendors._common import (
    Id,
    Model,
    Moment,
    entity_id,
    event_type,
    iso,
    lenient_moment,
    sample_token,
    unknown_type,
    validate,
)
from carehook.vendors._nabla_samples import sample_payload

EVENT_TYPES = (
    "generate_note_async.succeeded",
    "generate_note_async.failed",
    "transcribe_async.succeeded",
    "transcribe_async.failed",
)


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Speaker = Annotated[Literal["DOCTOR", "PATIENT", "UNSPECIFIED"], BeforeValidator(_upper)]
Status = Literal["ONGOING", "FAILED", "SUCCEEDED"]


class NoteSection(Model):
    """One section of a generated note (``key`` from the template, e.g. ``CHIEF_COMPLAINT``).

    Keys are an open set (templates gain sections): any key is accepted and kept, and a section
    without a title is accepted too (the workflow titles it from its key).
    """

    key: str
    title: str | None = None
    text: str


class Note(Model):
    """A generated note."""

    title: str
    sections: list[NoteSection]
    locale: str | None = None
    template_key: str | None = None


class DotPhrase(Model):
    """A user-defined EHR macro: ``trigger`` expands into ``replacement``."""

    id: str
    title: str | None = None
    trigger: str
    replacement: str


class SectionRef(Model):
    """The note section a dot phrase is suggested for (any key, as for note sections)."""

    key: str
    title: str | None = None


class SuggestedDotPhrase(Model):
    """A dot phrase matched in the transcript, with the text to insert and where.

    No ``note_section``: the receiver picks a default place; a section already in the note:
    append ``text_to_insert``; a section not in the note: add it with that text.
    """

    dot_phrase: DotPhrase
    note_section: SectionRef | None = None
    text_to_insert: str


class NotePayload(Model):
    """``data.payload`` of ``generate_note_async.succeeded``."""

    note: Note
    suggested_dot_phrases: list[SuggestedDotPhrase] | None = None


class TranscriptItem(Model):
    """One transcript item; ``speaker`` (the brief's name) fills ``speaker_type``."""

    id: str | None = None
    text: str
    speaker_type: Speaker | None = None
    speaker: Speaker | None = None
    start_offset_ms: Annotated[int, Field(ge=0)] | None = None
    end_offset_ms: Annotated[int, Field(ge=0)] | None = None
    is_final: bool | None = None

    @model_validator(mode="after")
    def _speaker_alias(self) -> TranscriptItem:
        if self.speaker_type is None and self.speaker is not None:
            self.speaker_type = self.speaker
        return self


class TranscriptPayload(Model):
    """``data.payload`` of ``transcribe_async.succeeded``."""

    transcript: list[TranscriptItem]


class JobData(Model):
    """``data``: the asynchronous job this event reports on."""

    id: Id
    external_id: Annotated[str, Field(max_length=128)] | None = None
    status: Status
    payload: dict[str, Any] | None = None


class NablaEvent(Model):
    """The envelope of a known Nabla event."""

    id: Id
    created_at: Moment
    type: str
    data: JobData


#: the payload model of each succeeded type; failed types carry an optional free-form payload
_PAYLOAD_MODELS: dict[str, type[Model]] = {
    "generate_note_async.succeeded": NotePayload,
    "transcribe_async.succeeded": TranscriptPayload,
}


@dataclass(frozen=True, slots=True)
class NablaVendor:
    """Nabla Core API's webhooks (seed 002)."""

    name: str = field(default="nabla", init=False)
    event_types: tuple[str, ...] = field(default=EVENT_TYPES, init=False)

    def scheme(self, options: SchemeOptions) -> Scheme:
        """Nabla's timestamp-plus-body hex HMAC."""
        return NablaScheme.from_options(options)

    def parse(
        self,
        body: bytes,  # noqa: ARG002 (the protocol's)
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = EMPTY_HEADERS,  # noqa: ARG002 (the protocol's)
    ) -> ParsedEvent:
        """Read id, type, subject and time; validate the payload of known types."""
        type_ = event_type(payload, self.name)
        if type_ not in EVENT_TYPES:
            return self._parse_unknown(type_, payload)
        context = f"{self.name} {type_}"
        event = validate(NablaEvent, payload, context)
        if type_ in _PAYLOAD_MODELS:
            validate(_PAYLOAD_MODELS[type_], event.data.payload, context, ("data", "payload"))
        subject = f"nabla:job:{event.data.id}"
        return ParsedEvent(event.id, type_, subject, event.created_at, handled=True)

    def _parse_unknown(self, type_: str, payload: Mapping[str, Any]) -> ParsedEvent:
        event_id = entity_id(payload.get("id"))
        if event_id is None:
            raise PayloadValidationError(f"{self.name} {type_}: id: missing")
        data = payload.get("data")
        job = entity_id(data.get("id")) if isinstance(data, Mapping) else None
        subject = f"nabla:job:{job}" if job else f"nabla:event:{event_id}"
        occurred_at = lenient_moment(payload.get("created_at"))
        return ParsedEvent(event_id, type_, subject, occurred_at, handled=False)

    def sample(self, event_type: str, now: datetime, seq: int = 0) -> dict[str, Any]:
        """A realistic Nabla payload; ``seq`` picks the job and the client's external id."""
        if event_type not in EVENT_TYPES:
            raise unknown_type(self.name, event_type, EVENT_TYPES)
        kind = event_type.split(".")[0]
        succeeded = event_type.endswith(".succeeded")
        return {
            "id": f"evt_{sample_token(self.name, event_type, seq)}",
            "created_at": iso(now, "milliseconds"),
            "type": event_type,
            "data": {
                "id": f"{kind}_{seq:06d}",
                "external_id": f"enc-{seq:06d}",
                "status": "SUCCEEDED" if succeeded else "FAILED",
                "payload": sample_payload(event_type),
            },
        }


VENDOR = NablaVendor()
