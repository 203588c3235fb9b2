"""The ASGI application: ingress, health and metrics routes over components built elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carehook import __version__
from carehook.errors import StorageError
from carehook.inbox.port import InboxStore
from carehook.observability import Metrics, get_logger
from carehook.web.ingress import PREFIX, Ingress

_log = get_logger("carehook.web")


class Gateway:
    """The ASGI entry point: deliveries go straight to the ingress, the rest to the API.

    Webhook deliveries are the hot path; routing them past FastAPI's middleware stack saves
    a measurable share of each request. An unexpected exception there is answered with a bare
    500 and logged by class name only (its message or traceback could quote the payload).
    """

    def __init__(self, ingress: ASGIApp, api: FastAPI) -> None:
        self._ingress = ingress
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection."""
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.api(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._ingress(scope, receive, tracking_send)
        except Exception as exc:
            _log.error("webhook.crashed", error_class=type(exc).__name__)
            if not started:
                await JSONResponse({"error": "internal error"}, 500)(scope, receive, send)


#: a task run beside the gateway (the worker, the purge timer) until its stop event is set
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def create_app(
    ingress: Ingress, store: InboxStore, metrics: Metrics, background: Sequence[Background] = (),
    admin: ASGIApp | None = None, refresh_metrics: Callable[[], Awaitable[None]] | None = None,
    jwks: Callable[[], dict[str, Any]] | None = None,
) -> Gateway:
    """The gateway's ASGI app; the store is opened in the lifespan and closed after it.

    ``background`` tasks start once the store is open; on shutdown (uvicorn turns SIGTERM into
    it) they are told to stop and awaited (the worker finishes or releases what it holds)
    before the store closes.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(run(stop)) for run in background]
        _log.info("gateway.started", count=len(ingress.sources))
        try:
            yield
        finally:
            stop.set()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    _log.error("background.crashed", error_class=type(result).__name__)
            await store.close()
            _log.info("gateway.stopped")

    app = FastAPI(title="carehook", version=__version__, lifespan=lifespan, docs_url=None)
    webhooks = ingress  # a plain ASGI app: the hot path skips routing and middleware

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            await store.ping()
        except StorageError:
            return JSONResponse({"status": "unavailable", "storage": "down"}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics_route(_: Request) -> Response:
        if refresh_metrics is not None:  # the store-derived gauges (cached, see StoreGauges)
            with contextlib.suppress(StorageError):  # gauges keep their last values
                await refresh_metrics()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.router.routes.append(Route("/healthz", healthz, methods=["GET"]))
    app.router.routes.append(Route("/readyz", readyz, methods=["GET"]))
    app.router.routes.append(Route("/metrics", metrics_route, methods=["GET"]))
    if admin is not None:  # the admin API and dashboard (absent, so 404, without a token)
        app.mount("/admin", admin)
    if jwks is not None:
        public_keys = jwks

        async def jwks_route(_: Request) -> Response:
            body = await asyncio.to_thread(public_keys)
            return JSONResponse(body, headers={"Cache-Control": "max-age=300"},
                                media_type="application/jwk-set+json")  # fmt: skip

        app.router.routes.append(Route("/.well-known/jwks.json", jwks_route, methods=["GET"]))
    return Gateway(webhooks, app)
