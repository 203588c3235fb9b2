"""`carehook admin token new` and `carehook sources ls`, run as the installed command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from carehook.settings import load_settings
from carehook.web.admin.auth import token_hash
from integration.conftest import start_gateway, write_config
from integration.test_ingress import sample, signed

from .support import CAREHOOK, clean_env


def _cli(config: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CAREHOOK, *args, "--config", str(config)], capture_output=True,
                            text=True, env=clean_env(), timeout=60, check=False)  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    return result


def test_token_new_prints_it_once_and_writes_only_its_hash(tmp_path: Path) -> None:
    """The token is printed, the config (0600) gets its hash and scopes, the gateway accepts
    it; a duplicate name and an unknown scope are refused."""
    config = write_config(tmp_path / "carehook.toml", None, "[worker]\nenabled = false\n")
    result = _cli(config, "admin", "token", "new", "oncall", "--scopes", "read,replay")
    token = result.stdout.strip().splitlines()[-1]
    text = config.read_text()
    assert token not in text
    assert token_hash(token) in text
    assert config.stat().st_mode & 0o777 == 0o600
    [entry] = load_settings(config).admin.tokens
    assert (entry.name, entry.scopes) == ("oncall", ["read", "replay"])
    _cli(config, "admin", "token", "new", "oncall", code=2)
    bad = _cli(config, "admin", "token", "new", "other", "--scopes", "read,root", code=2)
    assert "--scopes" in bad.stderr
    gen = start_gateway(config)
    gw = next(gen)
    try:
        ok = httpx.get(f"{gw.url}/admin/api/events", timeout=10,
                       headers={"authorization": f"Bearer {token}"})  # fmt: skip
        assert ok.status_code == 200
        assert httpx.get(f"{gw.url}/admin/api/audit", timeout=10,
                         headers={"authorization": f"Bearer {token}"}).status_code == 403
    finally:
        gen.close()


def test_sources_ls_shows_each_secret_and_its_last_match(tmp_path: Path) -> None:
    """With two secrets and events verified by the first, `sources ls` shows both by index:
    secret 0 matched last (2 events), secret 1 never; --json carries the same figures."""
    config = write_config(tmp_path / "carehook.toml", None, "[worker]\nenabled = false\n")
    text = config.read_text().replace('secrets = ["abridge-test-secret"]',
                                      'secrets = ["old-secret", "abridge-test-secret"]')
    config.write_text(text)
    gen = start_gateway(config)
    gw = next(gen)
    try:
        for seq in (1, 2):
            payload = sample("abridge", "encounter.session.completed", seq=seq)
            body, headers = signed(gw, "abridge", payload)  # signed with secret 0
            assert gw.post("abridge", body, headers).status_code == 200
    finally:
        gen.close()
    doc = {s["name"]: s for s in json.loads(_cli(config, "sources", "ls", "--json").stdout)}
    abridge = doc["abridge"]
    assert [s["index"] for s in abridge["secrets"]] == [0, 1]
    assert abridge["secrets"][0]["events"] == 2
    assert abridge["last_matched_index"] == 0
    assert abridge["secrets"][1]["last_matched_at"] is None
    shown = _cli(config, "sources", "ls").stdout
    assert "secret 1 [configured]: last matched never" in shown
    assert "(latest match)" in shown
