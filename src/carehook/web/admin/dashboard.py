"""The dashboard: server-rendered pages over the operator service, at ``/admin/``.

Login exchanges a token for a signed, expiring session cookie (HttpOnly, SameSite=Strict,
Secure over HTTPS); logout ends the session in the store too, so a copy of the cookie is
refused from then on (:mod:`carehook.web.admin.auth`); both are in the audit trail under the
token's name (``session.start``, ``session.end``). Every state-changing form carries the
session's CSRF token. Pages show metadata only; an event's payload is shown only to a session
whose token has the ``payload`` scope, on request, with a banner saying the view is audited (and
it is, under the token's name).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from carehook.observability import Metrics, get_logger
from carehook.operations.service import Operations
from carehook.settings import AdminToken
from carehook.web.admin import pages
from carehook.web.admin.auth import SESSION_COOKIE, Principal, Sessions, check_token

PREFIX = "/admin"
_LOGIN_CSRF = "carehook_login_csrf"
_log = get_logger("carehook.admin")
Handler = Callable[[Request, Principal], Awaitable[Response]]


class Dashboard:
    """The dashboard's routes, sessions and templates."""

    def __init__(self, ops: Operations, tokens: list[AdminToken], sessions: Sessions,
                 templates: Jinja2Templates, handlers: pages.Pages,
                 metrics: Metrics | None = None) -> None:  # fmt: skip
        self.ops = ops
        self.metrics = metrics
        self.tokens = tokens
        self.sessions = sessions
        self.templates = templates
        self.pages = handlers

    def routes(self) -> list[Route]:
        """Every dashboard route (relative to the admin mount)."""
        p = self.pages
        get = [("/", p.overview, "read"), ("/events", p.events, "read"),
               ("/events/{pk:int}", p.event, "read"), ("/dead-letters", p.dead_letters, "read"),
               ("/reviews", p.reviews, "read"), ("/timeline", p.timeline, "read"),
               ("/sources", p.sources, "admin")]  # fmt: skip
        post = [("/events/{pk:int}/replay", p.replay_one, "replay"),
                ("/dead-letters/replay", p.replay_dead, "replay"),
                ("/reviews/{review_id:int}/resolve", p.resolve, "replay")]  # fmt: skip
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            *(Route(path, self._guard(h, scope, post=False), methods=["GET"])
              for path, h, scope in get),
            *(Route(path, self._guard(h, scope, post=True), methods=["POST"])
              for path, h, scope in post),
        ]  # fmt: skip

    async def principal(self, request: Request) -> Principal | None:
        """The session's principal, if the cookie is valid and its session was not ended."""
        cookie = request.cookies.get(SESSION_COOKIE)
        who = None if not cookie else self.sessions.check(self.tokens, cookie)
        if who is None or await self.ops.session_ended(who.session):
            return None
        return who

    def _guard(self, handler: Handler, scope: str, *, post: bool) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            who = await self.principal(request)
            if who is None:
                if post:
                    return self.render(request, None, "error.html", {"message": "not signed in"},
                                       401)  # fmt: skip
                return RedirectResponse(f"{PREFIX}/login", 303)
            if post and not await _csrf_ok(request, who.csrf):
                return self.render(request, who, "error.html", {"message": "bad CSRF token"}, 403)
            if not who.can(scope):
                message = f"your token lacks the {scope!r} scope"
                return self.render(request, who, "error.html", {"message": message}, 403)
            response = await handler(request, who)
            # in use: the idle clock starts again (never past the session's absolute end)
            _cookie(response, request, SESSION_COOKIE, self.sessions.renew(who),
                    max(0, who.expires - int(time.time())))  # fmt: skip
            return response

        return endpoint

    def render(self, request: Request, who: Principal | None, name: str, context: dict[str, Any],
               status: int = 200) -> Response:  # fmt: skip
        """A page, with the principal and the prefix in its context."""
        ctx = {"who": who, "prefix": PREFIX, **context}
        return self.templates.TemplateResponse(request, name, ctx, status_code=status)

    async def login_form(self, request: Request) -> Response:
        """The login page (with a CSRF token of its own, in a cookie and the form)."""
        token = secrets.token_urlsafe(24)
        response = self.render(request, None, "login.html", {"csrf": token, "error": None})
        _cookie(response, request, _LOGIN_CSRF, token, 600)
        return response

    async def login(self, request: Request) -> Response:
        """Exchange a token for a session cookie."""
        form = await request.form()
        expected = request.cookies.get(_LOGIN_CSRF, "")
        if not expected or not hmac.compare_digest(str(form.get("csrf", "")), expected):
            return self.render(request, None, "error.html", {"message": "bad CSRF token"}, 403)
        token = check_token(self.tokens, str(form.get("token", "")).strip())
        if token is None:
            # never the presented value: a mistyped token is one character from a real one
            _log.warning("admin.sign_in_refused", reason="unknown",
                         remote_addr=request.client.host if request.client else "")  # fmt: skip
            if self.metrics is not None:
                self.metrics.count_admin_refusal("dashboard", "unknown")
            page = self.render(request, None, "login.html",
                               {"csrf": expected, "error": "unknown token"}, 401)  # fmt: skip
            return page
        cookie = self.sessions.issue(token)
        # audited before the cookie is handed out
        await self.ops.start_session(Sessions.session_of(cookie), token.name)
        response = RedirectResponse(f"{PREFIX}/", 303)
        _cookie(response, request, SESSION_COOKIE, cookie, self.sessions.lifetime)
        response.delete_cookie(_LOGIN_CSRF, path=PREFIX)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (CSRF-checked): in the store until its expiry, and the cookie."""
        who = await self.principal(request)
        if who is not None:
            if not await _csrf_ok(request, who.csrf):
                return self.render(request, who, "error.html", {"message": "bad CSRF token"},
                                   403)  # fmt: skip
            await self.ops.end_session(who.session, datetime.fromtimestamp(who.expires, UTC),
                                       who.name)  # fmt: skip
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response


async def _csrf_ok(request: Request, expected: str) -> bool:
    form = await request.form()
    return bool(expected) and hmac.compare_digest(str(form.get("csrf", "")), expected)


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True,
                        secure=request.url.scheme == "https", samesite="strict")  # fmt: skip
