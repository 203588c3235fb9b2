"""POST /webhooks/<source> over real HTTP on loopback, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from carehook.envelope import SignedRequest
from carehook.inbox.port import EventFilter
from carehook.sources import build_source
from carehook.vendors import builtin_vendors

from .conftest import Gateway, start_gateway, write_config

VENDORS = builtin_vendors()


def signed(gw: Gateway, source: str, payload: dict[str, Any] | bytes, now: float | None = None,
           content_type: str = "application/json") -> tuple[bytes, dict[str, str]]:
    """Body and headers a genuine sender of ``source`` would send."""
    src = build_source(source, gw.settings.sources[source], VENDORS)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"content-type": content_type}
    req = SignedRequest("POST", src.public_path, "", headers, body)
    headers.update(src.scheme.sign(req, src.secrets[0], time.time() if now is None else now))
    return body, headers


def sample(source: str, event_type: str, seq: int = 1) -> dict[str, Any]:
    """A realistic payload of ``event_type`` from the source's vendor."""
    vendor = VENDORS["standard-webhooks" if source == "standard-webhooks" else source]
    return vendor.sample(event_type, datetime.now(UTC), seq)


async def _events(gw: Gateway, **flt: Any) -> list[Any]:
    store = gw.store()
    await store.open()
    try:
        return await store.list_events(EventFilter(**flt))
    finally:
        await store.close()


async def _requests(gw: Gateway) -> list[Any]:
    store = gw.store()
    await store.open()
    try:
        return await store.list_requests(1000)
    finally:
        await store.close()


def all_vendor_types() -> list[tuple[str, str]]:
    """(source, event type) for every type of every built-in vendor."""
    return [(name, t) for name, v in VENDORS.items() for t in v.event_types]


@pytest.mark.parametrize(("source", "event_type"), all_vendor_types())
def test_every_event_type_is_accepted_once(gateway: Gateway, source: str, event_type: str) -> None:
    """A signed sample of each type is stored once; the second delivery is a duplicate."""
    body, headers = signed(gateway, source, sample(source, event_type))
    first = gateway.post(source, body, headers)
    assert (first.status_code, first.json()) == (200, {"received": True})
    again = gateway.post(source, body, headers)
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    rows = asyncio.run(_events(gateway, source=source))
    assert len(rows) == 1
    assert rows[0].type == event_type
    assert rows[0].status == "pending"
    assert rows[0].vendor == gateway.settings.sources[source].vendor


def test_unknown_type_is_stored_unhandled(gateway: Gateway) -> None:
    """An event type with no workflow is kept, marked unhandled."""
    payload = sample("abridge", "encounter.session.completed")
    payload["type"] = "encounter.brand_new_thing"
    body, headers = signed(gateway, "abridge", payload)
    assert gateway.post("abridge", body, headers).status_code == 200
    [row] = asyncio.run(_events(gateway, source="abridge"))
    assert (row.type, row.status) == ("encounter.brand_new_thing", "unhandled")


def test_forged_and_malformed_signatures_get_401(gateway: Gateway) -> None:
    """Tampered body, wrong secret, missing or garbage header, stale or future time → 401."""
    payload = sample("abridge", "encounter.session.completed")
    body, headers = signed(gateway, "abridge", payload)
    cases = {
        "tampered": (body.replace(b"}", b" }", 1), headers),
        "missing": (body, {"content-type": "application/json"}),
        "garbage": (body, {**headers, "x-abridge-signature": "zz\u00ff not hex"}),
        "truncated": (body, {**headers, "x-abridge-signature": headers["x-abridge-signature"][:9]}),
        "stale": signed(gateway, "abridge", payload, now=time.time() - 310),
        "future": signed(gateway, "abridge", payload, now=time.time() + 310),
    }
    for name, (b, h) in cases.items():
        resp = gateway.post("abridge", b, {k: v.encode() for k, v in h.items()})
        assert resp.status_code == 401, name
        assert resp.json() == {"error": "invalid signature"}, name
    assert asyncio.run(_events(gateway)) == []
    causes = {r.cause for r in asyncio.run(_requests(gateway))}
    want = {"signature:missing_header", "signature:bad_signature", "signature:timestamp_skew"}
    assert want <= causes


def test_unknown_source_is_404(gateway: Gateway) -> None:
    """A source that is not configured answers 404 and is logged."""
    resp = gateway.post("nope", b"{}", {"content-type": "application/json"})
    assert resp.status_code == 404
    assert [r.cause for r in asyncio.run(_requests(gateway))] == ["unknown_source"]


def test_wrong_content_type_is_415(gateway: Gateway) -> None:
    """A body that is not declared JSON is refused before verification."""
    body, headers = signed(gateway, "nabla", sample("nabla", "transcribe_async.succeeded"),
                           content_type="text/plain")
    assert gateway.post("nabla", body, headers).status_code == 415


def test_signed_non_object_is_400(gateway: Gateway) -> None:
    """Correctly signed bytes that are not a JSON object are a 400, not a 5xx."""
    for raw in (b"not json", b"[1, 2, 3]", b"\xff\xfe{}", b"[" * 100_000, b""):
        body, headers = signed(gateway, "abridge", raw)
        assert gateway.post("abridge", body, headers).status_code == 400, raw[:10]


def test_known_type_failing_its_model_is_422(gateway: Gateway) -> None:
    """A known event type whose payload breaks the vendor model answers 422."""
    payload = sample("abridge", "quality.alert")
    payload["data"] = "CANARY-PHI-Jane-Doe"
    body, headers = signed(gateway, "abridge", payload)
    resp = gateway.post("abridge", body, headers)
    assert resp.status_code == 422
    assert "CANARY" not in resp.text


def test_body_over_the_cap_is_413(tmp_path: Path) -> None:
    """Declared or streamed bodies over max_body_bytes are refused with 413."""
    config = write_config(tmp_path / "c.toml", None)
    config.write_text(config.read_text().replace(
        '[sources.nabla]', '[sources.nabla]\nmax_body_bytes = 2048'))
    gen = start_gateway(config)
    gw = next(gen)
    try:
        big = b'{"pad": "' + b"x" * 4096 + b'"}'
        body, headers = signed(gw, "nabla", big)
        assert gw.post("nabla", body, headers).status_code == 413

        def chunks() -> Any:
            yield big[:1000]
            yield big[1000:]

        resp = httpx.post(f"{gw.url}/webhooks/nabla", content=chunks(), headers=headers)
        assert resp.status_code == 413
    finally:
        gen.close()


def test_ip_allowlist_and_trusted_proxy(tmp_path: Path) -> None:
    """allow_ips refuses other addresses (403); X-Forwarded-For counts only via a trusted proxy."""
    extra = ("[sources.guarded]\nvendor = \"abridge\"\nsecrets = [\"s3cret\"]\n"
             "allow_ips = [\"10.1.2.0/24\"]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
             "[sources.closed]\nvendor = \"abridge\"\nsecrets = [\"s3cret\"]\n"
             "allow_ips = [\"10.1.2.0/24\"]\n")
    gen = start_gateway(write_config(tmp_path / "c.toml", None, extra))
    gw = next(gen)
    try:
        for src in ("guarded", "closed"):
            body, headers = signed(gw, src, sample("abridge", "provider.enrolled"))
            assert gw.post(src, body, headers).status_code == 403
            via_proxy = {**headers, "x-forwarded-for": "10.1.2.7"}
            want = 200 if src == "guarded" else 403
            assert gw.post(src, body, via_proxy).status_code == want
    finally:
        gen.close()


def test_source_without_secrets_refuses_everything(tmp_path: Path) -> None:
    """Fail closed: a source with no secret answers 401 to every request."""
    extra = "[sources.empty]\nvendor = \"abridge\"\nsecrets = []\n"
    gen = start_gateway(write_config(tmp_path / "c.toml", None, extra))
    gw = next(gen)
    try:
        body, headers = signed(gw, "abridge", sample("abridge", "provider.enrolled"))
        assert gw.post("empty", body, headers).status_code == 401
    finally:
        gen.close()


def test_concurrent_deliveries_of_one_event_store_it_once(gateway: Gateway) -> None:
    """20 concurrent deliveries of one event: one 'received', 19 'duplicate', one row."""
    body, headers = signed(gateway, "healthie", sample("healthie", "appointment.recording_started"))

    async def blast() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(
                client.post(f"{gateway.url}/webhooks/healthie", content=body, headers=headers)
                for _ in range(20)))

    replies = [r.json() for r in asyncio.run(blast())]
    assert replies.count({"received": True}) == 1
    assert replies.count({"status": "duplicate"}) == 19
    assert len(asyncio.run(_events(gateway, source="healthie"))) == 1


def test_every_request_leaves_a_request_log_row(gateway: Gateway) -> None:
    """Accepted, duplicate and rejected requests each leave one row with outcome and cause."""
    body, headers = signed(gateway, "nabla", sample("nabla", "generate_note_async.failed"))
    gateway.post("nabla", body, headers)
    gateway.post("nabla", body, headers)
    gateway.post("nabla", body, {"content-type": "application/json"})
    rows = asyncio.run(_requests(gateway))
    assert sorted((r.status, r.outcome) for r in rows) == [
        (200, "accepted"), (200, "duplicate"), (401, "rejected")]
    assert all(r.remote_addr == "127.0.0.1" for r in rows)


def test_store_that_cannot_commit_answers_503_then_recovers(tmp_path: Path) -> None:
    """While another process holds the SQLite write lock: 503 + Retry-After; the retry lands."""
    import sqlite3

    gen = start_gateway(write_config(tmp_path / "c.toml", None))
    gw = next(gen)
    try:
        body, headers = signed(gw, "abridge", sample("abridge", "encounter.session.failed"))
        blocker = sqlite3.connect(gw.settings.data_dir / "carehook.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            resp = gw.post("abridge", body, headers)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert resp.status_code == 503
        assert resp.headers["retry-after"]
        assert resp.json() == {"error": "temporarily unavailable"}
        assert asyncio.run(_events(gw)) == []
        again = gw.post("abridge", body, headers)
        assert (again.status_code, again.json()) == (200, {"received": True})
        assert len(asyncio.run(_events(gw))) == 1
    finally:
        gen.close()


def test_health_readiness_and_metrics(gateway: Gateway) -> None:
    """/healthz and /readyz answer 200; /metrics counts requests by outcome."""
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    body, headers = signed(gateway, "nabla", sample("nabla", "transcribe_async.failed"))
    gateway.post("nabla", body, headers)
    gateway.post("nabla", body, {"content-type": "application/json"})
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'carehook_requests_total{outcome="accepted",source="nabla"} 1.0' in text
    assert 'carehook_requests_total{outcome="rejected",source="nabla"} 1.0' in text


def _garbage(
    rng: Any, valid_headers: dict[str, str], body: bytes
) -> tuple[bytes, dict[str, bytes]]:
    """A mutation of a genuine delivery: bytes flipped, headers cut, swapped or stuffed."""
    legal = [*range(0x21, 0x7F), *range(0x80, 0x100)]  # what HTTP lets a header value carry
    junk = [b"", b"=,;:", b"t=,v1=", b"sig1=::", b"v1,", b"9" * 400,
            bytes(rng.choice(legal) for _ in range(rng.randrange(1, 40)))]
    headers = {k: v.encode() for k, v in valid_headers.items()}
    for name in rng.sample(sorted(headers), k=rng.randrange(1, len(headers) + 1)):
        if name == "content-type":
            continue
        choice = rng.randrange(3)
        if choice == 0:
            del headers[name]
        elif choice == 1:
            headers[name] = rng.choice(junk).strip()
        else:
            headers[name] = headers[name][: rng.randrange(len(headers[name]) + 1)].strip()
    if rng.random() < 0.5 and body:
        i = rng.randrange(len(body))
        body = body[:i] + bytes([rng.randrange(256)]) + body[i + 1:]
    return body, headers


@pytest.mark.parametrize("source", sorted(SOURCES := ["abridge", "openevidence", "nabla",
                                                      "healthie", "standard-webhooks"]))
def test_malformed_input_never_yields_a_5xx(gateway: Gateway, source: str) -> None:
    """300 mutated deliveries per vendor: every answer is a 2xx or 4xx, never a 5xx."""
    import random

    rng = random.Random(f"fuzz-{source}")
    vendor = VENDORS[source]
    event_type = vendor.event_types[0] if vendor.event_types else "message.created"
    seen = set()
    with httpx.Client(timeout=30) as client:
        for n in range(300):
            body, headers = signed(gateway, source, sample(source, event_type, n))
            mutated_body, mutated_headers = _garbage(rng, headers, body)
            resp = client.post(f"{gateway.url}/webhooks/{source}", content=mutated_body,
                               headers=mutated_headers)
            assert resp.status_code < 500, (n, resp.status_code)
            seen.add(resp.status_code)
    assert 401 in seen


def test_wrong_method_and_nested_paths(gateway: Gateway) -> None:
    """GET on a webhook path is 405 (Allow: POST); nested or empty source paths are 404."""
    got = httpx.get(f"{gateway.url}/webhooks/abridge")
    assert (got.status_code, got.headers["allow"]) == (405, "POST")
    assert httpx.post(f"{gateway.url}/webhooks/abridge/x", content=b"{}").status_code == 404
    assert httpx.post(f"{gateway.url}/webhooks/", content=b"{}").status_code == 404
