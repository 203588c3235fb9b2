"""What workflow steps call: the connectors' ports and the values they exchange (pure).

Workflows depend on these Protocols only; the adapters live in :mod:`carehook.connectors` and
are built by the composition root (:mod:`carehook.bootstrap`) into one :class:`Services`. Tests
hand workflows fakes or the real adapters pointed at the sandbox's fake servers.

Errors: an adapter raises :class:`carehook.errors.RetryableError` (timeouts, connection errors,
429, 5xx, a vendor's rate limit; ``retry_after`` when the peer said) or
:class:`carehook.errors.PermanentError` (other 4xx, a response that fails validation). Their
messages name the operation, the status and ids, never content: they are stored and shown.

Every value that carries clinical text keeps it out of ``repr`` (``field(repr=False)``), so a
value printed in a log or a traceback shows ids only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from carehook.errors import RetryableError

# -- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSection:
    """One section of a clinical note: a vendor key (``CHIEF_COMPLAINT`` ...), title and text."""

    key: str
    title: str
    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ClinicalNote:
    """A note as a vendor API (Abridge) or webhook (Nabla) gives it.

    ``patient_id``, ``encounter_id`` and ``author_id`` are the EHR's logical ids (FHIR
    ``Patient/<id>``, ``Encounter/<id>``, ``Practitioner/<id>``) when the vendor knows them.
    """

    vendor: str
    note_id: str
    sections: tuple[NoteSection, ...] = field(repr=False)
    title: str = field(default="Clinical note", repr=False)
    session_id: str | None = None
    patient_id: str | None = None
    encounter_id: str | None = None
    author_id: str | None = None
    created_at: datetime | None = None
    locale: str | None = None
    #: the vendor's correlation id for the request that produced the note (Nabla external_id)
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class PatientSummary:
    """A patient-facing visit summary (Abridge)."""

    summary_id: str
    session_id: str
    text: str = field(repr=False)
    patient_id: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Provider:
    """A clinician on a vendor's roster (Abridge ``provider.enrolled``)."""

    provider_id: str
    family_name: str = field(repr=False)
    given_names: tuple[str, ...] = field(default=(), repr=False)
    npi: str | None = None
    email: str | None = field(default=None, repr=False)
    active: bool = True


@dataclass(frozen=True, slots=True)
class TranscriptItem:
    """One utterance: ``speaker`` is DOCTOR, PATIENT or UNSPECIFIED (Nabla's ``speaker_type``)."""

    speaker: str
    text: str = field(repr=False)
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """An encounter transcript, items in spoken order."""

    vendor: str
    transcript_id: str
    items: tuple[TranscriptItem, ...] = field(repr=False)
    patient_id: str | None = None
    encounter_id: str | None = None
    author_id: str | None = None
    language: str | None = None
    created_at: datetime | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptLink:
    """One of a Healthie appointment's transcripts: ``Appointment.transcripts`` in its schema.

    ``status``: processing | completed | failed | incomplete; ``kind`` (Healthie's
    ``transcript_type``): realtime_capture | processed_recording. ``url`` is Healthie's
    ``expiring_url``, a short-lived credential to the WebVTT file: never logged, never in a message.
    """

    transcript_id: str
    status: str
    kind: str | None = None
    url: str | None = field(default=None, repr=False)
    starts_at: datetime | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Appointment:
    """A Healthie appointment, as much of it as the transcript path needs.

    The names (PII) are kept only to tell the clinician's voice from the client's in a transcript.
    """

    appointment_id: str
    patient_id: str | None = None
    provider_id: str | None = None
    starts_at: datetime | None = None
    status: str | None = None
    transcripts: tuple[TranscriptLink, ...] = ()
    patient_name: str | None = field(default=None, repr=False)
    provider_name: str | None = field(default=None, repr=False)
    #: the AI scribe's note (``generated_form_answer_group``), when Healthie has one
    scribe_note: ClinicalNote | None = field(default=None, repr=False)


class TranscriptLinkExpired(RetryableError):
    """A transcript's ``expiring_url`` was refused (403/404): query the appointment again."""


@dataclass(frozen=True, slots=True)
class Alert:
    """A notification to a channel. Never PHI: ids, event type, severity and a link only."""

    title: str
    severity: str  # info | warning | high | critical
    source: str
    event_type: str
    event_pk: int
    subject: str
    link: str = ""
    facts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a webhook destination answered."""

    status: int
    message_id: str


# -- ports -------------------------------------------------------------------------------------


class AbridgeApi(Protocol):
    """Abridge's REST API (note, patient summary and provider fetch), per source."""

    async def note(self, session_id: str | None, note_id: str | None) -> ClinicalNote:
        """The current note of a session (by session id, or by note id)."""
        ...

    async def patient_summary(self, session_id: str) -> PatientSummary:
        """The patient-facing summary of a session."""
        ...

    async def provider(self, provider_id: str) -> Provider:
        """A clinician on the organisation's roster."""
        ...


class HealthieApi(Protocol):
    """Healthie's GraphQL API, per source."""

    async def appointment(self, appointment_id: str) -> Appointment:
        """One appointment, with its completed and processing transcripts (fresh links)."""
        ...

    async def transcript_file(self, link: TranscriptLink) -> str:
        """The WebVTT text behind ``link.url``; :class:`TranscriptLinkExpired` on 403/404."""
        ...


class Ehr(Protocol):
    """A FHIR R4 server. Resources are plain JSON dicts, built and validated by the FHIR mapping.

    ``create`` with ``if_none_exist`` (``"identifier=<system>|<value>"``) is a conditional create:
    the server returns the existing resource instead of creating a second one.
    """

    async def search(self, resource_type: str, system: str, value: str) -> dict[str, Any] | None:
        """The one resource of that type with that identifier, or None."""
        ...

    async def create(
        self, resource: Mapping[str, Any], *, if_none_exist: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Create (conditionally); returns the stored resource and whether it is new."""
        ...

    async def update(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Update by ``resource['id']``; returns the stored resource (new ``meta.versionId``)."""
        ...

    async def read(self, resource_type: str, logical_id: str) -> dict[str, Any]:
        """One resource by id (PermanentError when the server has none)."""
        ...


class Notifier(Protocol):
    """Notification channels (lists of Apprise URLs) by name."""

    def configured(self, channel: str) -> bool:
        """Whether ``channel`` has at least one target."""
        ...

    async def notify(self, channel: str, alert: Alert, *, skip: Collection[str] = ()) -> None:
        """Send ``alert`` to every target of ``channel`` but those named in ``skip`` (reached on
        an earlier attempt); ``PartialFailure`` naming the targets reached if any failed."""
        ...


class Destination(Protocol):
    """A team's own HTTPS endpoint receiving Standard Webhooks signed POSTs."""

    name: str

    async def deliver(
        self, message_id: str, body: Mapping[str, Any], *, timestamp: float | None = None
    ) -> Delivery:
        """POST ``body`` (JSON) signed with the destination's secret; ``message_id`` is the
        ``webhook-id`` (stable across retries so the receiver can de-duplicate)."""
        ...


@dataclass(frozen=True, slots=True)
class Services:
    """Every connector a workflow may use; a missing one makes its step ``skipped: not
    configured``."""

    ehr: Ehr | None = None
    abridge: Mapping[str, AbridgeApi] = field(default_factory=dict)  # by source name
    healthie: Mapping[str, HealthieApi] = field(default_factory=dict)  # by source name
    notifier: Notifier | None = None
    destinations: Mapping[str, Destination] = field(default_factory=dict)  # by name
    #: where alerts link to (the gateway's public base URL; the dashboard lives under it)
    dashboard_url: str = "http://127.0.0.1:8000"
