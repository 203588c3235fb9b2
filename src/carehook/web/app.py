"""The ASGI application: ingress, health and metrics routes over components built elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
from carehook.worker.supervisor import BackgroundTask, Supervisor, TaskFn

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
Background = TaskFn
#: why the database's schema is not the code's (None: it is current); see :func:`readiness`
SchemaCheck = Callable[[], Awaitable[str | None]]
#: what the lifespan closes after the background tasks stopped (the connectors' clients)
Closer = Callable[[], Awaitable[None]]


def create_app(
    ingress: Ingress,
    store: InboxStore,
    metrics: Metrics,
    background: Sequence[BackgroundTask] = (),
    admin: ASGIApp | None = None,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
    jwks: Callable[[], dict[str, Any]] | None = None,
    *,
    schema: SchemaCheck | None = None,
    on_close: Sequence[Closer] = (),
    restart_seconds: tuple[float, float] = (0.5, 30.0),
) -> Gateway:
    """The gateway's ASGI app; the store is opened in the lifespan and closed after it.

    ``background`` tasks start once the store is open, under a :class:`Supervisor` (a crashed
    task is logged, counted and restarted after a back-off of ``restart_seconds`` (base, cap));
    on shutdown (uvicorn turns SIGTERM into it) they are told to stop and awaited (the worker
    finishes or releases what it holds), then ``on_close`` runs and the store closes.
    """
    base, cap = restart_seconds
    supervisor = Supervisor(background, metrics.registry, base_seconds=base, cap_seconds=cap)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()
        stop = asyncio.Event()
        runner = asyncio.create_task(supervisor.run(stop), name="carehook-supervisor")
        _log.info("gateway.started", count=len(ingress.sources))
        try:
            yield
        finally:
            stop.set()
            try:
                await runner
            except Exception as exc:  # the supervisor itself failed: say so, still close
                _log.error("background.crashed", task="supervisor", error_class=type(exc).__name__)
            for close in on_close:
                await close()
            await store.close()
            _log.info("gateway.stopped")

    app = FastAPI(title="carehook", version=__version__, lifespan=lifespan, docs_url=None)
    webhooks = ingress  # a plain ASGI app: the hot path skips routing and middleware

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ready, body = await readiness(store, supervisor, schema)
        return JSONResponse(body, 200 if ready else 503)

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


async def readiness(
    store: InboxStore, supervisor: Supervisor, schema: SchemaCheck | None
) -> tuple[bool, dict[str, Any]]:
    """Whether the process can do its work, and the ``/readyz`` body saying what is not.

    Not ready when the store does not answer its ping, when the database's schema is not the
    code's (migrations behind), or when a background task is down (crashed, waiting to restart).
    """
    body: dict[str, Any] = {"storage": "up"}
    ready = True
    try:
        await store.ping()
    except StorageError:
        body["storage"], ready = "down", False
    if schema is not None:  # asked even when the ping fails: a schema behind can be why
        problem = await schema()
        body["schema"] = "current" if problem is None else problem
        ready = ready and problem is None
    down = supervisor.down()
    if supervisor.tasks:
        body["background"] = {t.name: "down" if t.name in down else "up" for t in supervisor.tasks}
    ready = ready and not down
    body["status"] = "ready" if ready else "unavailable"
    return ready, body
