"""The admin API over a real gateway: scopes, pagination, filters, audit, PHI canaries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .admin_support import CANARIES, TOKENS, AdminEnv, Seeded, admin_env, seed, wait_for

#: every endpoint: (method, path template, the scope it needs)
ENDPOINTS = [
    ("GET", "/events", "read"),
    ("GET", "/events/{pk}", "read"),
    ("GET", "/events/{pk}/payload", "payload"),
    ("POST", "/events/{pk}/replay", "replay"),
    ("POST", "/replay", "replay"),
    ("GET", "/dead-letters", "read"),
    ("GET", "/requests", "read"),
    ("GET", "/reviews", "read"),
    ("POST", "/reviews/{review}/resolve", "replay"),
    ("GET", "/subjects/abridge:session:x/timeline", "read"),
    ("GET", "/overview", "read"),
    ("GET", "/sources", "admin"),
    ("GET", "/audit", "admin"),
]
_BODIES = {"/replay": {"status": "dead", "dry_run": True},
           "/reviews/{review}/resolve": {"note": "ok"}}


@pytest.fixture
def env(tmp_path: Path, storage_url: str) -> Iterator[tuple[AdminEnv, Seeded]]:
    """A seeded gateway with the admin surface on, per storage backend."""
    with admin_env(tmp_path, storage_url) as running:
        yield running, seed(running)


def _call(env: AdminEnv, method: str, path: str, token: str | None, seeded: Seeded
          ) -> httpx.Response:
    url = path.format(pk=seeded.dead_pk, review=seeded.review_id)
    if method == "GET":
        return env.get(url, token)
    return env.post(url, token, _BODIES.get(path))


def test_every_endpoint_refuses_a_token_without_its_scope(env: tuple[AdminEnv, Seeded]) -> None:
    """No token or a wrong one: 401; a token lacking the endpoint's scope: 403; with it: 2xx."""
    api, seeded = env
    for method, path, scope in ENDPOINTS:
        assert _call(api, method, path, None, seeded).status_code == 401, path
        bad = httpx.request(method, f"{api.api}{path.format(pk=1, review=1)}", timeout=10,
                            headers={"authorization": "Bearer chk_not_a_token"})
        assert bad.status_code == 401, path
        for name, (_, scopes) in TOKENS.items():
            if scope not in scopes:
                assert _call(api, method, path, name, seeded).status_code == 403, (path, name)
    for method, path, scope in ENDPOINTS:
        holder = next(n for n, (_, s) in TOKENS.items() if scope in s and n != "root")
        response = _call(api, method, path, holder, seeded)
        assert response.status_code < 300, (path, holder, response.text)


def test_replay_after_fixing_the_cause_and_the_audit_names_the_token(
    env: tuple[AdminEnv, Seeded],
) -> None:
    """A dead event replayed once the receiver is fixed ends done; the audit log names the
    token for the payload view, the replay and the resolution."""
    api, seeded = env
    assert api.post("/replay", "operator", {"status": "dead", "dry_run": True}).json() == {
        "count": 1, "dry_run": True}
    api.receiver.status = 200
    assert api.post(f"/events/{seeded.dead_pk}/replay", "operator").json()["count"] == 1
    wait_for(lambda: api.get(f"/events/{seeded.dead_pk}").json()["event"]["status"] == "done")
    detail = api.get(f"/events/{seeded.dead_pk}").json()
    assert [a["outcome"] for a in detail["attempts"]][-1] == "done"
    assert api.get(f"/events/{seeded.canary_pk}/payload", "viewer").json()["audited"] is True
    resolved = api.post(f"/reviews/{seeded.review_id}/resolve", "operator", {"note": "checked"})
    assert resolved.json()["resolved_by"] == "operator"
    again = api.post(f"/reviews/{seeded.review_id}/resolve", "operator", {"note": "again"})
    assert again.status_code == 409
    audit = api.get("/audit", "auditor").json()["items"]
    seen = {(a["actor"], a["action"], a["event_id"]) for a in audit}
    assert ("operator", "event.replay", seeded.dead_pk) in seen
    assert ("viewer", "payload.view", seeded.canary_pk) in seen
    assert any(a["actor"] == "operator" and a["action"] == "review.resolve" for a in audit)


def test_canaries_only_in_the_payload_endpoint(env: tuple[AdminEnv, Seeded]) -> None:
    """Every GET answer without the payload scope is free of PHI canaries; the payload
    endpoint (payload scope) shows them."""
    api, seeded = env
    texts = []
    for method, path, _ in ENDPOINTS:
        if method == "GET" and "payload" not in path:
            texts.append(_call(api, method, path, "root", seeded).text)
    texts.append(api.get(f"/events/{seeded.canary_pk}", "reader").text)
    texts.append(api.get("/requests", "reader", source="healthie").text)
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
    payload = api.get(f"/events/{seeded.canary_pk}/payload", "viewer").json()["payload"]
    assert CANARIES[0] in payload


def test_cursor_pages_are_stable_and_filters_apply(env: tuple[AdminEnv, Seeded]) -> None:
    """Pages of one event each walk every event once, newest first; filters narrow them."""
    api, _ = env
    seen, cursor = [], None
    while True:
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = api.get("/events", "reader", **params).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = [e["id"] for e in api.get("/events", "reader", limit=500).json()["items"]]
    assert seen == everything == sorted(everything, reverse=True)
    assert len(seen) == 3
    assert {e["source"] for e in api.get("/events", source="healthie").json()["items"]} == {
        "healthie"}
    future = api.get("/events", since="2999-01-01T00:00:00").json()
    assert future == {"items": [], "next_cursor": None}
    rejected = api.get("/requests", outcome="rejected").json()["items"]
    assert rejected
    assert rejected[0]["cause"].startswith("signature:")
    sources = {s["name"]: s for s in api.get("/sources", "auditor").json()}
    assert sources["healthie"]["rejections_24h"] == {rejected[0]["cause"]: 1}
    assert sources["healthie"]["last_matched_index"] == 0
    assert api.get("/events/999999").status_code == 404
    assert api.post("/replay", json={}).status_code == 400


def test_admin_is_404_without_a_configured_token(tmp_path: Path) -> None:
    """With no admin token configured, the admin API and the dashboard answer 404."""
    from .conftest import start_gateway, write_config

    gen = start_gateway(write_config(tmp_path / "c.toml", None, "[worker]\nenabled = false\n"))
    gw = next(gen)
    try:
        for path in ("/admin/", "/admin/login", "/admin/api/events", "/admin/api/openapi.json"):
            assert httpx.get(f"{gw.url}{path}", timeout=10).status_code == 404, path
    finally:
        gen.close()
