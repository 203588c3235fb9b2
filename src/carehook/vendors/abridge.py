"""Abridge (ambient clinical documentation): catalog, payload models, subjects and samples.

Body: ``{event_id, type, timestamp, data: {session_id?, note_id?, provider_id?, status?,
quality_score?}}`` (seed 000; payloads carry ids, not PHI). The event id is ``event_id``.

Subjects keep related events in order: every session or note event is about its encounter,
``abridge:session:<session_id>`` (a note event without a session falls back to
``abridge:note:<note_id>``); ``provider.enrolled`` is about ``abridge:provider:<provider_id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import model_validator
from pydantic_core import PydanticCustomError

from carehook.envelope import ParsedEvent
from carehook.errors import PayloadValidationError
from carehook.signatures import Scheme, SchemeOptions
from carehook.signatures.abridge import AbridgeScheme
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

EVENT_TYPES = (
    "encounter.session.completed",
    "encounter.session.failed",
    "encounter.note.reviewed",
    "encounter.note.signed",
    "patient.summary.ready",
    "provider.enrolled",
    "quality.alert",
)


class AbridgeData(Model):
    """``data`` of any Abridge event: every field optional."""

    session_id: Id | None = None
    note_id: Id | None = None
    provider_id: Id | None = None
    status: str | None = None
    quality_score: float | None = None


class SessionData(AbridgeData):
    """``data`` of an event about a session (completed, failed, summary, quality alert)."""

    session_id: Id


class NoteData(AbridgeData):
    """``data`` of a note event: its session, its note, or both."""

    @model_validator(mode="after")
    def _session_or_note(self) -> NoteData:
        if self.session_id is None and self.note_id is None:
            raise PydanticCustomError("session_or_note_id_missing", "session_id or note_id needed")
        return self


class ProviderData(AbridgeData):
    """``data`` of ``provider.enrolled``."""

    provider_id: Id


_D = TypeVar("_D", bound=AbridgeData)


class TypedEvent(Model, Generic[_D]):
    """A known Abridge event with its ``data`` model: validated in one pass (the hot path)."""

    event_id: Id
    type: str
    timestamp: Moment
    data: _D


_DATA_MODELS: dict[str, type[AbridgeData]] = {
    "encounter.session.completed": SessionData,
    "encounter.session.failed": SessionData,
    "encounter.note.reviewed": NoteData,
    "encounter.note.signed": NoteData,
    "patient.summary.ready": SessionData,
    "provider.enrolled": ProviderData,
    "quality.alert": SessionData,
}
#: one envelope-and-data model per known type, built once
_EVENT_MODELS: dict[str, type[TypedEvent[Any]]] = {
    type_: TypedEvent[data] for type_, data in _DATA_MODELS.items()  # type: ignore[valid-type]
}


_ENCOUNTER = ("session", "note")
_ANY = ("session", "note", "provider")


def _subject(data: Mapping[str, Any], fallback: str, kinds: tuple[str, ...] = _ANY) -> str:
    """The first of ``kinds`` (``session`` -> ``data.session_id`` ...) present in ``data``."""
    for kind in kinds:
        value = entity_id(data.get(f"{kind}_id"))
        if value is not None:
            return f"abridge:{kind}:{value}"
    return fallback


def _model_subject(data: AbridgeData, fallback: str, kinds: tuple[str, ...]) -> str:
    """:func:`_subject` over validated ``data`` (attributes, no ``model_dump``)."""
    for kind in kinds:
        value = getattr(data, f"{kind}_id")
        if value is not None:
            return f"abridge:{kind}:{value}"
    return fallback


@dataclass(frozen=True, slots=True)
class AbridgeVendor:
    """Abridge's webhooks (seed 000)."""

    name: str = field(default="abridge", init=False)
    event_types: tuple[str, ...] = field(default=EVENT_TYPES, init=False)

    def scheme(self, options: SchemeOptions) -> Scheme:
        """Abridge's timestamped hex HMAC, with the source's header names and template."""
        return AbridgeScheme.from_options(options)

    def parse(
        self,
        body: bytes,  # noqa: ARG002 (the protocol's)
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = EMPTY_HEADERS,  # noqa: ARG002 (the protocol's)
    ) -> ParsedEvent:
        """Read id, type, subject and time; validate the payload of known types."""
        type_ = event_type(payload, self.name)
        if type_ not in _DATA_MODELS:
            return self._parse_unknown(type_, payload)
        event = validate(_EVENT_MODELS[type_], payload, f"{self.name} {type_}")
        kinds = ("provider",) if type_ == "provider.enrolled" else _ENCOUNTER
        subject = _model_subject(event.data, f"abridge:event:{event.event_id}", kinds)
        return ParsedEvent(event.event_id, type_, subject, event.timestamp, handled=True)

    def _parse_unknown(self, type_: str, payload: Mapping[str, Any]) -> ParsedEvent:
        event_id = entity_id(payload.get("event_id"))
        if event_id is None:
            raise PayloadValidationError(f"{self.name} {type_}: event_id: missing")
        data = payload.get("data")
        data = data if isinstance(data, Mapping) else {}
        subject = _subject(data, f"abridge:event:{event_id}")
        return ParsedEvent(
            event_id, type_, subject, lenient_moment(payload.get("timestamp")), handled=False
        )

    def sample(self, event_type: str, now: datetime, seq: int = 0) -> dict[str, Any]:
        """A realistic Abridge payload; ``seq`` picks the encounter (shared across types)."""
        if event_type not in EVENT_TYPES:
            raise unknown_type(self.name, event_type, EVENT_TYPES)
        return {
            "event_id": f"evt_{sample_token(self.name, event_type, seq)}",
            "type": event_type,
            "timestamp": iso(now),
            "data": _sample_data(event_type, seq),
        }


def _sample_data(event_type: str, seq: int) -> dict[str, Any]:
    session = f"ses_{seq:06d}"
    note = f"note_{seq:06d}"
    provider = f"prov_{seq % 40:04d}"
    samples: dict[str, dict[str, Any]] = {
        "encounter.session.completed": {"session_id": session, "status": "completed"},
        "encounter.session.failed": {"session_id": session, "status": "audio_unintelligible"},
        "encounter.note.reviewed": {"session_id": session, "note_id": note, "status": "reviewed"},
        "encounter.note.signed": {"session_id": session, "note_id": note, "status": "signed"},
        "patient.summary.ready": {"session_id": session, "status": "ready"},
        "provider.enrolled": {"provider_id": provider, "status": "active"},
        "quality.alert": {
            "session_id": session,
            "note_id": note,
            "status": "missing_assessment_section",
            "quality_score": 0.62,
        },
    }
    return samples[event_type]


VENDOR = AbridgeVendor()
