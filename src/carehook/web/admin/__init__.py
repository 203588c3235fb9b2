"""The admin surface: the JSON API at ``/admin/api`` and the dashboard at ``/admin/``.

:func:`create_admin` builds one ASGI app for the ``/admin`` mount (the gateway's listener, or
a listener of its own with ``[admin] host/port``). With no token configured the gateway does
not mount it at all, so everything under ``/admin`` answers 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from carehook.errors import StorageUnavailable
from carehook.observability import Metrics
from carehook.operations import Operations
from carehook.operations.timeline import duration
from carehook.settings import AdminSettings
from carehook.web.admin.api import create_admin_api
from carehook.web.admin.auth import Sessions
from carehook.web.admin.dashboard import PREFIX, Dashboard
from carehook.web.admin.pages import Pages

__all__ = ["PREFIX", "create_admin", "standalone"]
_HERE = Path(__file__).parent
#: the only flash messages a page shows (never text echoed from the query string)
FLASHES = {"replayed": "Replayed.", "resolved": "Resolved.",
           "not-replayable": "Not replayed: it is pending, processing or unhandled."}


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    return duration((datetime.now(UTC) - value).total_seconds())[1:] + " ago"


def templates() -> Jinja2Templates:
    """The dashboard's templates (autoescaped) with its filters."""
    t = Jinja2Templates(directory=str(_HERE / "templates"))
    t.env.filters["when"] = _when
    t.env.filters["ago"] = _ago
    t.env.filters["secs"] = lambda s: "" if s is None else duration(float(s))[1:]
    t.env.globals["flashes"] = FLASHES
    return t


def create_admin(
    ops: Operations, settings: AdminSettings, session_key: bytes, metrics: Metrics | None = None
) -> ASGIApp:
    """The app to mount at ``/admin``: the API, the dashboard and its static files; refused
    tokens are counted in ``metrics`` (``carehook_admin_auth_refused_total``)."""
    sessions = Sessions(session_key, settings.session_minutes * 60,
                        settings.session_idle_minutes * 60)  # fmt: skip
    tmpl = templates()
    pages = Pages(ops)
    dashboard = Dashboard(ops, settings.tokens, sessions, tmpl, pages, metrics)
    pages.bind(dashboard.render)
    routes = [
        Mount("/api", create_admin_api(ops, settings.tokens, metrics)),
        Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
        *dashboard.routes(),
    ]

    async def unavailable(request: Request, _: Exception) -> Response:
        # a page or a sign-in while the store cannot answer: say so, and when to try again
        page = dashboard.render(request, None, "error.html",
                                {"message": "storage temporarily unavailable; try again"}, 503)
        page.headers["retry-after"] = "5"
        return page

    return Starlette(routes=routes, exception_handlers={StorageUnavailable: unavailable})


def standalone(admin: ASGIApp) -> ASGIApp:
    """An app serving only ``/admin`` (the separate ``[admin] host/port`` listener)."""
    return Starlette(routes=[Mount(PREFIX, admin)])
