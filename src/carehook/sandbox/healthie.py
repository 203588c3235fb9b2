"""A fake Healthie GraphQL API in Healthie's real shapes, and the WebVTT files it links to.

Served (read loosely, without a GraphQL library: the first root field of the document decides,
with its arguments from ``variables`` or inline literals; the whole object is returned whatever
the selection set asks):

- ``appointment(id:)`` with ``transcripts(status:, transcript_type:)`` (without a status filter,
  only completed ones, as Healthie does), ``user``/``provider`` and the AI scribe's
  ``generated_form_answer_group``; each transcript's ``expiring_url`` is a fresh link, issued per
  query, to ``GET <graphql dir>/files/transcripts/<token>.vtt`` on this fake (a real WebVTT file:
  Zoom-style ``Name: text`` cues for a processed recording, ``<v Name>`` spans for a real-time
  capture). A link lives ``link_ttl_seconds``; an expired one answers 403, an unknown one 404.
- ``createWebhook``, ``webhooks`` (a connection with ``nodes`` and ``page_info``),
  ``deleteWebhook`` and ``expireWebhookSignature`` over an in-memory webhook table; a refused
  input answers ``messages: [{field, message}]`` as Healthie's mutations do.

Default content is fictional and deterministic per appointment id
(:mod:`carehook.sandbox._healthie_content`): every appointment has a completed real-time capture
and a completed processed recording.

Headers, as Healthie requires them: ``Authorization: Basic <api key>`` and ``AuthorizationSource:
API`` (else HTTP 401, GraphQL ``UNAUTHENTICATED``) and ``Healthie-GraphQL-API-Version`` equal to
the fake's (else 400, ``UNSUPPORTED_API_VERSION``). The VTT files need no credentials (the link
is the credential). Test hooks: :meth:`~FakeHealthieApi.rate_limit_next`,
:meth:`~FakeHealthieApi.error_next`, :meth:`~FakeHealthieApi.fail_next`,
:meth:`~FakeHealthieApi.hide`, :meth:`~FakeHealthieApi.set_result`,
:meth:`~FakeHealthieApi.set_transcripts`, :meth:`~FakeHealthieApi.expire_next_links`,
:meth:`~FakeHealthieApi.expire_links`; :attr:`~FakeHealthieApi.requests` (``(root field, id)``),
:attr:`~FakeHealthieApi.downloads` (``(transcript id, HTTP status)``) and
:attr:`~FakeHealthieApi.webhooks`.
"""

from __future__ import annotations

import hmac
import posixpath
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from carehook.sandbox import _healthie_content as content
from carehook.sandbox._healthie_graphql import Operation, operation
from carehook.sandbox._healthie_webhooks import WebhookTable

API_VERSION = "2026-01-01"
KINDS = ("realtime_capture", "processed_recording")


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class _Link:
    appointment_id: str
    transcript_id: str
    kind: str
    expires_at: float


class FakeHealthieApi:
    """The fake Healthie GraphQL endpoint: an ASGI app (POST on any path; VTT files under
    ``/files``), with test hooks."""

    def __init__(self, api_key: str, api_version: str = API_VERSION,
                 link_ttl_seconds: float = 300.0) -> None:  # fmt: skip
        self.api_key = api_key
        self.api_version = api_version
        self.link_ttl_seconds = link_ttl_seconds
        #: every GraphQL request, as ``(root field, appointment or webhook id)``
        self.requests: list[tuple[str, str | None]] = []
        #: every VTT download, as ``(transcript id or "?", HTTP status)``
        self.downloads: list[tuple[str, int]] = []
        self.webhooks = WebhookTable()
        self._failures: deque[_Failure] = deque()
        self._errors: deque[dict[str, Any]] = deque()
        self._hidden: set[str] = set()
        self._results: dict[tuple[str, str], Any] = {}
        self._transcripts: dict[str, list[tuple[str, str]]] = {}
        self._links: dict[str, _Link] = {}
        self._born_expired = 0
        #: appointments whose AI scribe wrote no note (``generated_form_answer_group`` null)
        self._unscribed: set[str] = set()
        self.files = Starlette(routes=[Route("/transcripts/{token}", self._file)])
        self.app = Starlette(routes=[
            Mount("/files", app=self.files),
            Route("/{path:path}", self._graphql, methods=["POST"]),
        ])  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        await self.app(scope, receive, send)

    # -- test hooks -----------------------------------------------------------------------------

    def rate_limit_next(self, count: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``count`` queries with the ``TOO_MANY_REQUESTS`` GraphQL error."""
        extensions: dict[str, Any] = {"code": "TOO_MANY_REQUESTS"}
        if retry_after is not None:
            extensions["retry_after"] = retry_after
        self._errors.extend([{"message": "Too many requests, slow down", "extensions":
                              extensions}] * count)  # fmt: skip

    def error_next(self, code: str, message: str = "Something went wrong", count: int = 1) -> None:
        """Answer the next ``count`` queries with a GraphQL error (HTTP 200, ``data: null``)."""
        self._errors.extend([{"message": message, "extensions": {"code": code}}] * count)

    def fail_next(self, count: int = 1, status: int = 503, retry_after: float | None = None
                  ) -> None:  # fmt: skip
        """Answer the next ``count`` GraphQL requests with an HTTP ``status``."""
        self._failures.extend([_Failure(status, retry_after)] * count)

    def hide(self, appointment_id: str) -> None:
        """Answer ``null`` for this appointment (Healthie's "not found")."""
        self._hidden.add(appointment_id)

    def set_result(self, root_field: str, appointment_id: str, value: Any) -> None:
        """Serve ``value`` as ``data.<root_field>`` for this appointment."""
        self._results[(root_field, appointment_id)] = value

    def set_transcripts(self, appointment_id: str, transcripts: list[tuple[str, str]]) -> None:
        """This appointment's transcripts as ``(transcript_type, status)`` pairs."""
        self._transcripts[appointment_id] = list(transcripts)

    def without_scribe_note(self, appointment_id: str) -> None:
        """The appointment has no AI scribe note (as when the scribe was not used)."""
        self._unscribed.add(appointment_id)

    def expire_next_links(self, count: int = 1) -> None:
        """The next ``count`` ``expiring_url`` links are issued already expired."""
        self._born_expired += count

    def expire_links(self) -> None:
        """Every link issued so far expires now."""
        self._links = {t: _Link(link.appointment_id, link.transcript_id, link.kind, 0.0)
                       for t, link in self._links.items()}  # fmt: skip

    @property
    def issued_tokens(self) -> list[str]:
        """The secret part of every ``expiring_url`` issued so far (to look for leaks)."""
        return list(self._links)

    # -- content --------------------------------------------------------------------------------

    def transcript_id(self, appointment_id: str, kind: str) -> str:
        """The id of an appointment's transcript of one type."""
        d = content.digest(appointment_id)
        return str(content.num(d, 12, 900000, 999999) * 10 + KINDS.index(kind))

    def vtt(self, appointment_id: str, kind: str = "processed_recording") -> str:
        """The WebVTT file of an appointment's transcript."""
        return content.vtt(appointment_id, kind)

    def appointment_body(self, appointment_id: str, files_url: str = "",
                         statuses: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """The appointment, as ``data.appointment`` (links issued under ``files_url``)."""
        d = content.digest(appointment_id)
        provider, client = content.people(d)
        return {"id": appointment_id, "date": content.healthie_time(content.starts(d)),
                "pm_status": "Occurred", "contact_type": "Secure Videochat", "length": 30,
                "user": {"id": str(content.num(d, 2, 200000, 299999)), "full_name": client},
                "provider": {"id": str(content.num(d, 4, 100000, 100400)), "full_name": provider},
                "transcripts": self._transcript_list(appointment_id, files_url, statuses),
                "generated_form_answer_group": None if appointment_id in self._unscribed
                else content.scribe_note(appointment_id)}  # fmt: skip

    def _transcript_list(self, appointment_id: str, files_url: str,
                         statuses: list[str] | None) -> list[dict[str, Any]]:  # fmt: skip
        wanted = statuses or ["completed"]
        begin, end = content.transcript_times(appointment_id)
        out = []
        default = [(kind, "completed") for kind in KINDS]
        for kind, status in self._transcripts.get(appointment_id, default):
            if status not in wanted:
                continue
            tid = self.transcript_id(appointment_id, kind)
            done = status == "completed"
            url = self._issue(appointment_id, tid, kind, files_url) if done else None
            out.append({"id": tid, "status": status, "transcript_type": kind,
                        "transcript_start": content.healthie_time(begin),
                        "transcript_end": content.healthie_time(end), "expiring_url": url})
        return out

    def _issue(self, appointment_id: str, transcript_id: str, kind: str, files_url: str) -> str:
        token = secrets.token_urlsafe(24)
        expires = time.time() + self.link_ttl_seconds
        if self._born_expired:
            self._born_expired -= 1
            expires = 0.0
        self._links[token] = _Link(appointment_id, transcript_id, kind, expires)
        return f"{files_url}/transcripts/{token}.vtt?X-Amz-Expires={int(self.link_ttl_seconds)}"

    # -- the endpoints --------------------------------------------------------------------------

    async def _file(self, request: Request) -> Response:
        token = request.path_params["token"].removesuffix(".vtt")
        link = self._links.get(token)
        if link is None:
            self.downloads.append(("?", 404))
            return Response("<Error><Code>NoSuchKey</Code></Error>", 404,
                            media_type="application/xml")  # fmt: skip
        if time.time() >= link.expires_at:
            self.downloads.append((link.transcript_id, 403))
            return Response("<Error><Code>AccessDenied</Code><Message>Request has expired"
                            "</Message></Error>", 403, media_type="application/xml")
        self.downloads.append((link.transcript_id, 200))
        return Response(self.vtt(link.appointment_id, link.kind), media_type="text/vtt")

    async def _graphql(self, request: Request) -> Response:
        op = operation(await request.body())
        self.requests.append((op.root, op.key) if op else ("?", None))
        if self._failures:
            failure = self._failures.popleft()
            headers = {} if failure.retry_after is None else {
                "Retry-After": f"{failure.retry_after:g}"}  # fmt: skip
            return JSONResponse({"error": "injected failure"}, failure.status, headers=headers)
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if self._errors:
            return JSONResponse({"data": None, "errors": [self._errors.popleft()]})
        if op is None:
            return _error(200, "undefinedField", "The carehook sandbox serves appointment, "
                          "webhooks, createWebhook, deleteWebhook and expireWebhookSignature")
        return JSONResponse({"data": {op.root: self._answer(op, _files_url(request))}})

    def _answer(self, op: Operation, files_url: str) -> Any:
        if op.root != "appointment":
            return self.webhooks.answer(op)
        appointment_id = op.key or ""
        if (op.root, appointment_id) in self._results:
            return self._results[(op.root, appointment_id)]
        if appointment_id in self._hidden or not appointment_id:
            return None
        return self.appointment_body(appointment_id, files_url, op.statuses)

    def _refuse(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        source = request.headers.get("authorizationsource", "")
        if not hmac.compare_digest(auth.encode(), f"Basic {self.api_key}".encode()) or (
            source != "API"
        ):
            return _error(401, "UNAUTHENTICATED", "API key is missing or invalid")
        if request.headers.get("healthie-graphql-api-version") != self.api_version:
            return _error(400, "UNSUPPORTED_API_VERSION",
                          f"Healthie-GraphQL-API-Version must be {self.api_version}")
        return None


def _files_url(request: Request) -> str:
    """``<the GraphQL endpoint's directory>/files``, where this fake serves the VTT files."""
    url = request.url
    directory = posixpath.dirname(url.path.rstrip("/")) if url.path.strip("/") else ""
    return f"{url.scheme}://{url.netloc}{directory.rstrip('/')}/files"


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"data": None, "errors": [{"message": message,
                                                   "extensions": {"code": code}}]}, status)


__all__ = ["API_VERSION", "FakeHealthieApi"]
