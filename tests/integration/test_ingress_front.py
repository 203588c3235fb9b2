"""Issue 13 items 1, 2 and 5 through real HTTP: unstorable ids are 4xx with a cause, every refusal
leaves a row (within the per-source cap), UTF-8 only. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from carehook.inbox.store import SqlStore

from .conftest import NO_WORKER, Gateway, start_gateway, write_config
from .test_ingress import _events, _requests, sample, signed

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = payload
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return mutate


def _both(*mutations: Mutation) -> Mutation:
    def mutate(payload: dict[str, Any]) -> None:
        for m in mutations:
            m(payload)
    return mutate


_UNKNOWN_ABRIDGE = _set("type", "encounter.brand_new_thing")
_UNKNOWN_NABLA = _set("type", "brand_new.thing")
_HUGE_INT = int("9" * 4000)

#: (source, base type, mutation, field the cause must name) for known and unknown types
CASES = [
    ("abridge", "encounter.session.failed", _set("event_id", "evt\x00nul"), "event_id"),
    ("abridge", "encounter.session.failed", _set("event_id", "evt\ud800"), "event_id"),
    ("abridge", "encounter.session.failed", _set("data.session_id", "s\x1bx"), "session_id"),
    ("abridge", "encounter.session.failed", _set("event_id", "e" * 257), "event_id"),
    ("abridge", "encounter.session.failed",
     _both(_UNKNOWN_ABRIDGE, _set("event_id", "\ud800")), "event_id"),
    ("abridge", "encounter.session.failed",
     _both(_UNKNOWN_ABRIDGE, _set("data.session_id", "s\x00")), "session_id"),
    ("abridge", "encounter.session.failed",
     _both(_UNKNOWN_ABRIDGE, _set("event_id", _HUGE_INT)), "event_id"),
    ("nabla", "generate_note_async.failed", _both(_UNKNOWN_NABLA, _set("id", _HUGE_INT)), "id"),
    ("nabla", "generate_note_async.failed",
     _both(_UNKNOWN_NABLA, _set("data.id", "job\x7f")), "data.id"),
    ("healthie", "appointment.transcript_available", _set("resource_id", _HUGE_INT), "resource_id"),
    ("healthie", "appointment.transcript_available", _set("resource_id_type", "Appt\x00"),
     "resource_id_type"),
    ("standard-webhooks", "lab_result.available", _set("data.id", "\udfff"), "data.id"),
    ("standard-webhooks", "lab_result.available", _set("data.id", "x" * 300), "data.id"),
    ("openevidence", "deepconsult.started", _both(_set("type", "brand.new"), _set("id", "q\x01")),
     "event_id"),
]


@pytest.mark.parametrize(("source", "event_type", "mutate", "field"), CASES)
def test_unstorable_ids_are_422_with_a_cause(
    gateway: Gateway, source: str, event_type: str, mutate: Mutation, field: str
) -> None:
    """A NUL, control character, lone surrogate or over-long id (integer too) in a signed event of
    a known or unknown type is a 422 with the field in the request log, never a 5xx or a row."""
    payload = sample(source, event_type)
    mutate(payload)
    body, headers = signed(gateway, source, payload)
    resp = gateway.post(source, body, headers)
    assert (resp.status_code, resp.json()) == (422, {"error": "invalid payload"})
    assert asyncio.run(_events(gateway)) == []
    [row] = asyncio.run(_requests(gateway))
    assert (row.status, row.outcome) == (422, "rejected")
    assert field in row.cause, row.cause


def test_valid_edge_ids_are_still_stored(gateway: Gateway) -> None:
    """Ids of exactly 256 characters, non-ASCII text and 256-digit integers are accepted."""
    payload = sample("abridge", "encounter.session.failed")
    payload["event_id"] = "é" * 256
    body, headers = signed(gateway, "abridge", payload)
    assert gateway.post("abridge", body, headers).status_code == 200
    nabla = sample("nabla", "generate_note_async.failed")
    nabla["type"], nabla["id"] = "brand_new.thing", int("9" * 256)
    body, headers = signed(gateway, "nabla", nabla)
    assert gateway.post("nabla", body, headers).status_code == 200
    ids = sorted(e.event_id for e in asyncio.run(_events(gateway)))
    assert ids == sorted(["é" * 256, "9" * 256])


@pytest.mark.parametrize(("encode", "cause"), [
    (lambda t: b"\xef\xbb\xbf" + t.encode(), "payload:utf8_bom"),
    (lambda t: t.encode("utf-16"), "payload:not_utf8"),
    (lambda t: t.encode("utf-16-le"), "payload:not_utf8"),
    (lambda t: t.encode("utf-32"), "payload:not_utf8"),
])
def test_bom_and_utf16_bodies_are_400(
    gateway: Gateway, encode: Callable[[str], bytes], cause: str
) -> None:
    """A signed body in UTF-16/32 or with a byte-order mark is a 400 (RFC 8259: UTF-8 only)."""
    text = json.dumps(sample("abridge", "encounter.session.failed"))
    body, headers = signed(gateway, "abridge", encode(text))
    resp = gateway.post("abridge", body, headers)
    assert (resp.status_code, resp.json()) == (400, {"error": "bad request"})
    [row] = asyncio.run(_requests(gateway))
    assert (row.status, row.cause) == (400, cause)


def test_405_and_bad_paths_leave_rows(gateway: Gateway) -> None:
    """GET is a 405 with a row; a NUL or control character in the path is a 404 with a row."""
    got = httpx.get(f"{gateway.url}/webhooks/abridge")
    assert (got.status_code, got.headers["allow"]) == (405, "POST")
    assert httpx.post(f"{gateway.url}/webhooks/ab%00x%1b", content=b"{}").status_code == 404
    assert httpx.post(f"{gateway.url}/webhooks/a/b", content=b"{}").status_code == 404
    rows = sorted((r.status, r.source, r.cause) for r in asyncio.run(_requests(gateway)))
    assert rows == [(404, "a/b", "unknown_source"), (404, "ab?x?", "unknown_source"),
                    (405, "abridge", "method_not_allowed")]


@pytest.fixture
def capped(tmp_path: Path, storage_url: str) -> Iterator[Gateway]:
    """A gateway writing at most 3 rejected rows per source per minute; its clock stays in the
    middle of one minute (a test running across a minute's end would get a second budget)."""
    extra = NO_WORKER + "[server]\nrejected_log_per_minute = 3\n"
    pinned = time.time() // 60 * 60 + 30  # within 30 s of now: signatures stay in tolerance
    yield from start_gateway(write_config(tmp_path / "carehook.toml", storage_url, extra),
                             clock=lambda: pinned)


def test_rejected_rows_are_capped_per_source_and_counted(capped: Gateway) -> None:
    """Over the cap, rejected requests are still answered but only counted; accepted ones are
    always written."""
    for _ in range(6):
        assert capped.post("abridge", b"{}", {"content-type": "application/json"}
                           ).status_code == 401
        assert httpx.post(f"{capped.url}/webhooks/nosuch", content=b"{}").status_code == 404
    body, headers = signed(capped, "abridge", sample("abridge", "encounter.session.failed"))
    assert capped.post("abridge", body, headers).status_code == 200
    rows = asyncio.run(_requests(capped))
    assert sorted((r.source, r.status) for r in rows) == (
        [("abridge", 200)] + [("abridge", 401)] * 3 + [("nosuch", 404)] * 3)
    metrics = httpx.get(f"{capped.url}/metrics").text
    assert 'carehook_request_log_dropped_total{source="abridge"} 3.0' in metrics
    assert 'carehook_request_log_dropped_total{source="_unknown"} 3.0' in metrics
    assert 'carehook_requests_total{outcome="rejected_dropped",source="abridge"} 3.0' in metrics


def test_a_bug_is_a_500_with_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception while storing answers a generic 500 and leaves a row naming it."""
    async def broken(self: Any, envelope: Any, record: Any) -> bool:
        raise RuntimeError("patient Jane Canary")

    gen = start_gateway(write_config(tmp_path / "c.toml", None, NO_WORKER))
    gw = next(gen)
    try:
        monkeypatch.setattr(SqlStore, "accept", broken)
        body, headers = signed(gw, "abridge", sample("abridge", "encounter.session.failed"))
        resp = gw.post("abridge", body, headers)
        assert (resp.status_code, resp.json()) == (500, {"error": "internal error"})
        monkeypatch.undo()
        [row] = asyncio.run(_requests(gw))
        assert (row.status, row.outcome, row.cause) == (500, "error", "internal:RuntimeError")
    finally:
        gen.close()


def test_503_while_storage_is_locked_is_counted_not_logged(tmp_path: Path) -> None:
    """A 503 because the store cannot commit leaves no row (it cannot be written) but is
    counted in carehook_requests_total{outcome="unavailable"}."""
    import sqlite3

    gen = start_gateway(write_config(tmp_path / "c.toml", None, NO_WORKER))
    gw = next(gen)
    try:
        body, headers = signed(gw, "abridge", sample("abridge", "encounter.session.failed"))
        blocker = sqlite3.connect(gw.settings.data_dir / "carehook.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            assert gw.post("abridge", body, headers).status_code == 503
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert asyncio.run(_requests(gw)) == []
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'carehook_requests_total{outcome="unavailable",source="abridge"} 1.0' in metrics
    finally:
        gen.close()
