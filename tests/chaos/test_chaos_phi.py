"""Chaos: PHI canaries planted in every payload (every object of every vendor's samples, accepted
and refused deliveries alike) never appear in the logs, the error bodies, the request log, the
metrics or anywhere in the database files (payloads are stored encrypted)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from carehook.sandbox.app import build_sandbox
from carehook.settings import load_settings
from carehook.sources import build_sources
from carehook.vendors import builtin_vendors
from loopback import free_port, serve_app

from .support_front import Proc, figures, sandbox_toml, scale, sign, start_serve, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

VENDORS = builtin_vendors()
SECRETS = {
    "abridge": "abridge-phi-secret",
    "openevidence": "whsec_oe_phi_secret",
    "nabla": "nabla-phi-secret",
    "healthie": "whsec_phi-key",
    "standard-webhooks": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
CANARY = "PHICANARY" + os.urandom(4).hex()
PHI_KEYS = ("patient_name", "mrn", "dob", "diagnosis", "note_text", "email")


def _plant(value: Any, n: int) -> Any:
    """``value`` with canary-bearing PHI fields added to every object in it."""
    if isinstance(value, dict):
        planted = {k: _plant(v, n) for k, v in value.items()}
        planted.update({key: f"{CANARY} {key} {n}" for key in PHI_KEYS})
        return planted
    if isinstance(value, list):
        return [_plant(v, n) for v in value]
    return value


def _payloads(n: int) -> Iterator[tuple[str, str, dict[str, Any] | bytes, str]]:
    """(source, how, payload or raw body, kind) for delivery ``n`` of every vendor."""
    now = datetime.now(UTC)
    for name, vendor in VENDORS.items():
        types = vendor.event_types or ("lab_result.available",)
        payload = _plant(vendor.sample(types[n % len(types)], now, 5000 + n), n)
        if name == "abridge":
            payload["event_id"] = f"evt_phi_{n}"
        yield name, "signed", payload, "accepted"
        yield name, "forged", payload, "refused"
        broken = dict(payload)
        for key in ("resource_id", "type", "data"):
            if key in broken:
                broken[key] = {"patient_name": CANARY, "nested": [CANARY]}
                break
        yield name, "signed", broken, "refused"
        yield name, "signed", f'{{"patient_name": "{CANARY}", "truncated": '.encode(), "refused"


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    """The sandbox (fake Abridge API, FHIR server) on loopback."""
    with serve_app(build_sandbox().app) as url:
        yield url


def _config(folder: Path, sandbox: str) -> Path:
    lines = ['data_dir = "."', 'log_level = "debug"',
             "[worker]", "poll_seconds = 0.2", "shutdown_grace_seconds = 3"]  # fmt: skip
    for name, secret in SECRETS.items():
        lines += [f"[sources.{name}]", f'vendor = "{name}"', f'secrets = ["{secret}"]',
                  "retry_base_seconds = 0.2", "max_attempts = 2"]  # fmt: skip
        if name == "abridge":
            lines += sandbox_toml(sandbox).split("[destinations.ehr]")[0].splitlines()
    lines += ["[destinations.ehr]", *sandbox_toml(sandbox).split("[destinations.ehr]")[1]
              .strip().splitlines()]  # fmt: skip
    path = folder / "carehook.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _db_text(folder: Path) -> tuple[str, int]:
    """Every byte of the database files (as text), and the number of request-log rows."""
    blobs = [p.read_bytes() for p in folder.glob("carehook.db*")]
    with sqlite3.connect(f"file:{folder / 'carehook.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT * FROM requests").fetchall()
    text = b"".join(blobs).decode("latin-1") + repr(rows)
    return text, len(rows)


def test_phi_canaries_appear_nowhere(tmp_path: Path, sandbox_url: str) -> None:
    """Canaries in every field of accepted and refused deliveries: 0 in logs, bodies, request
    log, metrics, database files."""
    config = _config(tmp_path, sandbox_url)
    port = free_port()
    proc: Proc = asyncio.run(start_serve(tmp_path, config, port, "serve"))
    sources = build_sources(load_settings(config), VENDORS)
    bodies: list[str] = []
    counts = {"accepted": 0, "refused": 0}
    try:
        with httpx.Client(timeout=15) as client:
            for n in range(scale(10, 100)):
                for name, how, payload, kind in _payloads(n):
                    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    headers = sign(sources[name], body)
                    if how == "forged":
                        body += b" "
                    # a query is signed by some schemes: only refused deliveries carry one
                    query = "" if kind == "accepted" else f"?patient={CANARY}"
                    resp = client.post(f"http://127.0.0.1:{port}/webhooks/{name}{query}",
                                       content=body, headers={**headers, "x-patient": CANARY})
                    bodies.append(resp.text)
                    assert (resp.status_code == 200) == (kind == "accepted"), (name, resp.text)
                    counts[kind] += 1
            asyncio.run(wait_until(lambda: _quiet(tmp_path), "the worker to settle", 60))
            bodies.append(client.get(f"http://127.0.0.1:{port}/metrics").text)
    finally:
        proc.stop()
    log = proc.log.read_text(errors="replace")
    db, request_rows = _db_text(tmp_path)
    found = {"logs": log.count(CANARY), "error_bodies": sum(b.count(CANARY) for b in bodies),
             "request_log_and_database": db.count(CANARY)}  # fmt: skip
    figures("phi", sent=sum(counts.values()), acknowledged=counts["accepted"],
            refused=counts["refused"], request_log_rows=request_rows, log_lines=log.count("\n"),
            **{f"canaries_in_{k}": v for k, v in found.items()})  # fmt: skip
    assert request_rows == sum(counts.values())
    assert "worker.event_done" in log, "the worker did not run: the logs prove little"
    # the haystacks are real: plaintext metadata is visible in them, so a canary would be too
    assert "evt_phi_0" in db
    assert "webhook.rejected" in log
    assert found == {"logs": 0, "error_bodies": 0, "request_log_and_database": 0}


def _quiet(folder: Path) -> bool:
    with sqlite3.connect(f"file:{folder / 'carehook.db'}?mode=ro", uri=True, timeout=5) as conn:
        busy = conn.execute("SELECT count(*) FROM events WHERE status IN "
                            "('pending', 'processing')").fetchone()  # fmt: skip
    return bool(busy) and busy[0] == 0
