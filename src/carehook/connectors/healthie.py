"""Healthie's GraphQL API: the appointment and AI-scribe transcript behind ``HealthieApi``.

One POST per call to the source's ``api_url`` (``https://api.gethealthie.com/graphql``; staging
``https://staging-api.gethealthie.com/graphql``) with the headers VENDORS.md gives::

    Authorization: Basic <api_key>          (the key itself, not base64 of user:password)
    AuthorizationSource: API
    Healthie-GraphQL-API-Version: 2026-01-01

The appointment query uses Healthie's documented ``appointment(id:)`` fields (``date`` is
Healthie's ``"2026-03-02 09:30:00 -0500"``, ``user`` the client, ``provider`` the provider).
Healthie does not document how its AI scribe's transcripts are read, so
:data:`TRANSCRIPT_QUERY` (``appointmentTranscript(appointment_id:)`` with ``entries { speaker
text start_ms end_ms }``) is carehook's assumption, shared with the sandbox's fake
(:mod:`carehook.sandbox.healthie`): **check it against Healthie's schema** before going live.

Errors (messages carry the operation, ids, statuses and GraphQL error codes only; a GraphQL
error's ``message`` may echo input, so it is never kept)::

    GraphQL error TOO_MANY_REQUESTS        -> RetryableError (retry_after from the error's
                                              extensions retry_after / retryAfter, else Retry-After)
    timeout, connection error, 408/429/5xx -> RetryableError
    other HTTP 4xx, any other GraphQL error -> PermanentError("... GraphQL error <CODE>")
    appointment or transcript null          -> PermanentError("... not found")
    a body that fails validation            -> PermanentError (field locations only)
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from carehook.connectors._http import retry_after_seconds
from carehook.connectors.abridge import (
    parse_json,
    request_failure,
    status_failure,
    validation_failure,
)
from carehook.errors import PermanentError, RetryableError, StepError
from carehook.workflows.ports import Appointment, Transcript, TranscriptItem

VENDOR = "healthie"
API_VERSION = "2026-01-01"
RATE_LIMITED = "TOO_MANY_REQUESTS"

APPOINTMENT_QUERY = """\
query CarehookAppointment($id: ID) {
  appointment(id: $id) {
    id
    date
    pm_status
    user { id }
    provider { id }
  }
}
"""

TRANSCRIPT_QUERY = """\
query CarehookAppointmentTranscript($appointment_id: ID!) {
  appointmentTranscript(appointment_id: $appointment_id) {
    id
    created_at
    language
    entries { speaker text start_ms end_ms }
  }
}
"""

_SPEAKERS = {"DOCTOR": "DOCTOR", "PROVIDER": "DOCTOR", "CLINICIAN": "DOCTOR",
             "PATIENT": "PATIENT", "CLIENT": "PATIENT"}  # fmt: skip
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class _Ref(_Body):
    id: str | None = None


class _Appointment(_Body):
    id: str = Field(min_length=1)
    date: datetime | None = None
    pm_status: str | None = None
    user: _Ref | None = None
    provider: _Ref | None = None

    @field_validator("date", mode="before")
    @classmethod
    def _healthie_date(cls, value: Any) -> Any:
        """Healthie's ``"YYYY-MM-DD HH:MM:SS -0500"``; ISO 8601 is accepted as well."""
        if isinstance(value, str):
            try:
                return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S %z")
            except ValueError:
                return value  # left to pydantic's ISO 8601 parsing
        return value

    def value(self) -> Appointment:
        return Appointment(self.id, patient_id=self.user.id if self.user else None,
                           provider_id=self.provider.id if self.provider else None,
                           starts_at=self.date, status=self.pm_status)  # fmt: skip


class _Entry(_Body):
    speaker: str | None = None
    text: str
    start_ms: int | None = Field(default=None, ge=0)
    end_ms: int | None = Field(default=None, ge=0)

    def value(self) -> TranscriptItem:
        speaker = _SPEAKERS.get((self.speaker or "").strip().upper(), "UNSPECIFIED")
        return TranscriptItem(speaker, self.text, start_ms=self.start_ms, end_ms=self.end_ms)


class _Transcript(_Body):
    id: str = Field(min_length=1)
    created_at: datetime | None = None
    language: str | None = None
    entries: list[_Entry]

    def value(self, appointment_id: str) -> Transcript:
        return Transcript(VENDOR, self.id, tuple(e.value() for e in self.entries),
                          language=self.language, created_at=self.created_at,
                          external_id=appointment_id)  # fmt: skip


class HealthieClient:
    """``HealthieApi`` on an injected ``httpx.AsyncClient`` (its owner sets timeouts and limits).

    ``url`` is the GraphQL endpoint itself; the transcript's ``external_id`` is the appointment id.
    """

    def __init__(self, http: httpx.AsyncClient, url: str, api_key: str, *,
                 api_version: str = API_VERSION) -> None:  # fmt: skip
        self._http = http
        self._url = url
        self._headers = {
            "Authorization": f"Basic {api_key}",
            "AuthorizationSource": "API",
            "Healthie-GraphQL-API-Version": api_version,
            "Accept": "application/json",
        }

    def __repr__(self) -> str:
        return f"HealthieClient({self._url!r})"

    async def appointment(self, appointment_id: str) -> Appointment:
        """One appointment: its client (patient), provider, start and ``pm_status``."""
        what = f"healthie appointment {appointment_id}"
        found = await self._query(APPOINTMENT_QUERY, {"id": appointment_id}, "appointment", what)
        return _model(_Appointment, what, found).value()

    async def transcript(self, appointment_id: str) -> Transcript:
        """The AI scribe's transcript of an appointment, entries in spoken order."""
        what = f"healthie transcript of appointment {appointment_id}"
        found = await self._query(TRANSCRIPT_QUERY, {"appointment_id": appointment_id},
                                  "appointmentTranscript", what)  # fmt: skip
        return _model(_Transcript, what, found).value(appointment_id)

    async def _query(self, query: str, variables: dict[str, Any], root: str, what: str) -> Any:
        """``data[root]`` of one GraphQL request; every failure mapped to a StepError."""
        try:
            response = await self._http.post(
                self._url, json={"query": query, "variables": variables}, headers=self._headers
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise request_failure(what, exc) from exc
        body = parse_json(what, response) if response.is_success else _json_or_none(response)
        errors = _errors(body)
        if errors:
            raise _graphql_failure(what, errors, response)
        if not response.is_success:
            raise status_failure(what, response)
        data = body.get("data") if isinstance(body, dict) else None
        found = data.get(root) if isinstance(data, dict) else None
        if found is None:
            raise PermanentError(f"{what}: not found")
        return found


M = TypeVar("M", _Appointment, _Transcript)


def _model(model: type[M], what: str, found: Any) -> M:
    try:
        return model.model_validate(found)
    except ValidationError as exc:
        raise validation_failure(what, exc) from None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _errors(body: Any) -> list[dict[str, Any]]:
    """The GraphQL ``errors`` list (objects only), empty when there is none."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _code(error: dict[str, Any]) -> str:
    """An error's ``extensions.code``, only if it looks like a code (it is stored and shown)."""
    extensions = error.get("extensions")
    code = extensions.get("code") if isinstance(extensions, dict) else None
    if code is None:
        return "NO_CODE"
    return str(code) if _CODE.match(str(code)) else "INVALID_CODE"


def _graphql_failure(what: str, errors: list[dict[str, Any]], response: httpx.Response
                     ) -> StepError:  # fmt: skip
    """Rate limiting is retryable; an HTTP failure keeps its status mapping; the rest is final."""
    codes = sorted({_code(e) for e in errors})
    limited = [e for e in errors if _code(e) == RATE_LIMITED]
    if limited:
        retry_after = _extension_retry_after(limited[0])
        if retry_after is None:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return RetryableError(f"{what}: GraphQL error {RATE_LIMITED}", retry_after=retry_after)
    if not response.is_success:
        return status_failure(what, response, f" (GraphQL error {', '.join(codes)})")
    return PermanentError(f"{what}: GraphQL error {', '.join(codes)}")


def _extension_retry_after(error: dict[str, Any]) -> float | None:
    extensions = error.get("extensions")
    if not isinstance(extensions, dict):
        return None
    for key in ("retry_after", "retryAfter", "retry_after_seconds"):
        value = extensions.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return max(0.0, float(value))
        if isinstance(value, str):
            return retry_after_seconds(value)
    return None


__all__ = ["API_VERSION", "APPOINTMENT_QUERY", "TRANSCRIPT_QUERY", "HealthieClient"]
