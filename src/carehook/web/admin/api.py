"""The admin API: JSON over the operator service, mounted at ``/admin/api``.

Every route names the scope it needs; a request without a valid bearer token is answered 401,
one whose token lacks the scope 403. Lists are newest first by id with a ``cursor`` (the
previous page's ``next_cursor``). Payload views, replays and resolutions are audited under the
token's name by the store. No route but ``/events/{pk}/payload`` returns payload bytes.
"""

# no ``from __future__ import annotations`` here: FastAPI must evaluate the route signatures,
# whose Depends(...) name closures of create_admin_api.
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from carehook import __version__
from carehook.errors import ReviewError, StorageUnavailable
from carehook.inbox.reads import EventQuery, RequestQuery
from carehook.inbox.work import ReplayFilter
from carehook.observability import Metrics, get_logger
from carehook.operations import OperationRefused, Operations
from carehook.settings import AdminToken
from carehook.web.admin import schemas as s
from carehook.web.admin.auth import Principal, check_token

Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
Cursor = Annotated[int | None, Query(ge=1, le=2**62, description="the previous next_cursor")]
Limit = Annotated[int, Query(ge=1, le=500)]
When = Annotated[datetime | None, Query(description="ISO 8601; UTC unless given")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.Problem, "description": text}
    for code, text in ((400, "Bad request"), (401, "Missing or invalid token"),
                       (403, "The token lacks the scope"), (404, "Not found"),
                       (503, "The store cannot answer now; retry (Retry-After)"))
}  # fmt: skip


_log = get_logger("carehook.admin")


def utc(value: datetime | None) -> datetime | None:
    """A query time as aware UTC (naive means UTC); 400 if it cannot be one."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise HTTPException(400, "time out of range") from None


def bearer(
    tokens: list[AdminToken], metrics: Metrics | None = None
) -> Callable[[str], Callable[[Request], Awaitable[Principal]]]:
    """``need(scope)``: a dependency that authenticates the bearer token and checks ``scope``;
    a refused token is logged and counted (``carehook_admin_auth_refused_total``)."""

    def need(scope: str) -> Callable[[Request], Awaitable[Principal]]:
        async def check(request: Request) -> Principal:  # async: no thread hop per request
            kind, _, presented = request.headers.get("authorization", "").partition(" ")
            token = check_token(tokens, presented.strip()) if kind.lower() == "bearer" else None
            if token is None:
                # never the presented value: a mistyped token is one character from a real one
                reason = "missing" if not presented.strip() else "unknown"
                _log.warning("admin.token_refused", path=request.url.path, reason=reason,
                             remote_addr=request.client.host if request.client else "")  # fmt: skip
                if metrics is not None:
                    metrics.count_admin_refusal("api", reason)
                raise HTTPException(401, "missing or invalid token",
                                    headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
            if scope not in token.scopes:
                raise HTTPException(403, f"this token lacks the {scope!r} scope")
            return Principal(token.name, frozenset(token.scopes))

        return check

    return need


def create_admin_api(
    ops: Operations, tokens: list[AdminToken], metrics: Metrics | None = None
) -> FastAPI:
    """The admin API app (mount it at ``/admin/api``); refusals counted in ``metrics``."""
    api = FastAPI(title="carehook admin API", version=__version__, docs_url=None,
                  redoc_url=None, responses=_ERRORS)  # fmt: skip
    need = bearer(tokens, metrics)

    @api.exception_handler(OperationRefused)
    async def refused(_: Request, exc: OperationRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    @api.exception_handler(StorageUnavailable)
    async def unavailable(_: Request, __: StorageUnavailable) -> JSONResponse:
        # the store cannot answer now (PostgreSQL down, SQLite locked): try again, not a bug
        return JSONResponse({"detail": "storage temporarily unavailable"}, 503,
                            headers={"retry-after": "5"})  # fmt: skip

    _event_routes(api, ops, need)
    _action_routes(api, ops, need)
    _other_routes(api, ops, need)
    return api


def _event_routes(api: FastAPI, ops: Operations, need: Callable[[str], Any]) -> None:
    read = Depends(need("read"))

    @api.get("/events", response_model=s.EventPage, dependencies=[read])
    async def list_events(source: Text = None, type: Text = None, status: Text = None,
                          subject: Text = None, since: When = None, until: When = None,
                          cursor: Cursor = None, limit: Limit = 50) -> Any:  # fmt: skip
        """Events, newest first; every given filter must match (received since/until)."""
        q = EventQuery(source, type, status, subject, utc(since), utc(until), cursor, limit)
        page = await ops.events(q)
        return s.EventPage(items=page.items, next_cursor=page.next_cursor)

    @api.get("/events/{pk}", response_model=s.EventDetailOut, dependencies=[read])
    async def get_event(pk: Annotated[int, Path(ge=1, le=2**62)]) -> Any:
        """One event with its finished steps and every attempt (next retry in the event)."""
        detail = await ops.event(pk)
        if detail is None:
            raise HTTPException(404, f"no event {pk}")
        return s.EventDetailOut(event=detail.event, steps=detail.steps, attempts=detail.attempts)

    @api.get("/events/{pk}/payload", response_model=s.PayloadOut)
    async def get_payload(pk: Annotated[int, Path(ge=1, le=2**62)],
                          who: Annotated[Principal, Depends(need("payload"))]) -> Any:
        """The decrypted payload; the view is audited under the token's name first."""
        if await ops.event(pk) is None:
            raise HTTPException(404, f"no event {pk}")
        data = await ops.payload(pk, who.name)
        text = None if data is None else data.decode("utf-8", errors="replace")
        return s.PayloadOut(event=pk, actor=who.name, audited=data is not None, payload=text)

    @api.get("/dead-letters", response_model=s.DeadLetterPage, dependencies=[read])
    async def dead_letters(source: Text = None, cursor: Cursor = None, limit: Limit = 50) -> Any:
        """Dead events, newest first, each with its last error class and message."""
        page = await ops.dead_letters(source, cursor, limit)
        return s.DeadLetterPage(items=page.items, next_cursor=page.next_cursor)


def _action_routes(api: FastAPI, ops: Operations, need: Callable[[str], Any]) -> None:
    # each route takes the principal (its name is the audit actor) through Depends(need(...))
    @api.post("/events/{pk}/replay", response_model=s.ReplayOut)
    async def replay_one(pk: Annotated[int, Path(ge=1, le=2**62)],
                         who: Annotated[Principal, Depends(need("replay"))]) -> Any:
        """Run one event again from its first unfinished step (audited); count 0: not
        replayable (unknown, processing, pending or unhandled)."""
        count = await ops.replay(ReplayFilter(event_pks=(pk,)), who.name)
        return s.ReplayOut(count=count, dry_run=False)

    @api.post("/replay", response_model=s.ReplayOut)
    async def replay_many(body: s.ReplayIn,
                          who: Annotated[Principal, Depends(need("replay"))]) -> Any:
        """Replay every event matching all given fields; ``dry_run`` only counts."""
        flt = ReplayFilter(source=body.source, type=body.type, status=body.status,
                           since=utc(body.since))  # fmt: skip
        count = await ops.replay(flt, who.name, dry_run=body.dry_run)
        return s.ReplayOut(count=count, dry_run=body.dry_run)

    @api.post("/reviews/{review_id}/resolve", response_model=s.ReviewRow,
              responses={409: {"model": s.Problem, "description": "Not open"}})
    async def resolve(review_id: Annotated[int, Path(ge=1, le=2**62)], body: s.ResolveIn,
                      who: Annotated[Principal, Depends(need("replay"))]) -> Any:
        """Resolve an open review item with a note (audited under the token's name)."""
        try:
            return await ops.resolve_review(review_id, who.name, body.note)
        except ReviewError as exc:
            raise HTTPException(404 if str(exc).startswith("no ") else 409, str(exc)) from None


def _other_routes(api: FastAPI, ops: Operations, need: Callable[[str], Any]) -> None:
    read, admin = Depends(need("read")), Depends(need("admin"))

    @api.get("/requests", response_model=s.RequestPage, dependencies=[read])
    async def requests(source: Text = None, outcome: Text = None, since: When = None,
                       cursor: Cursor = None, limit: Limit = 50) -> Any:  # fmt: skip
        """The request log, newest first: every delivery with its outcome and cause."""
        page = await ops.requests(RequestQuery(source, outcome, utc(since), cursor, limit))
        return s.RequestPage(items=page.items, next_cursor=page.next_cursor)

    @api.get("/reviews", response_model=s.ReviewPage, dependencies=[read])
    async def reviews(status: Literal["open", "resolved", "all"] = "open",
                      cursor: Cursor = None, limit: Limit = 50) -> Any:  # fmt: skip
        """Review items, newest first."""
        page = await ops.reviews(None if status == "all" else status, cursor, limit)
        return s.ReviewPage(items=page.items, next_cursor=page.next_cursor)

    @api.get("/subjects/{subject}/timeline", response_model=s.TimelineOut, dependencies=[read])
    async def timeline(subject: Annotated[str, Path(max_length=300, pattern=r"^[^\x00/]+$")],
                       limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> Any:
        """A subject's timeline, oldest first, with durations and time per state."""
        return await ops.timeline(subject, limit)

    @api.get("/overview", response_model=s.OverviewOut, dependencies=[read])
    async def overview() -> Any:
        """Requests per minute, queue depth and age, dead letters, rejections, worker health."""
        return await ops.overview()

    @api.get("/sources", response_model=s.SourcesOut, dependencies=[admin])
    async def sources() -> Any:
        """Each source: vendor, endpoint, per-secret last match, last accepted and rejected
        times, rejections by cause over 24 h."""
        return await ops.source_statuses()

    @api.get("/audit", response_model=s.AuditPage, dependencies=[admin])
    async def audit(cursor: Cursor = None, limit: Limit = 50) -> Any:
        """The audit log, newest first: payload views, replays, resolutions, dashboard
        sign-ins and sign-outs."""
        page = await ops.audit(cursor, limit)
        return s.AuditPage(items=page.items, next_cursor=page.next_cursor)
