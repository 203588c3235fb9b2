"""Healthie (EHR with an AI scribe): thin payloads, derived event ids, appointment subjects.

Body: ``{resource_id, resource_id_type, event_type, changed_fields}``; participant events add
``host_user_id, user_name, user_email, event_ts`` (PII: the payload is encrypted at rest and
never logged; validation errors never quote it). Healthie has 179 event types: any ``word.word``
type is accepted and stored, but only the AI-scribe events below are handled.

Healthie sends no event id, so the key is derived::

    "sha256:" + hex sha256(event_type + "\\n" + str(resource_id) + "\\n" + raw body)

(``event_type`` cannot contain a newline, and the raw body follows last, so the encoding is
unambiguous; a retry re-sends the same bytes and so gets the same id.)

Subject: ``healthie:<resource_id_type lower-cased>:<resource_id>``, e.g.
``healthie:appointment:67890``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from carehook.envelope import ParsedEvent
from carehook.signatures import Scheme, SchemeOptions
from carehook.signatures.healthie import HealthieScheme
from carehook.vendors import EMPTY_HEADERS
from carehook.vendors._common import IntOrId, Model, Moment, iso, unknown_type, validate

EVENT_TYPES = (
    "appointment.transcript_available",
    "appointment.transcript_started",
    "appointment.transcript_failed",
    "appointment.recording_started",
    "appointment.recording_stopped",
    "appointment.recording_completed",
    "appointment.participant_joined",
    "appointment.participant_left",
)
PARTICIPANT_TYPES = ("appointment.participant_joined", "appointment.participant_left")
TYPE_PATTERN = r"^[a-z0-9_]+\.[a-z0-9_]+$"


class HealthieEvent(Model):
    """Every Healthie webhook (the thin payload)."""

    resource_id: IntOrId
    resource_id_type: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
    event_type: Annotated[str, Field(pattern=TYPE_PATTERN)]
    changed_fields: list[str] | None = None


class ParticipantEvent(HealthieEvent):
    """``participant_joined`` / ``participant_left``: who, and when (PII)."""

    host_user_id: IntOrId | None = None
    user_name: str | None = None
    user_email: str | None = None
    event_ts: Moment | None = None


def event_id(event_type: str, resource_id: int | str, body: bytes) -> str:
    """The derived idempotency key of a Healthie webhook (see the module docstring)."""
    digest = hashlib.sha256(f"{event_type}\n{resource_id}\n".encode() + body)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class HealthieVendor:
    """Healthie's webhooks (seed 004 as corrected by VENDORS.md)."""

    name: str = field(default="healthie", init=False)
    event_types: tuple[str, ...] = field(default=EVENT_TYPES, init=False)

    def scheme(self, options: SchemeOptions) -> Scheme:
        """Healthie's Content-Digest + hex HMAC recipe (and genuine RFC 9421)."""
        return HealthieScheme.from_options(options)

    def parse(
        self,
        body: bytes,
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = EMPTY_HEADERS,  # noqa: ARG002 (the protocol's)
    ) -> ParsedEvent:
        """Validate the thin payload (every type); derive id and subject from it."""
        raw_type = payload.get("event_type")
        context = f"{self.name} {raw_type if raw_type in EVENT_TYPES else 'event'}"
        model = ParticipantEvent if raw_type in PARTICIPANT_TYPES else HealthieEvent
        event = validate(model, payload, context)
        occurred_at = event.event_ts if isinstance(event, ParticipantEvent) else None
        return ParsedEvent(
            event_id(event.event_type, event.resource_id, body),
            event.event_type,
            f"healthie:{event.resource_id_type.lower()}:{event.resource_id}",
            occurred_at,
            handled=event.event_type in EVENT_TYPES,
        )

    def sample(self, event_type: str, now: datetime, seq: int = 0) -> dict[str, Any]:
        """A realistic thin payload; ``seq`` picks the appointment (shared across types)."""
        if event_type not in EVENT_TYPES:
            raise unknown_type(self.name, event_type, EVENT_TYPES)
        payload: dict[str, Any] = {
            "resource_id": 700000 + seq,
            "resource_id_type": "Appointment",
            "event_type": event_type,
            "changed_fields": [],
        }
        if event_type in PARTICIPANT_TYPES:
            payload.update(_participant(seq, now))
        return payload


_PEOPLE = (
    ("Avery Sample", "avery.sample@example.com"),
    ("Jordan Placeholder", "jordan.placeholder@example.org"),
    ("Dr. Riley Testwell", "riley.testwell@example.net"),
)


def _participant(seq: int, now: datetime) -> dict[str, Any]:
    name, email = _PEOPLE[seq % len(_PEOPLE)]
    return {
        "host_user_id": str(300000 + seq % 25),
        "user_name": name,
        "user_email": email,
        "event_ts": iso(now),
    }


VENDOR = HealthieVendor()
