"""A real gateway on 127.0.0.1 (uvicorn in a thread) over a real store, for ingress tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from carehook.bootstrap import (
    build_app,
    build_components,
    build_keyring,
    build_store,
    server_config,
)
from carehook.inbox.port import InboxStore
from carehook.settings import Settings, load_settings
from loopback import free_port, serve_config

SECRETS = {
    "abridge": "abridge-test-secret",
    "openevidence": "whsec_oe_test_secret",
    "nabla": "nabla-test-secret",
    "healthie": "whsec_my-secret-key",
    "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def write_config(path: Path, storage_url: str | None, extra: str = "") -> Path:
    """A config with one source per vendor (known secrets) plus ``extra`` TOML."""
    lines = ['data_dir = "."', 'log_level = "debug"']
    if storage_url:
        lines += ["[storage]", f'url = "{storage_url}"', "auto_migrate = true"]
    for vendor, secret in SECRETS.items():
        lines += [f"[sources.{vendor}]", f'vendor = "{vendor}"', f'secrets = ["{secret}"]']
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@dataclass
class Gateway:
    """A running gateway."""

    url: str
    settings: Settings
    config: Path

    def post(self, source: str, body: bytes, headers: Any, **kw: Any) -> httpx.Response:
        """POST raw bytes to /webhooks/<source>."""
        return httpx.post(f"{self.url}/webhooks/{source}", content=body, headers=headers,
                          timeout=30, **kw)

    def store(self) -> InboxStore:
        """A second store on the same database, for the test to look at (open it first)."""
        return build_store(self.settings, build_keyring(self.settings))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL per backend (PostgreSQL: a fresh database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'carehook.db'}"
    return str(request.getfixturevalue("pg_url"))


def start_gateway(config: Path, clock: Callable[[], float] = time.time) -> Iterator[Gateway]:
    """Run the app of ``config`` under uvicorn on a free port until the generator is closed
    (``clock``: the ingress's)."""
    settings = load_settings(config)
    components = build_components(settings)
    app = build_app(components, clock)
    config = server_config(app, "127.0.0.1", free_port(), settings.server, components.metrics)
    with serve_config(config) as url:
        yield Gateway(url, settings, config)


#: ingress tests look at events as stored: no in-process worker moves them on
NO_WORKER = "[worker]\nenabled = false\n"


@pytest.fixture
def gateway(tmp_path: Path, storage_url: str) -> Iterator[Gateway]:
    """A gateway (ingress only) with one source per vendor on each storage backend."""
    yield from start_gateway(write_config(tmp_path / "carehook.toml", storage_url, NO_WORKER))
