"""``POST /webhooks/{source}``: read bytes, verify, parse, commit, answer. Nothing else.

The order of checks: source known (404) → method POST (405) → address allowed (403) →
declared size (413) → content type (415) → body read under the cap and the body timeout (413,
408) → signature on the raw bytes (401) → UTF-8 JSON object, no BOM (400) → vendor payload
model and storable ids (422) → durable commit (200, or 503 so the sender retries). Every
request leaves one request-log row with its outcome and cause (a 500 too), except a 503 (the
store cannot be written; counted in ``carehook_requests_total{outcome="unavailable"}``) and
rejected requests over ``[server] rejected_log_per_minute`` per source (counted in
``carehook_request_log_dropped_total``). Error bodies are generic, and the cause goes to the log
and the request log only.

This is the hot path, so it is a plain ASGI app (as Starlette's own middleware are): no
Request, Route or Response objects per delivery, headers read once into a dict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json
from starlette.types import Receive, Scope, Send

from carehook.envelope import Envelope, RequestRecord, SignedRequest, scrub
from carehook.errors import (
    AddressNotAllowed,
    BodyTooLarge,
    CarehookError,
    MethodNotAllowed,
    PayloadError,
    PayloadValidationError,
    RequestTimedOut,
    StorageError,
    UnknownSource,
    UnstorableValue,
    UnsupportedMediaType,
    VerificationError,
)
from carehook.inbox.port import InboxStore
from carehook.observability import Metrics, get_logger
from carehook.sources import Source, client_address

PREFIX = "/webhooks/"
#: the scope key the server guard sets when a request's body timed out (``carehook.web.server``)
BODY_TIMED_OUT = "carehook.body_timed_out"

#: the one mapping from error class to HTTP status and generic body
STATUS_OF: dict[type[CarehookError], tuple[int, str]] = {
    UnknownSource: (404, "unknown source"),
    AddressNotAllowed: (403, "forbidden"),
    BodyTooLarge: (413, "payload too large"),
    MethodNotAllowed: (405, "method not allowed"),
    RequestTimedOut: (408, "request timeout"),
    UnsupportedMediaType: (415, "unsupported media type"),
    VerificationError: (401, "invalid signature"),
    UnstorableValue: (422, "invalid payload"),
    PayloadValidationError: (422, "invalid payload"),
    PayloadError: (400, "bad request"),
    StorageError: (503, "temporarily unavailable"),
}

_JSON = "application/json"
_RECEIVED = b'{"received":true}'
_DUPLICATE = b'{"status":"duplicate"}'
_log = get_logger("carehook.ingress")
_ALLOW_POST = ((b"allow", b"POST"),)
_RETRY_AFTER = ((b"retry-after", b"5"),)


def _status_of(exc: CarehookError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500, "internal error"


def _cause_of(exc: CarehookError) -> str:
    if isinstance(exc, VerificationError):
        return f"signature:{exc.reason}"
    if isinstance(exc, PayloadError):
        return f"payload:{exc.reason}"[:500]
    if isinstance(exc, UnknownSource):
        return "unknown_source"
    return getattr(exc, "cause", type(exc).__name__)


async def _answer(send: Send, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
                  ) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}, separators=(",", ":")).encode()


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers as a plain dict (lower-case names; a repeated header: the last)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


@dataclass(slots=True)
class Ingress:
    """The webhook endpoint as an ASGI app (built once by the composition root)."""

    sources: Mapping[str, Source]
    store: InboxStore
    metrics: Metrics
    clock: Callable[[], float] = time.time
    #: request-log rows of rejected requests per source per minute
    rejected_log_per_minute: int = 600
    _budget: dict[str, int] = field(default_factory=dict, init=False)
    _minute: int = field(default=0, init=False)
    #: deliveries between arrival and answer now (the in-process worker gives way to them)
    in_flight: int = field(default=0, init=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one delivery to ``/webhooks/<source>``."""
        self.in_flight += 1
        try:
            await self._handle(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"][len(PREFIX):]
        started = time.perf_counter()
        client = scope.get("client")
        record = _Record(scrub(name, 64), client[0] if client else "", self.clock())
        headers = _headers(scope)
        try:
            envelope = await self._admit(scope, receive, headers, name, record)
            new = await self.store.accept(envelope, record.row(200, "accepted"))
        except CarehookError as exc:
            await self._refuse(send, exc, record, started)
            return
        except Exception as exc:  # a bug still leaves a row and answers 500
            await self._fail(send, exc, record, started)
            return
        outcome = "accepted" if new else "duplicate"
        self._observe(name, outcome, started)
        # every request is in the request log already; this line is for following along
        _log.debug(
            "webhook.accepted" if new else "webhook.duplicate",
            source=name, event_id=envelope.event_id, type=envelope.type, outcome=outcome,
            secret_index=envelope.secret_index, size=record.size,
        )  # fmt: skip
        await _answer(send, 200, _RECEIVED if new else _DUPLICATE)

    async def _admit(
        self, scope: Scope, receive: Receive, headers: dict[str, str], name: str, record: _Record
    ) -> Envelope:
        """Every check up to and including parsing; raises the error that decides the status."""
        source = self.sources.get(name)
        if source is None:
            raise UnknownSource(record.source)
        if scope["method"] != "POST":
            raise MethodNotAllowed()
        if "x-forwarded-for" in headers:
            record.remote_addr = scrub(client_address(
                record.remote_addr, headers["x-forwarded-for"], source.trusted_proxies
            ), 64)  # fmt: skip
        if not source.address_allowed(record.remote_addr):
            raise AddressNotAllowed()
        _check_declared_length(headers, source.max_body_bytes)
        if not _is_json(headers.get("content-type", "")):
            raise UnsupportedMediaType()
        body = await _read_capped(scope, receive, source.max_body_bytes)
        record.size = len(body)
        signed = SignedRequest(
            method=scope["method"],
            path=source.public_path,
            query=scope["query_string"].decode("latin-1"),
            headers=headers,
            body=body,
        )
        # the store records the secret's id, which a retired secret never shifts
        secret_index = source.secret_ids[source.scheme.verify(signed, source.secrets, record.now)]
        payload = _json_object(body)
        parsed = source.vendor.parse(body, payload, headers=headers)
        record.event_id = parsed.event_id
        return Envelope(
            source=source.name,
            vendor=source.vendor.name,
            event_id=parsed.event_id,
            type=parsed.type,
            subject=parsed.subject,
            occurred_at=parsed.occurred_at,
            received_at=record.received_at,
            payload=body,
            secret_index=secret_index,
            handled=parsed.handled,
        )

    async def _refuse(
        self, send: Send, exc: CarehookError, record: _Record, started: float
    ) -> None:
        status, message = _status_of(exc)
        cause = scrub(_cause_of(exc), 500)
        outcome = "unavailable" if status == 503 else "rejected"
        if status != 503:
            outcome = await self._log_refusal(record.row(status, outcome, cause), record.now)
        self._observe(record.source, outcome, started, cause)
        if outcome.endswith("_dropped"):  # a flood: counted, neither in the request log nor here
            await _answer(send, status, _error_body(message), _ALLOW_POST if status == 405 else ())
            return
        _log.warning(
            "webhook.rejected" if status != 503 else "webhook.unavailable",
            source=record.source, status=status, cause=cause, remote_addr=record.remote_addr,
            event_id=record.event_id, error_class=type(exc).__name__,
        )  # fmt: skip
        extra = _RETRY_AFTER if status == 503 else _ALLOW_POST if status == 405 else ()
        await _answer(send, status, _error_body(message), extra)

    async def _fail(self, send: Send, exc: Exception, record: _Record, started: float) -> None:
        """A bug (not a CarehookError): a 500 with its class in the request log and the log."""
        cause = f"internal:{type(exc).__name__}"
        outcome = await self._log_refusal(record.row(500, "error", cause), record.now)
        self._observe(record.source, outcome, started, cause)
        _log.error("webhook.error", source=record.source, status=500, cause=cause,
                   event_id=record.event_id, error_class=type(exc).__name__)  # fmt: skip
        await _answer(send, 500, _error_body("internal error"))

    async def _log_refusal(self, row: RequestRecord, now: float) -> str:
        """Write ``row`` unless its source is over its budget this minute; the outcome
        (``<outcome>_dropped`` over the budget, ``<outcome>_unlogged`` if the write failed)."""
        known = row.source if row.source in self.sources else "_unknown"
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._budget = minute, {}
        used = self._budget.get(known, 0)
        if used >= self.rejected_log_per_minute:
            self.metrics.request_log_dropped.labels(known).inc()
            return f"{row.outcome}_dropped"
        self._budget[known] = used + 1
        try:
            await self.store.log_request(row)
        except Exception:  # the row is best effort: the answer must still go out
            return f"{row.outcome}_unlogged"
        return row.outcome

    def _observe(self, source: str, outcome: str, started: float, cause: str = "") -> None:
        known = source if source in self.sources else "_unknown"
        self.metrics.observe_request(known, outcome, time.perf_counter() - started, cause)


class _Record:
    """What the request log will say about this request, filled in as checks pass."""

    __slots__ = ("event_id", "now", "received_at", "remote_addr", "size", "source")

    def __init__(self, source: str, remote_addr: str, now: float) -> None:
        self.source = source
        self.remote_addr = remote_addr
        self.now = now
        self.received_at = datetime.fromtimestamp(now, UTC)
        self.size = 0
        self.event_id: str | None = None

    def row(self, status: int, outcome: str, cause: str = "") -> RequestRecord:
        return RequestRecord(
            source=self.source,
            received_at=self.received_at,
            remote_addr=self.remote_addr,
            size=self.size,
            status=status,
            outcome=outcome,
            cause=cause,
            event_id=self.event_id,
        )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == _JSON or (media.startswith("application/") and media.endswith("+json"))


def _check_declared_length(headers: Mapping[str, str], cap: int) -> None:
    declared = headers.get("content-length")
    if declared is None:
        return
    if not (declared.isascii() and declared.isdigit()):
        raise PayloadError("bad_content_length")
    if len(declared) > 18 or int(declared) > cap:
        raise BodyTooLarge()


async def _read_capped(scope: Scope, receive: Receive, cap: int) -> bytes:
    """The body, refusing as soon as more than ``cap`` bytes have arrived."""
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if scope.get(BODY_TIMED_OUT):
                raise RequestTimedOut()
            raise PayloadError("client_disconnected")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > cap:
            raise BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: what UTF-16/32 or a byte-order mark look like in a body's first bytes (RFC 8259: UTF-8 only)
_NOT_PLAIN_UTF8 = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _json_object(body: bytes) -> dict[str, Any]:
    head = body[:4]
    if head.startswith(_NOT_PLAIN_UTF8) or b"\x00" in head:
        raise PayloadError("utf8_bom" if head.startswith(b"\xef\xbb\xbf") else "not_utf8")
    try:
        # the fast path (pydantic-core's parser, about twice json.loads's speed); it is stricter
        # than json.loads (lone surrogates), so any body it refuses is decided by json.loads
        payload = from_json(body, cache_strings="keys")
    except ValueError:
        payload = _json_loads(body)
    if not isinstance(payload, dict):
        raise PayloadError("not_an_object")
    return payload


def _json_loads(body: bytes) -> Any:
    """The reference parser: json.loads of strict UTF-8, its failures named as causes."""
    try:
        return json.loads(body.decode())
    except UnicodeDecodeError as exc:
        raise PayloadError("not_utf8") from exc
    except ValueError as exc:
        raise PayloadError("invalid_json") from exc
    except RecursionError as exc:
        raise PayloadError("json_too_deep") from exc
