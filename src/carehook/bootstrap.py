"""The one composition root: settings → key ring, store, sources, metrics → the app.

Nothing is built at import time anywhere in carehook; everything that holds a connection, a
key or a secret is built here, from one Settings, and handed to what needs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from carehook.crypto import KeyRing, load_key_ring
from carehook.inbox import open_store
from carehook.inbox.port import InboxStore
from carehook.observability import Metrics
from carehook.settings import Settings
from carehook.sources import Source, build_sources
from carehook.vendors import builtin_vendors
from carehook.web.app import Gateway, create_app
from carehook.web.ingress import Ingress


@dataclass(slots=True)
class Components:
    """Everything a carehook process is made of."""

    settings: Settings
    keyring: KeyRing
    store: InboxStore
    sources: dict[str, Source]
    metrics: Metrics


def build_keyring(settings: Settings) -> KeyRing:
    """Keys from CAREHOOK_DATA_KEYS, else the data dir's key file (created on first use)."""
    return load_key_ring(settings.data_dir, os.environ.get("CAREHOOK_DATA_KEYS"))


def build_store(settings: Settings, keyring: KeyRing) -> InboxStore:
    """The inbox adapter named by the storage URL (not opened yet)."""
    embedded = settings.storage_url.startswith("sqlite")
    return open_store(
        settings.storage_url, keyring, auto_migrate=embedded or settings.storage.auto_migrate
    )


def build_components(settings: Settings, store: InboxStore | None = None) -> Components:
    """Build every component from settings; ``store`` replaces the configured one (tests)."""
    keyring = build_keyring(settings)
    return Components(
        settings=settings,
        keyring=keyring,
        store=store if store is not None else build_store(settings, keyring),
        sources=build_sources(settings, builtin_vendors()),
        metrics=Metrics.create(),
    )


def build_app(components: Components, clock: Callable[[], float] = time.time) -> Gateway:
    """The gateway ASGI app over ``components``."""
    ingress = Ingress(components.sources, components.store, components.metrics, clock)
    return create_app(ingress, components.store, components.metrics)


def server_config(app: Gateway, host: str, port: int) -> uvicorn.Config:
    """How carehook runs under uvicorn.

    ``proxy_headers`` is off: uvicorn would otherwise take X-Forwarded-For from any loopback
    peer, while carehook reads it only behind each source's explicit ``trusted_proxies``.
    """
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
        proxy_headers=False, lifespan="on",
    )  # fmt: skip
