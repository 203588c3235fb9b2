"""Abridge's REST API: the note, patient summary and provider fetch behind ``AbridgeApi``.

No public Abridge API specification exists (VENDORS.md), so this module *defines* the shape
carehook assumes; the sandbox's fake (:mod:`carehook.sandbox.abridge`) serves exactly this shape.
Check it against the contract Abridge gives you before going live; the base URL and credentials
are per source (``api_url``, ``api_token``, ``org_id``)::

    GET {api_url}/v1/sessions/{session_id}/note            the session's current note
    GET {api_url}/v1/notes/{note_id}                       a note by its id
    GET {api_url}/v1/sessions/{session_id}/patient-summary the patient-facing summary
    GET {api_url}/v1/providers/{provider_id}               a clinician on the roster

    Authorization: Bearer <api_token>
    X-Org-Id: <org_id>                                     (only when the source has one)

Webhook registration, as the brief's curl shows it (list and delete are assumed; see
:mod:`carehook.connectors.rest_webhooks` for the bodies)::

    POST   {api_url}/webhooks         {"url", "events": [...], "secret"}
    GET    {api_url}/webhooks
    DELETE {api_url}/webhooks/{id}

Responses (JSON; unknown fields are ignored)::

    note      {"id", "session_id", "status": "draft" | "final", "version": 1, "title",
               "created_at", "locale", "sections": [{"key", "title", "text"}, ...],
               "ehr": {"patient_id", "encounter_id", "practitioner_id"}}   (ehr: EHR ids, optional)
    summary   {"id", "session_id", "text", "language", "ehr": {"patient_id"}}
    provider  {"id", "family_name", "given_names": [...], "npi", "email",
               "status": "active" | "inactive"}

When a note event names both a session and a note, the session's current note is fetched (a
reviewed or signed note is the session's current one).

Errors (messages carry the operation, ids and statuses only, never content or credentials)::

    timeout, connection error, HTTP 408/429/5xx -> RetryableError (retry_after = Retry-After)
    HTTP 404                 -> PermanentError("abridge note for session <id>: 404")
    other 4xx, a body that is not JSON or fails validation
                             -> PermanentError (validation: field locations and error types
                                only, never values)

The helpers :func:`request_failure` and :func:`status_failure` are shared with the Healthie
client; every connector reads ``Retry-After`` with :mod:`carehook.connectors._http`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carehook.connectors._http import retry_after_seconds
from carehook.errors import PermanentError, RetryableError, StepError
from carehook.workflows.ports import ClinicalNote, NoteSection, PatientSummary, Provider

if TYPE_CHECKING:
    from carehook.connectors.rest_webhooks import RestWebhooks

VENDOR = "abridge"
#: the organisation header of every Abridge call (the brief's registration curl names it)
ORG_HEADER = "X-Org-Id"

# -- shared HTTP failure mapping ----------------------------------------------------------------


def request_failure(what: str, exc: Exception) -> StepError:
    """The error for a request that got no response: retryable unless the URL itself is bad."""
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return PermanentError(f"{what}: invalid API URL ({type(exc).__name__})")
    if isinstance(exc, httpx.TimeoutException):
        return RetryableError(f"{what}: timeout ({type(exc).__name__})")
    return RetryableError(f"{what}: request failed ({type(exc).__name__})")


def status_failure(what: str, response: httpx.Response, detail: str = "") -> StepError:
    """The error for a non-2xx answer: 408, 429 and 5xx are retryable, other statuses not."""
    status = response.status_code
    message = f"{what}: {status}{detail}"
    if status in (408, 429) or status >= 500:
        return RetryableError(message, retry_after=retry_after_seconds(
            response.headers.get("retry-after")))
    return PermanentError(message)


def validation_failure(what: str, exc: ValidationError) -> PermanentError:
    """A response that does not fit its model: locations and error types, never the values."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'} ({err['type']})"
        for err in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    return PermanentError(f"{what}: invalid response at {', '.join(parts[:5])}")


# -- response models ----------------------------------------------------------------------------


class _Body(BaseModel):
    """A response object: unknown fields ignored, numeric ids taken as strings."""

    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class _Ehr(_Body):
    patient_id: str | None = None
    encounter_id: str | None = None
    practitioner_id: str | None = None


class _Section(_Body):
    key: str = Field(min_length=1)
    title: str
    text: str


class _Note(_Body):
    id: str = Field(min_length=1)
    session_id: str | None = None
    title: str | None = None
    created_at: datetime | None = None
    locale: str | None = None
    sections: list[_Section]
    ehr: _Ehr = _Ehr()

    def value(self) -> ClinicalNote:
        sections = tuple(NoteSection(s.key, s.title, s.text) for s in self.sections)
        return ClinicalNote(
            vendor=VENDOR, note_id=self.id, sections=sections,
            title=self.title or "Clinical note", session_id=self.session_id,
            patient_id=self.ehr.patient_id, encounter_id=self.ehr.encounter_id,
            author_id=self.ehr.practitioner_id, created_at=self.created_at, locale=self.locale,
        )  # fmt: skip


class _Summary(_Body):
    id: str = Field(min_length=1)
    session_id: str = Field(min_length=1)
    text: str
    language: str | None = None
    ehr: _Ehr = _Ehr()

    def value(self) -> PatientSummary:
        return PatientSummary(self.id, self.session_id, self.text, patient_id=self.ehr.patient_id,
                              language=self.language)  # fmt: skip


class _Provider(_Body):
    id: str = Field(min_length=1)
    family_name: str = Field(min_length=1)
    given_names: list[str] = Field(default_factory=list)
    npi: str | None = Field(default=None, pattern=r"^\d{10}$")
    email: str | None = None
    status: str = "active"

    def value(self) -> Provider:
        return Provider(self.id, self.family_name, tuple(self.given_names), npi=self.npi,
                        email=self.email, active=self.status.lower() == "active")  # fmt: skip


M = TypeVar("M", bound=_Body)


def parse_json(what: str, response: httpx.Response) -> Any:
    """The JSON body of a response, or PermanentError (never quoting the body)."""
    try:
        return response.json()
    except ValueError:
        raise PermanentError(f"{what}: response is not JSON") from None


def _model(model: type[M], what: str, body: Any) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_failure(what, exc) from None


# -- the client ---------------------------------------------------------------------------------


class AbridgeClient:
    """``AbridgeApi`` on an injected ``httpx.AsyncClient`` (its owner sets timeouts and limits)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, token: str,
                 org_id: str | None) -> None:  # fmt: skip
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if org_id:
            self._headers[ORG_HEADER] = org_id

    def __repr__(self) -> str:
        return f"AbridgeClient({self._base!r})"

    async def note(self, session_id: str | None, note_id: str | None) -> ClinicalNote:
        """The session's current note (``session_id`` given) or the note ``note_id``."""
        if session_id is not None:
            what = f"abridge note for session {session_id}"
            path = f"/v1/sessions/{_segment(session_id)}/note"
        elif note_id is not None:
            what, path = f"abridge note {note_id}", f"/v1/notes/{_segment(note_id)}"
        else:
            raise PermanentError("abridge note: neither a session id nor a note id")
        return _model(_Note, what, await self._get(path, what)).value()

    async def patient_summary(self, session_id: str) -> PatientSummary:
        """The patient-facing summary of a session."""
        what = f"abridge patient summary for session {session_id}"
        body = await self._get(f"/v1/sessions/{_segment(session_id)}/patient-summary", what)
        return _model(_Summary, what, body).value()

    async def provider(self, provider_id: str) -> Provider:
        """A clinician on the organisation's roster."""
        what = f"abridge provider {provider_id}"
        body = await self._get(f"/v1/providers/{_segment(provider_id)}", what)
        return _model(_Provider, what, body).value()

    async def _get(self, path: str, what: str) -> Any:
        try:
            response = await self._http.get(self._base + path, headers=self._headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise request_failure(what, exc) from exc
        if not response.is_success:
            raise status_failure(what, response)
        return parse_json(what, response)


def _segment(value: str) -> str:
    """An id as one path segment: ``/``, ``?``, ``#`` and ``..`` cannot steer the request."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if set(value) <= {"."} else encoded


__all__ = [
    "AbridgeClient",
    "parse_json",
    "request_failure",
    "status_failure",
    "validation_failure",
]



def abridge_webhooks(http: httpx.AsyncClient, api_url: str, token: str, org_id: str | None
                     ) -> RestWebhooks:  # fmt: skip
    """The webhook registrar of one Abridge organisation (``POST {api_url}/webhooks``)."""
    from carehook.connectors.rest_webhooks import RestWebhooks  # it builds on this module

    headers = {"Authorization": f"Bearer {token}"}
    if org_id:
        headers[ORG_HEADER] = org_id
    return RestWebhooks(http, api_url.rstrip("/") + "/webhooks", headers, VENDOR)
