"""The one composition root: settings → key ring, store, sources, metrics → the app and worker.

Nothing is built at import time anywhere in carehook; everything that holds a connection, a
key or a secret is built here, from one Settings, and handed to what needs it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import uvicorn
from starlette.types import ASGIApp

from carehook.crypto import KeyRing, load_key_ring
from carehook.errors import StorageError
from carehook.inbox import migrate, open_store
from carehook.inbox.port import Store
from carehook.observability import Metrics, StoreGauges
from carehook.operations import Operations, source_configs
from carehook.preflight import preflight
from carehook.services import ServiceSet, build_services, key_store, workflow_config
from carehook.settings import ServerSettings, Settings, SourceSettings
from carehook.sources import Source, build_sources
from carehook.vendors import builtin_vendors
from carehook.web.admin import create_admin
from carehook.web.admin.auth import session_key
from carehook.web.admin.listener import admin_listener
from carehook.web.app import Background, Gateway, SchemaCheck, create_app
from carehook.web.ingress import Ingress
from carehook.web.server import Limits, guarded_protocol
from carehook.worker.engine import Worker, utcnow
from carehook.worker.metrics import WorkerMetrics
from carehook.worker.policy import RetryPolicy
from carehook.worker.purge import Purger
from carehook.worker.supervisor import BackgroundTask, Supervisor
from carehook.workflows import Router, catalog
from carehook.workflows.ports import Services


@dataclass(slots=True)
class Components:
    """Everything a carehook process is made of."""

    settings: Settings
    keyring: KeyRing
    store: Store
    sources: dict[str, Source]
    metrics: Metrics
    worker_metrics: WorkerMetrics
    #: the storage URL whose schema ``/readyz`` checks (None: a store handed in by a test)
    schema_url: str | None = None
    #: events by status, queue depth, oldest waiting, dead letters: read from the store
    store_gauges: StoreGauges | None = None


def build_keyring(settings: Settings) -> KeyRing:
    """Keys from CAREHOOK_DATA_KEYS, else the data dir's key file (created on first use)."""
    return load_key_ring(settings.data_dir, os.environ.get("CAREHOOK_DATA_KEYS"))


#: how often a separate worker on SQLite looks for other processes' commits (data_version)
SQLITE_WATCH_SECONDS = 0.02


def build_store(settings: Settings, keyring: KeyRing, *, worker_alone: bool = False) -> Store:
    """The inbox adapter named by the storage URL (not opened yet).

    ``worker_alone``: for ``carehook worker``, whose work is stored by other processes. On
    SQLite its store then watches the file for their commits (PostgreSQL has LISTEN/NOTIFY);
    in ``serve`` the in-process ingress wakes the worker itself, with no thread polling.
    """
    embedded = settings.storage_url.startswith("sqlite")
    if embedded and worker_alone:
        return open_store(settings.storage_url, keyring, watch_seconds=SQLITE_WATCH_SECONDS)
    return open_store(
        settings.storage_url, keyring, auto_migrate=embedded or settings.storage.auto_migrate
    )


def build_components(
    settings: Settings, store: Store | None = None, *, worker_alone: bool = False
) -> Components:
    """Build every component from settings; ``store`` replaces the configured one (tests);
    ``worker_alone`` for ``carehook worker`` (see :func:`build_store`)."""
    keyring = build_keyring(settings)
    metrics = Metrics.create()
    return Components(
        settings=settings,
        keyring=keyring,
        store=store if store is not None else build_store(
            settings, keyring, worker_alone=worker_alone),
        sources=build_sources(settings, builtin_vendors()),
        metrics=metrics,
        worker_metrics=WorkerMetrics.create(metrics.registry),
        schema_url=settings.storage_url if store is None else None,
        store_gauges=StoreGauges.create(metrics.registry),
    )


def build_app(
    components: Components, clock: Callable[[], float] = time.time, *, worker: bool | None = None
) -> Gateway:
    """The gateway ASGI app over ``components``, running the worker and the purge timer beside
    the ingress when ``worker`` (default: the ``[worker] enabled`` setting) is true.

    The configuration is checked first (:func:`carehook.preflight.preflight`): a secret,
    destination or channel that cannot be resolved is a ConfigError here, before anything runs.
    """
    settings = components.settings
    ingress = Ingress(components.sources, components.store, components.metrics, clock,
                      settings.server.rejected_log_per_minute)  # fmt: skip
    enabled = settings.worker.enabled if worker is None else worker
    service_set = preflight(settings, services=enabled)
    background: list[BackgroundTask] = []
    closers = []
    if service_set is not None:
        at = settings.worker.ingress_priority_at
        busy = (lambda: ingress.in_flight >= at) if at > 0 else None
        background = background_tasks(components, service_set, ingress_busy=busy)
        closers.append(service_set.aclose)
    admin, admin_cfg = build_admin(components), settings.admin
    if admin is not None and admin_cfg.port is not None:  # its own listener
        listener = admin_listener(admin, admin_cfg.host or "127.0.0.1", admin_cfg.port)
        background.append(BackgroundTask("admin", listener))
        admin = None
    gauges, store = components.store_gauges, components.store
    refresh = None if gauges is None else (lambda: gauges.refresh(store))
    jwks = key_store(settings).jwks
    return create_app(
        ingress, components.store, components.metrics, background, admin=admin,
        refresh_metrics=refresh, jwks=jwks,
        schema=schema_check(components.schema_url), on_close=closers,
        restart_seconds=(settings.worker.restart_base_seconds, settings.worker.restart_cap_seconds),
    )  # fmt: skip


def background_tasks(
    components: Components, service_set: ServiceSet, *, concurrency: int | None = None,
    ingress_busy: Callable[[], bool] | None = None,
) -> list[BackgroundTask]:
    """The worker and the purge timer, as supervised background tasks; the worker gives way
    to the ingress while ``ingress_busy()`` (``serve``)."""
    run = worker_task(components, concurrency=concurrency, service_set=service_set,
                      ingress_busy=ingress_busy)  # fmt: skip
    return [BackgroundTask("worker", run), BackgroundTask("purge", build_purger(components).run)]


def schema_check(url: str | None) -> SchemaCheck | None:
    """``/readyz``'s migrations check: the database's Alembic revision against the code's head
    (None for the in-memory store, which has no schema)."""
    if url is None or url.startswith("memory:"):
        return None
    head = migrate.head_revision()

    async def check() -> str | None:
        try:
            current = await asyncio.to_thread(migrate.current_revision, url)
        except StorageError:
            return "unreachable"
        if current == head:
            return None
        return f"database at {current or 'no revision'}, code at {head}"

    return check


def build_operations(components: Components) -> Operations:
    """The operator service (CLI, admin API, dashboard) over the components' store."""
    return Operations(components.store, source_configs(components.settings))


def build_admin(components: Components) -> ASGIApp | None:
    """The admin API and dashboard for the ``/admin`` mount; None (so 404) without a token."""
    admin = components.settings.admin
    if not admin.tokens:
        return None
    keyring = components.keyring
    key = session_key(keyring.keys[keyring.active])
    return create_admin(build_operations(components), admin, key, components.metrics)


def build_policies(settings: Settings) -> Callable[[str], RetryPolicy]:
    """Each source's retry policy by source name (a source no longer configured: defaults)."""
    policies = {
        name: RetryPolicy(cfg.retry_base_seconds, cfg.retry_cap_seconds, cfg.max_attempts)
        for name, cfg in settings.sources.items()
    }
    default = RetryPolicy()
    return lambda source: policies.get(source, default)


def build_router(settings: Settings, services: Services) -> Router:
    """Which workflow each (vendor, event type) runs, over ``services``."""
    return catalog.build_router(workflow_config(settings), services)


def build_worker(
    components: Components, *, concurrency: int | None = None, router: Router | None = None,
    services: Services | None = None, ingress_busy: Callable[[], bool] | None = None,
) -> Worker:
    """The worker over the components' store, configured by ``[worker]``; its workflows use
    ``services`` (default: none configured, every connector step ``skipped``)."""
    cfg = components.settings.worker
    return Worker(
        components.store,
        router or build_router(components.settings, services or Services()),
        build_policies(components.settings),
        concurrency=concurrency or cfg.concurrency,
        lease_seconds=cfg.lease_seconds,
        poll_seconds=cfg.poll_seconds,
        shutdown_grace_seconds=cfg.shutdown_grace_seconds,
        metrics=components.worker_metrics,
        ingress_busy=ingress_busy,
        give_way_seconds=cfg.ingress_priority_seconds,
    )


def worker_task(
    components: Components, *, concurrency: int | None = None,
    service_set: ServiceSet | None = None, ingress_busy: Callable[[], bool] | None = None,
) -> Background:
    """The worker as a background task over ``service_set`` (built and checked at start, closed
    by whoever built it); without one, it builds the configured connectors itself and closes
    them when it stops. Each run (a restart after a crash) builds a fresh worker."""

    async def run(stop: asyncio.Event) -> None:
        own = service_set is None
        built = build_services(components.settings) if service_set is None else service_set
        try:
            await built.prepare()
            worker = build_worker(components, concurrency=concurrency,
                                  services=built.services, ingress_busy=ingress_busy)  # fmt: skip
            await worker.run(stop)
        finally:
            if own:
                await built.aclose()

    return run


def build_purger(components: Components) -> Purger:
    """The retention purge over the components' store, with each source's retention."""
    settings = components.settings
    return Purger(
        components.store,
        {name: cfg.retention_days for name, cfg in settings.sources.items()},
        default_retention_days=SourceSettings.model_fields["retention_days"].default,
        dedup_days=settings.worker.dedup_days,
        request_retention_days={
            name: cfg.request_retention_days
            for name, cfg in settings.sources.items()
            if cfg.request_retention_days is not None
        },
        default_request_retention_days=settings.worker.request_retention_days,
        interval_seconds=settings.worker.purge_interval_seconds,
        clock=utcnow,
    )


#: CPython's young-generation threshold is 700 allocations: ``serve`` at 1,650 req/s reached it
#: about 50 times a second (see :func:`settle_heap`)
GC_YOUNG_THRESHOLD: Final = 20_000


def settle_heap() -> None:
    """Tune the cyclic garbage collector for a long-running process, once everything is built
    (``serve`` and ``worker`` call it just before they start running).

    Everything built at start-up (modules, classes, pydantic and FHIR models, the app: about
    140,000 objects) lives as long as the process. CPython's full
    collections walk all of them every few seconds under load: a pause of tens of
    milliseconds on the event loop, which every request arriving meanwhile waits out.
    ``gc.freeze`` moves them out of the collector's sight (they are never garbage), and a
    young generation of :data:`GC_YOUNG_THRESHOLD` collects less often (little of carehook's
    garbage is cyclic). Measured with ``bench/ingest.py``'s paced run at 1,900 req/s, worker
    on, two rounds each (the README's "Benchmarks" has the figures): ack p99 47 and 59 ms
    before, 11 and 14 ms after; receive-to-done p99 195 and 292 ms before, 34 and 89 ms after.
    Nothing is collected less: cyclic garbage made after start-up is still found.
    """
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def server_config(
    app: Gateway, host: str, port: int, server: ServerSettings | None = None,
    metrics: Metrics | None = None,
) -> uvicorn.Config:
    """How carehook runs under uvicorn: httptools behind the guard of ``[server]``'s bounds.

    ``proxy_headers`` is off: uvicorn would otherwise take X-Forwarded-For from any loopback
    peer, while carehook reads it only behind each source's explicit ``trusted_proxies``.
    See :mod:`carehook.web.server` for the header cap, timeouts and connection cap.
    """
    limits = Limits.of(server or ServerSettings())
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
        proxy_headers=False, lifespan="on", http=guarded_protocol(limits, metrics),
        limit_concurrency=None,
    )  # fmt: skip


async def run_worker(
    components: Components, stop: asyncio.Event, *, concurrency: int | None = None
) -> None:
    """``carehook worker``: check the configuration, open the store, run the worker and the
    purge timer (supervised: a crash is logged and restarted) until ``stop``."""
    settings = components.settings
    service_set = preflight(settings)
    assert service_set is not None  # preflight builds the services when asked to
    cfg = settings.worker
    supervisor = Supervisor(
        background_tasks(components, service_set, concurrency=concurrency),
        components.metrics.registry,
        base_seconds=cfg.restart_base_seconds, cap_seconds=cfg.restart_cap_seconds,
    )  # fmt: skip
    try:
        await components.store.open()
        try:
            await supervisor.run(stop)
        finally:
            await components.store.close()
    finally:
        await service_set.aclose()
