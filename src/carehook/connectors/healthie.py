"""Healthie's GraphQL API: appointments, their transcripts, and webhook registration.

One POST per call to the source's ``api_url`` (``https://api.gethealthie.com/graphql``; staging
``https://staging-api.gethealthie.com/graphql``) with the headers VENDORS.md gives::

    Authorization: Basic <api_key>          (the key itself, not base64 of user:password)
    AuthorizationSource: API
    Healthie-GraphQL-API-Version: 2026-01-01

Every query document, with the schema types it relies on, is in
:mod:`carehook.connectors.healthie_graphql`. A transcript is read as Healthie serves it: the
appointment's ``transcripts`` give an ``expiring_url`` per transcript, and
:meth:`HealthieClient.transcript_file` downloads that WebVTT file with a plain GET (no Healthie
credentials: the link is presigned and may point to another host), through the same SSRF-guarded
client. The link is a credential: it is never logged and never part of an error message.

Errors (messages carry the operation, ids, statuses and GraphQL error codes only; a GraphQL
error's ``message`` may echo input, so it is never kept)::

    GraphQL error TOO_MANY_REQUESTS        -> RetryableError (retry_after from the error's
                                              extensions retry_after / retryAfter, else Retry-After)
    timeout, connection error, 408/429/5xx -> RetryableError
    other HTTP 4xx, any other GraphQL error -> PermanentError("... GraphQL error <CODE>")
    appointment null                        -> PermanentError("... not found")
    a body that fails validation            -> PermanentError (field locations only)
    transcript file 403 / 404               -> TranscriptLinkExpired (a RetryableError: the step
                                              queries the appointment again for a fresh link)
    a mutation's ``messages``               -> PermanentError (the fields named, not the text)
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from carehook.connectors import healthie_graphql as gql
from carehook.connectors._http import retry_after_seconds
from carehook.connectors.abridge import (
    parse_json,
    request_failure,
    status_failure,
    validation_failure,
)
from carehook.connectors.webhooks import RegisteredWebhook
from carehook.errors import PermanentError, RetryableError, StepError
from carehook.workflows.ports import (
    Appointment,
    ClinicalNote,
    NoteSection,
    TranscriptLink,
    TranscriptLinkExpired,
)

VENDOR = "healthie"
API_VERSION = "2026-01-01"
RATE_LIMITED = "TOO_MANY_REQUESTS"
#: the largest transcript file read (an hour of speech is well under 1 MiB)
MAX_TRANSCRIPT_BYTES = 16 * 1024 * 1024

_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


def _healthie_time(value: Any) -> Any:
    """Healthie's ``"YYYY-MM-DD HH:MM:SS -0500"``; ISO 8601 is left to pydantic."""
    if isinstance(value, str):
        try:
            return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            return value
    return value


#: a time as Healthie writes it, or ISO 8601
HealthieTime = Annotated[datetime, BeforeValidator(_healthie_time)]


class _User(_Body):
    id: str | None = None
    full_name: str | None = None


class _Transcript(_Body):
    id: str = Field(min_length=1)
    status: str = "completed"
    transcript_type: str | None = None
    transcript_start: HealthieTime | None = None
    transcript_end: HealthieTime | None = None
    expiring_url: str | None = None

    def value(self) -> TranscriptLink:
        return TranscriptLink(self.id, self.status, self.transcript_type, self.expiring_url,
                              self.transcript_start, self.transcript_end)  # fmt: skip


class _Module(_Body):
    id: str | None = None
    label: str | None = None
    mod_type: str | None = None


class _Answer(_Body):
    id: str | None = None
    answer: str | None = None
    displayed_answer: str | None = None
    custom_module: _Module | None = None


class _AnswerGroup(_Body):
    id: str = Field(min_length=1)
    kind: str | None = None
    created_at: HealthieTime | None = None
    generated_form_answers: list[_Answer] = Field(default_factory=list)

    def value(self, appointment: _Appointment) -> ClinicalNote:
        """One section per answered module: its label and answer (keys uncoded)."""
        sections = []
        for answer in self.generated_form_answers:
            text = answer.displayed_answer or answer.answer or ""
            module = answer.custom_module or _Module()
            if not text.strip():
                continue
            sections.append(NoteSection(f"HEALTHIE_MODULE_{module.id or answer.id}",
                                        module.label or "Note", text))  # fmt: skip
        return ClinicalNote(
            vendor=VENDOR, note_id=self.id, sections=tuple(sections), title="AI scribe note",
            patient_id=appointment.user.id if appointment.user else None,
            author_id=appointment.provider.id if appointment.provider else None,
            created_at=self.created_at, external_id=appointment.id,
        )  # fmt: skip


class _Appointment(_Body):
    id: str = Field(min_length=1)
    date: HealthieTime | None = None
    pm_status: str | None = None
    user: _User | None = None
    provider: _User | None = None
    transcripts: list[_Transcript] | None = None
    generated_form_answer_group: _AnswerGroup | None = None

    def value(self) -> Appointment:
        group = self.generated_form_answer_group
        return Appointment(
            self.id, patient_id=self.user.id if self.user else None,
            provider_id=self.provider.id if self.provider else None, starts_at=self.date,
            status=self.pm_status, transcripts=tuple(t.value() for t in self.transcripts or ()),
            patient_name=self.user.full_name if self.user else None,
            provider_name=self.provider.full_name if self.provider else None,
            scribe_note=group.value(self) if group else None,
        )  # fmt: skip


class _Event(_Body):
    event_type: str


class _Webhook(_Body):
    id: str = Field(min_length=1)
    url: str | None = None
    is_enabled: bool | None = None
    webhook_events: list[_Event] | None = None
    signature_secret: str | None = Field(default=None, repr=False)

    def value(self) -> RegisteredWebhook:
        events = tuple(e.event_type for e in self.webhook_events or ())
        return RegisteredWebhook(self.id, self.url or "", events, enabled=self.is_enabled,
                                 secret=self.signature_secret)  # fmt: skip


class _PageInfo(_Body):
    has_next_page: bool = False
    end_cursor: str | None = None


class _Connection(_Body):
    nodes: list[_Webhook]
    page_info: _PageInfo = _PageInfo()


class _Mutation(_Body):
    webhook: _Webhook | None = None
    messages: list[dict[str, Any]] | None = None


class HealthieClient:
    """``HealthieApi`` and webhook registration on an injected ``httpx.AsyncClient`` (its owner
    sets timeouts, limits and the outbound guard). ``url`` is the GraphQL endpoint itself."""

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
        """One appointment: client, provider, start, status, its completed and processing
        transcripts (with fresh ``expiring_url`` links) and the AI scribe's note."""
        what = f"healthie appointment {appointment_id}"
        variables = {"id": appointment_id, "statuses": list(gql.TRANSCRIPT_STATUSES)}
        found = await self._query(gql.APPOINTMENT, variables, "appointment", what)
        return _model(_Appointment, what, found).value()

    async def transcript_file(self, link: TranscriptLink) -> str:
        """The WebVTT text behind ``link.url`` (no credentials sent; the link is presigned)."""
        what = f"healthie transcript {link.transcript_id} file"
        if not link.url:
            raise TranscriptLinkExpired(f"{what}: no expiring_url")
        try:
            async with self._http.stream("GET", link.url,
                                         headers={"Accept": "text/vtt, */*"}) as response:
                if response.status_code in (403, 404, 410):
                    raise TranscriptLinkExpired(f"{what}: {response.status_code} (link expired)")
                if not response.is_success:
                    raise status_failure(what, response)
                body = await _read_limited(response, what)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise request_failure(what, exc) from None
        return body.decode("utf-8-sig", errors="replace")

    # -- webhook registration -------------------------------------------------------------------

    async def create_webhook(self, url: str, events: tuple[str, ...]) -> RegisteredWebhook:
        """``createWebhook``: enabled, retried by Healthie; the answer carries its secret."""
        payload = {"url": url, "is_enabled": True, "should_retry": True,
                   "webhook_events": [{"event_type": e} for e in events]}  # fmt: skip
        return await self._mutate(gql.CREATE_WEBHOOK, payload, "createWebhook",
                                  "healthie createWebhook")  # fmt: skip

    async def list_webhooks(self) -> list[RegisteredWebhook]:
        """Every webhook of the account (``webhooks`` pages followed to the end)."""
        found: list[RegisteredWebhook] = []
        after: str | None = None
        for _ in range(100):  # a bound: 100 pages of 100
            page = await self._query(gql.LIST_WEBHOOKS, {"first": 100, "after": after},
                                     "webhooks", "healthie webhooks")  # fmt: skip
            connection = _model(_Connection, "healthie webhooks", page)
            found += [w.value() for w in connection.nodes]
            if not connection.page_info.has_next_page or not connection.page_info.end_cursor:
                break
            after = connection.page_info.end_cursor
        return found

    async def delete_webhook(self, webhook_id: str) -> None:
        """``deleteWebhook``."""
        await self._mutate(gql.DELETE_WEBHOOK, {"id": webhook_id}, "deleteWebhook",
                           f"healthie deleteWebhook {webhook_id}")  # fmt: skip

    async def rotate_webhook_secret(self, webhook_id: str) -> RegisteredWebhook:
        """``expireWebhookSignature``: Healthie signs with a new secret from now on."""
        return await self._mutate(gql.EXPIRE_WEBHOOK_SIGNATURE, {"id": webhook_id},
                                  "expireWebhookSignature",
                                  f"healthie expireWebhookSignature {webhook_id}")  # fmt: skip

    async def _mutate(self, document: str, payload: dict[str, Any], root: str, what: str
                      ) -> RegisteredWebhook:  # fmt: skip
        found = await self._query(document, {"input": payload}, root, what)
        result = _model(_Mutation, what, found)
        if result.messages:
            fields = sorted({str(m.get("field") or "?") for m in result.messages})
            raise PermanentError(f"{what}: refused (fields: {', '.join(fields)[:200]})")
        if result.webhook is None:
            raise PermanentError(f"{what}: no webhook in the answer")
        return result.webhook.value()

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


async def _read_limited(response: httpx.Response, what: str) -> bytes:
    """The body, refused (permanently) past :data:`MAX_TRANSCRIPT_BYTES` without reading on."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_TRANSCRIPT_BYTES:
            raise PermanentError(f"{what}: larger than {MAX_TRANSCRIPT_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


M = TypeVar("M", bound=_Body)


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


class HealthieWebhooks:
    """:class:`~carehook.connectors.webhooks.WebhookRegistrar` over a :class:`HealthieClient`:
    Healthie generates each webhook's secret and can rotate it."""

    vendor_secret = True
    can_rotate = True

    def __init__(self, client: HealthieClient) -> None:
        self._client = client

    async def create(self, url: str, events: tuple[str, ...], secret: str | None
                     ) -> RegisteredWebhook:  # fmt: skip
        """``createWebhook`` (``secret`` is unused: Healthie makes its own)."""
        del secret
        return await self._client.create_webhook(url, events)

    async def list(self) -> list[RegisteredWebhook]:
        """``webhooks``."""
        return await self._client.list_webhooks()

    async def delete(self, webhook_id: str) -> None:
        """``deleteWebhook``."""
        await self._client.delete_webhook(webhook_id)

    async def rotate(self, webhook_id: str) -> RegisteredWebhook:
        """``expireWebhookSignature``."""
        return await self._client.rotate_webhook_secret(webhook_id)


__all__ = ["API_VERSION", "HealthieClient", "HealthieWebhooks"]
