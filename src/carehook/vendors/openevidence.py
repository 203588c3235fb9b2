"""OpenEvidence (clinical evidence AI): both revisions of the brief on one source.

- DeepConsult revision (seed 001): ``{event, data}`` with ``deepconsult.*``,
  ``rate_limit.warning`` and ``api_key.expiring``, camelCase fields;
- evidence revision (seed 003): ``{id, type, data}`` with ``query.*``, ``evidence.updated``,
  ``citation.*`` and ``review.flagged``, snake_case fields.

The type is read from ``type``, else ``event``. The event id is ``id`` when present, else
``"sha256:" + hex sha256(raw body)`` (a sender's retry re-sends the same bytes). The time, which
neither revision documents, is read leniently from ``created_at``/``createdAt``/``created``/
``timestamp`` when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from carehook.envelope import ParsedEvent
from carehook.errors import PayloadValidationError
from carehook.signatures import Scheme, SchemeOptions
from carehook.signatures.stripe_style import StripeStyleScheme
from carehook.vendors import EMPTY_HEADERS
from carehook.vendors._common import (
    Id,
    IntOrId,
    Model,
    Moment,
    body_id,
    event_type,
    iso,
    lenient_moment,
    sample_token,
    unknown_type,
    validate,
)

NonNegative = Annotated[int, Field(ge=0)]


class ConsultData(Model):
    """``data`` of every ``deepconsult.*`` event."""

    consult_id: Id = Field(alias="consultId")


class ConsultStarted(ConsultData):
    """``deepconsult.started``: the estimated processing time."""

    estimated_time: float | str | None = Field(default=None, alias="estimatedTime")


class ConsultProgress(ConsultData):
    """``deepconsult.progress``: percent done."""

    progress: Annotated[float, Field(ge=0, le=100)]


class ConsultCompleted(ConsultData):
    """``deepconsult.completed``: the report (text or structured)."""

    report: str | dict[str, Any] | None = None


class ConsultFailed(ConsultData):
    """``deepconsult.failed``: the error and whether a retry may succeed."""

    error: str | dict[str, Any] | None = None
    retryable: bool | None = None


class RateLimitWarning(Model):
    """``rate_limit.warning``: requests left in the window."""

    remaining: NonNegative
    limit: NonNegative
    reset_at: Moment | None = Field(default=None, alias="resetAt")


class ApiKeyExpiring(Model):
    """``api_key.expiring``: which key, and when."""

    key_id: Id = Field(alias="keyId")
    expires_at: Moment = Field(alias="expiresAt")


class QueryCompleted(Model):
    """``query.completed``: how much evidence, how confident (either may be empty)."""

    query_id: Id
    evidence_count: NonNegative | None = None
    confidence: float | None = None


class QueryFailed(Model):
    """``query.failed``: the error code and when to retry."""

    query_id: Id
    error_code: str | None = None
    retry_after: Annotated[float, Field(ge=0)] | None = None


class EvidenceUpdated(Model):
    """``evidence.updated``: a topic's new revision (older revisions are ignored downstream)."""

    topic_id: Id
    revision: IntOrId
    sources_changed: int | list[Any] | None = None


class CitationEvent(Model):
    """``citation.added`` / ``citation.retracted``."""

    citation_id: Id
    pubmed_id: IntOrId | None = None
    journal: str | None = None


class ReviewFlagged(Model):
    """``review.flagged``: why, and how severe."""

    review_id: Id
    flag_reason: str | None = None
    severity: str | None = None


#: event type -> (data model, subject kind, field naming the subject; None: one subject)
_EVENTS: dict[str, tuple[type[Model], str, str | None]] = {
    "deepconsult.started": (ConsultStarted, "consult", "consult_id"),
    "deepconsult.progress": (ConsultProgress, "consult", "consult_id"),
    "deepconsult.completed": (ConsultCompleted, "consult", "consult_id"),
    "deepconsult.failed": (ConsultFailed, "consult", "consult_id"),
    "rate_limit.warning": (RateLimitWarning, "ratelimit", None),
    "api_key.expiring": (ApiKeyExpiring, "apikey", "key_id"),
    "query.completed": (QueryCompleted, "query", "query_id"),
    "query.failed": (QueryFailed, "query", "query_id"),
    "evidence.updated": (EvidenceUpdated, "topic", "topic_id"),
    "citation.added": (CitationEvent, "citation", "citation_id"),
    "citation.retracted": (CitationEvent, "citation", "citation_id"),
    "review.flagged": (ReviewFlagged, "review", "review_id"),
}
EVENT_TYPES = tuple(_EVENTS)
#: the DeepConsult revision's types (seed 001): ``{event, data}``, no id, Stripe-style signature
DEEPCONSULT_TYPES = EVENT_TYPES[:6]
_TIME_KEYS = ("created_at", "createdAt", "created", "timestamp")


class Envelope(Model):
    """The envelope of a known OpenEvidence event (type checked separately)."""

    id: Id | None = None
    data: dict[str, Any]


def _occurred_at(payload: Mapping[str, Any]) -> datetime | None:
    for key in _TIME_KEYS:
        if key in payload:
            return lenient_moment(payload[key])
    return None


@dataclass(frozen=True, slots=True)
class OpenEvidenceVendor:
    """OpenEvidence's webhooks (seeds 001 and 003)."""

    name: str = field(default="openevidence", init=False)
    event_types: tuple[str, ...] = field(default=EVENT_TYPES, init=False)

    def scheme(self, options: SchemeOptions) -> Scheme:
        """Stripe-style ``t=,v1=`` signatures, plus the bare-hex form unless refused."""
        return StripeStyleScheme.from_options(options)

    def parse(
        self,
        body: bytes,
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str] = EMPTY_HEADERS,  # noqa: ARG002 (the protocol's)
    ) -> ParsedEvent:
        """Read id, type, subject and time; validate the payload of known types."""
        type_ = event_type(payload, self.name, ("type", "event"))
        if type_ not in _EVENTS:
            return self._parse_unknown(type_, body, payload)
        model, kind, key = _EVENTS[type_]
        context = f"{self.name} {type_}"
        envelope = validate(Envelope, payload, context)
        data = validate(model, envelope.data, context, ("data",))
        subject = f"openevidence:{kind}"
        if key is not None:
            subject = f"{subject}:{getattr(data, key)}"
        event_id = envelope.id or body_id(body)
        return ParsedEvent(event_id, type_, subject, _occurred_at(payload), handled=True)

    def _parse_unknown(self, type_: str, body: bytes, payload: Mapping[str, Any]) -> ParsedEvent:
        raw_id = payload.get("id")
        if raw_id is not None and not (isinstance(raw_id, str) and 0 < len(raw_id) <= 256):
            raise PayloadValidationError(f"{self.name} {type_}: id: invalid")
        event_id = raw_id or body_id(body)
        subject = f"openevidence:event:{event_id}"
        return ParsedEvent(event_id, type_, subject, _occurred_at(payload), handled=False)

    def sample(self, event_type: str, now: datetime, seq: int = 0) -> dict[str, Any]:
        """A realistic payload in the revision that defines ``event_type``."""
        if event_type not in _EVENTS:
            raise unknown_type(self.name, event_type, EVENT_TYPES)
        data = sample_data(event_type, now, seq)
        if event_type in DEEPCONSULT_TYPES:
            return {"event": event_type, "data": data, "created_at": iso(now)}
        token = sample_token(self.name, event_type, seq)
        return {"id": f"oe_evt_{token}", "type": event_type, "data": data}


def sample_data(event_type: str, now: datetime, seq: int) -> dict[str, Any]:
    """Realistic, synthetic ``data`` for ``event_type``; ``seq`` picks the consult / query."""
    samples: dict[str, dict[str, Any]] = {
        "deepconsult.started": {"estimatedTime": 90},
        "deepconsult.progress": {"progress": 40 + seq % 50},
        "deepconsult.completed": {
            "report": "Summary: for adults with stage 1 hypertension and low 10-year ASCVD risk, "
            "guidelines favour 3-6 months of lifestyle therapy before medication (synthetic).",
        },
        "deepconsult.failed": {"error": "evidence retrieval timed out", "retryable": True},
        "rate_limit.warning": {
            "remaining": 25 + seq % 50,
            "limit": 1000,
            "resetAt": iso(now + timedelta(hours=1)),
        },
        "api_key.expiring": {
            "keyId": f"key_{seq % 7:03d}",
            "expiresAt": iso(now + timedelta(days=14)),
        },
        "query.completed": {"evidence_count": 12, "confidence": 0.87},
        "query.failed": {"error_code": "UPSTREAM_TIMEOUT", "retry_after": 30},
        "evidence.updated": {
            "topic_id": f"topic_{seq % 30:04d}",
            "revision": 3 + seq,
            "sources_changed": 2,
        },
        "citation.added": {"journal": "Journal of Synthetic Cardiology"},
        "citation.retracted": {"journal": "Journal of Synthetic Cardiology"},
        "review.flagged": {"flag_reason": "outdated_guideline", "severity": "high"},
    }
    return {**_sample_ids(event_type, seq), **samples[event_type]}


def _sample_ids(event_type: str, seq: int) -> dict[str, Any]:
    """The entity ids of a sample: one consult / query / citation / review per ``seq``."""
    family = event_type.split(".")[0]
    ids: dict[str, dict[str, Any]] = {
        "deepconsult": {"consultId": f"dc_{seq:06d}"},
        "query": {"query_id": f"q_{seq:06d}"},
        "citation": {"citation_id": f"cit_{seq:06d}", "pubmed_id": str(30000000 + seq)},
        "review": {"review_id": f"rev_{seq:06d}"},
    }
    return ids.get(family, {})


VENDOR = OpenEvidenceVendor()
