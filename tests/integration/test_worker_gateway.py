"""The worker inside the gateway: started by the lifespan, on /metrics, stopped with the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from carehook.sources import build_source
from carehook.testing import signed_for
from carehook.vendors import builtin_vendors

from .conftest import Gateway, start_gateway, write_config


@pytest.fixture
def working_gateway(tmp_path: Path, storage_url: str) -> Iterator[Gateway]:
    """A gateway with its in-process worker (the default), on each storage backend."""
    yield from start_gateway(write_config(tmp_path / "carehook.toml", storage_url))


def deliver(gw: Gateway, n: int) -> httpx.Response:
    """POST one signed Nabla sample event."""
    src = build_source("nabla", gw.settings.sources["nabla"], builtin_vendors())
    payload = src.vendor.sample("generate_note_async.succeeded", datetime.now(UTC), n)
    signed = signed_for(src, payload)
    return gw.post("nabla", signed.body, signed.headers)


async def _statuses(gw: Gateway) -> list[str]:
    from carehook.inbox.port import EventFilter

    store = gw.store()
    await store.open()
    try:
        return [e.status for e in await store.list_events(EventFilter())]
    finally:
        await store.close()


def test_serve_processes_what_it_receives_and_counts_it(working_gateway: Gateway) -> None:
    """Events delivered to a running gateway reach done; /metrics counts them by outcome."""
    for n in range(5):
        assert deliver(working_gateway, n).status_code == 200
    deadline = time.monotonic() + 30
    while asyncio.run(_statuses(working_gateway)) != ["done"] * 5:
        assert time.monotonic() < deadline, asyncio.run(_statuses(working_gateway))
        time.sleep(0.05)
    metrics = httpx.get(f"{working_gateway.url}/metrics").text
    assert 'carehook_worker_events_total{outcome="done",source="nabla"} 5.0' in metrics
    assert "carehook_worker_receive_to_done_seconds_bucket" in metrics
