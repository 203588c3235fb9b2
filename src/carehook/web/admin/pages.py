"""The dashboard's pages: each reads or acts through the operator service and renders a template.

Filters come from the query string; bad values are ignored (a page never fails on a filter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from carehook.errors import ReviewError
from carehook.inbox.reads import EventQuery
from carehook.inbox.work import ReplayFilter
from carehook.operations import OperationRefused, Operations
from carehook.web.admin.auth import Principal
from carehook.web.admin.charts import hbars, sparkline

Render = Callable[[Request, Principal | None, str, dict[str, Any], int], Response]
_FILTERS = ("source", "type", "status", "subject", "since", "until")
_PAGE = 50


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value if value and "\x00" not in value and len(value) <= 200 else None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 18 else None


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


class Pages:
    """The page handlers over one operator service."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self._render: Render | None = None

    def bind(self, render: Render) -> None:
        """Render pages with ``render`` (the dashboard's)."""
        self._render = render

    def render(self, request: Request, who: Principal, name: str, ctx: dict[str, Any],
               status: int = 200) -> Response:  # fmt: skip
        """Render ``name`` for ``who``."""
        assert self._render is not None, "Pages.bind was not called"
        return self._render(request, who, name, ctx, status)

    async def overview(self, request: Request, who: Principal) -> Response:
        """Traffic, queue, dead letters, rejections, worker health."""
        view = await self.ops.overview()
        rates = [(r, sparkline(r.per_minute, r.outcome), sum(r.per_minute)) for r in view.rates]
        rejections = {src: hbars(causes) for src, causes in view.rejections_24h.items()}
        return self.render(request, who, "overview.html",
                           {"view": view, "rates": rates, "rejections": rejections})

    async def events(self, request: Request, who: Principal) -> Response:
        """The events list with its filters."""
        f = {k: _text(request, k) for k in _FILTERS}
        q = EventQuery(f["source"], f["type"], f["status"], f["subject"], _time(f["since"]),
                       _time(f["until"]), _int(_text(request, "cursor")), _PAGE)  # fmt: skip
        page = await self.ops.events(q)
        more = {k: v for k, v in f.items() if v} | {"cursor": page.next_cursor}
        return self.render(request, who, "events.html",
                           {"page": page, "filters": f, "next": more})  # fmt: skip

    async def event(self, request: Request, who: Principal) -> Response:
        """One event; its payload only with the payload scope and ``?payload=1`` (audited)."""
        pk = int(request.path_params["pk"])
        detail = await self.ops.event(pk)
        if detail is None:
            return self.render(request, who, "error.html", {"message": f"no event {pk}"}, 404)
        payload = None
        show = request.query_params.get("payload") == "1" and who.can("payload")
        if show:
            data = await self.ops.payload(pk, who.name)
            payload = "(purged)" if data is None else data.decode("utf-8", errors="replace")
        return self.render(request, who, "event.html",
                           {"d": detail, "payload": payload, "show_payload": show})

    async def replay_one(self, request: Request, who: Principal) -> Response:
        """Replay one event, then show it."""
        pk = int(request.path_params["pk"])
        count = await self.ops.replay(ReplayFilter(event_pks=(pk,)), who.name)
        flash = "replayed" if count else "not-replayable"
        return RedirectResponse(f"/admin/events/{pk}?flash={flash}", 303)

    async def dead_letters(self, request: Request, who: Principal) -> Response:
        """Dead events with their last error, and the bulk replay form."""
        source = _text(request, "source")
        page = await self.ops.dead_letters(source, _int(_text(request, "cursor")), _PAGE)
        return self.render(request, who, "dead_letters.html", {"page": page, "source": source})

    async def replay_dead(self, request: Request, who: Principal) -> Response:
        """Bulk replay of dead events: a dry-run count first, then (confirmed) the replay."""
        form = await request.form()
        source = str(form.get("source", "")).strip() or None
        flt = ReplayFilter(source=source, status="dead")
        confirmed = form.get("confirm") == "yes"
        try:
            count = await self.ops.replay(flt, who.name, dry_run=not confirmed)
        except OperationRefused as exc:
            return self.render(request, who, "error.html", {"message": str(exc)}, 400)
        return self.render(request, who, "replay_confirm.html",
                           {"count": count, "source": source, "done": confirmed})

    async def reviews(self, request: Request, who: Principal) -> Response:
        """The review queue (``?status=all`` shows resolved items too)."""
        status = None if request.query_params.get("status") == "all" else "open"
        page = await self.ops.reviews(status, _int(_text(request, "cursor")), _PAGE)
        return self.render(request, who, "reviews.html", {"page": page, "all": status is None})

    async def resolve(self, request: Request, who: Principal) -> Response:
        """Resolve a review item with the form's note."""
        form = await request.form()
        review_id = int(request.path_params["review_id"])
        try:
            await self.ops.resolve_review(review_id, who.name, str(form.get("note", "")))
        except (ReviewError, OperationRefused) as exc:
            return self.render(request, who, "error.html", {"message": str(exc)}, 400)
        return RedirectResponse("/admin/reviews?flash=resolved", 303)

    async def timeline(self, request: Request, who: Principal) -> Response:
        """A subject's timeline (``?subject=``)."""
        subject = _text(request, "subject")
        timeline = None if subject is None else await self.ops.timeline(subject)
        return self.render(request, who, "timeline.html", {"subject": subject, "t": timeline})

    async def sources(self, request: Request, who: Principal) -> Response:
        """Sources with their secrets' status."""
        rows = await self.ops.source_statuses()
        return self.render(request, who, "sources.html", {"rows": rows})
