"""The admin surface on its own listener, and the /metrics series the operator surface adds."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from carehook.web.admin.auth import token_hash
from loopback import free_port

from .admin_support import TOKENS, admin_env, auth, seed, wait_for
from .conftest import start_gateway, write_config


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, series
    return float(match.group(1))


def test_metrics_count_causes_verification_failures_statuses_and_steps(tmp_path: Path) -> None:
    """After a dead event, a rejection and done events, /metrics reports them by label."""
    with admin_env(tmp_path, None) as env:
        seed(env)
        text = httpx.get(f"{env.gw.url}/metrics", timeout=10).text
    assert _value(text, 'carehook_events{status="dead"}') == 1
    assert _value(text, 'carehook_events{status="done"}') == 2
    assert _value(text, "carehook_dead_letters") == 1
    assert _value(text, "carehook_queue_depth") == 0
    assert _value(text, "carehook_oldest_waiting_seconds") == 0
    assert _value(text, 'carehook_verification_failures_total{reason="digest_mismatch",'
                        'source="healthie"}') == 1  # fmt: skip
    assert _value(text, 'carehook_request_causes_total{cause="signature:digest_mismatch",'
                        'outcome="rejected",source="healthie"}') == 1  # fmt: skip
    assert _value(text, 'carehook_step_failures_total{destination="portal",'
                        'step="forward.portal"}') == 1  # fmt: skip
    assert _value(text, 'carehook_step_duration_seconds_count{destination="ehr",'
                        'step="ehr.note.create"}') == 1  # fmt: skip
    assert "carehook_ack_seconds_bucket" in text


def test_admin_on_its_own_listener_is_absent_from_the_gateway(tmp_path: Path) -> None:
    """With [admin] host/port, /admin answers there and 404 on the gateway's listener."""
    port = free_port()
    token, scopes = TOKENS["reader"]
    extra = ("[worker]\nenabled = false\n\n[admin]\nhost = \"127.0.0.1\"\n"
             f"port = {port}\n\n[[admin.tokens]]\nname = \"reader\"\n"
             f'hash = "{token_hash(token)}"\nscopes = {scopes!r}\n'.replace("'", '"'))  # fmt: skip
    gen = start_gateway(write_config(tmp_path / "c.toml", None, extra))
    gw = next(gen)
    try:
        assert httpx.get(f"{gw.url}/admin/api/events", headers=auth("reader"),
                         timeout=10).status_code == 404  # fmt: skip
        admin = f"http://127.0.0.1:{port}/admin"
        wait_for(lambda: _up(f"{admin}/login"))  # it starts beside the gateway, just after it
        assert httpx.get(f"{admin}/api/events", headers=auth("reader"), timeout=10).json() == {
            "items": [], "next_cursor": None}
        assert httpx.get(f"{admin}/login", timeout=10).status_code == 200
        assert httpx.get(f"{admin}/api/openapi.json", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/webhooks/abridge", timeout=10
                         ).status_code == 404  # fmt: skip
    finally:
        gen.close()
