"""The ASGI application: ingress, health and metrics routes over components built elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from carehook import __version__
from carehook.errors import StorageError
from carehook.inbox.port import InboxStore
from carehook.observability import Metrics, get_logger
from carehook.web.ingress import Ingress

_log = get_logger("carehook.web")


def create_app(ingress: Ingress, store: InboxStore, metrics: Metrics) -> FastAPI:
    """The gateway's ASGI app; the store is opened in the lifespan and closed after it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()
        _log.info("gateway.started", count=len(ingress.sources))
        try:
            yield
        finally:
            await store.close()
            _log.info("gateway.stopped")

    app = FastAPI(title="carehook", version=__version__, lifespan=lifespan, docs_url=None)
    app.router.routes.append(Route("/webhooks/{source}", ingress, methods=["POST"]))

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            await store.ping()
        except StorageError:
            return JSONResponse({"status": "unavailable", "storage": "down"}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics_route(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.router.routes.append(Route("/healthz", healthz, methods=["GET"]))
    app.router.routes.append(Route("/readyz", readyz, methods=["GET"]))
    app.router.routes.append(Route("/metrics", metrics_route, methods=["GET"]))
    return app
