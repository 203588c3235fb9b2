"""PHI canaries planted in payloads appear in no log line, error body or plain column."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from carehook.observability import configure_logging

from .conftest import Gateway, start_gateway, write_config
from .test_ingress import sample, signed

CANARY_NAME = "CANARY-Jane-Q-Patient-7f3a"
CANARY_EMAIL = "canary.patient.7f3a@example.org"
CANARIES = (CANARY_NAME, CANARY_EMAIL, "canary.patient.7f3a")


@pytest.fixture
def sqlite_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway on SQLite, so the test can read the raw database files."""
    yield from start_gateway(write_config(tmp_path / "carehook.toml", None))


def _deliveries(gw: Gateway) -> list[tuple[bytes, dict[str, str]]]:
    """Accepted, duplicate, forged, unparseable and invalid deliveries, all carrying canaries."""
    good = sample("healthie", "appointment.participant_joined")
    good.update(user_name=CANARY_NAME, user_email=CANARY_EMAIL)
    body, headers = signed(gw, "healthie", good)
    bad_abridge = sample("abridge", "quality.alert")
    bad_abridge["data"] = {"session_id": CANARY_NAME, "quality_score": CANARY_EMAIL}
    return [
        (body, headers),
        (body, headers),
        (body.replace(b"joined", b"JOINED"), headers),
        signed(gw, "healthie", f'{{"user_name": "{CANARY_NAME}", '.encode()),
        signed(gw, "abridge", bad_abridge),
    ]


def _send_all(gw: Gateway) -> list[str]:
    texts = []
    for body, headers in _deliveries(gw):
        source = "abridge" if b"quality.alert" in body else "healthie"
        texts.append(gw.post(source, body, headers).text)
    return texts


def test_canaries_never_reach_logs_or_error_bodies(sqlite_gateway: Gateway) -> None:
    """What loggers are handed, and every response body, are free of the canaries."""
    with capture_logs() as logs:
        bodies = _send_all(sqlite_gateway)
    assert len(logs) >= 5
    blob = json.dumps(logs, default=str) + "".join(bodies)
    for canary in CANARIES:
        assert canary not in blob


def test_canaries_never_reach_rendered_log_output(
    sqlite_gateway: Gateway, capfd: pytest.CaptureFixture[str]
) -> None:
    """The JSON lines actually written to stderr are free of the canaries."""
    configure_logging("debug", json=True, cache=False)
    try:
        _send_all(sqlite_gateway)
    finally:
        structlog.reset_defaults()
    captured = capfd.readouterr()
    assert "webhook.accepted" in captured.err
    for canary in CANARIES:
        assert canary not in captured.out + captured.err


def test_canaries_are_not_readable_in_the_database(sqlite_gateway: Gateway) -> None:
    """Payloads are encrypted: the raw database and WAL files hold no canary; decrypting works."""
    _send_all(sqlite_gateway)
    data_dir = sqlite_gateway.settings.data_dir
    raw = b"".join(p.read_bytes() for p in data_dir.glob("carehook.db*"))
    assert raw
    for canary in CANARIES:
        assert canary.encode() not in raw

    async def payload() -> Any:
        store = sqlite_gateway.store()
        await store.open()
        try:
            from carehook.inbox.port import EventFilter

            [row] = await store.list_events(EventFilter(source="healthie"))
            rows = await store.list_requests(100)
            return await store.read_payload(row.id, "test"), rows
        finally:
            await store.close()

    data, requests = asyncio.run(payload())
    assert CANARY_NAME.encode() in data
    assert all(c not in repr(requests) for c in CANARIES)
