"""`carehook admin token new` and `carehook sources ls`, run as the installed command."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from carehook.envelope import SignedRequest
from carehook.settings import load_settings
from carehook.sources import build_source
from carehook.vendors import builtin_vendors
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


def _post_signed_with(gw: Any, secret: str, seq: int) -> int:
    """POST an Abridge event signed with ``secret``; the status."""
    src = build_source("abridge", gw.settings.sources["abridge"], builtin_vendors())
    body = json.dumps(sample("abridge", "encounter.session.completed", seq=seq)).encode()
    headers = {"content-type": "application/json"}
    headers.update(src.scheme.sign(SignedRequest("POST", src.public_path, "", headers, body),
                                   secret, time.time()))  # fmt: skip
    return int(gw.post("abridge", body, headers).status_code)


def test_a_rotation_keeps_each_secret_id_and_its_events(tmp_path: Path) -> None:
    """The rotation the docs describe: add a secret (id 1), deliveries match it, retire id 0.
    Events keep the id of the secret that verified them: after the retire the new secret is
    still id 1 (not moved down to 0), id 0 is shown retired with its own events, and a later
    add gets id 2, never the retired 0."""
    config = write_config(tmp_path / "carehook.toml", None, "[worker]\nenabled = false\n")
    old = load_settings(config).sources["abridge"].secrets[0]
    new = "abridge-rotated-secret-0002"

    def deliver(*pairs: tuple[str, int]) -> list[int]:
        gen = start_gateway(config)
        gw = next(gen)
        try:
            return [_post_signed_with(gw, secret, seq) for secret, seq in pairs]
        finally:
            gen.close()

    assert deliver((old, 1)) == [200]
    added = subprocess.run([CAREHOOK, "secrets", "add", "abridge", "--stdin", "--config",
                            str(config)], input=new + "\n", capture_output=True, text=True,
                           env=clean_env(), timeout=60, check=False)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "secret 1 added" in added.stderr
    assert deliver((new, 2), (old, 3)) == [200, 200]
    _cli(config, "secrets", "retire", "abridge", "0")
    assert deliver((new, 4), (old, 5)) == [200, 401]
    doc = {s["name"]: s for s in json.loads(_cli(config, "sources", "ls", "--json").stdout)}
    by_id = {s["index"]: s for s in doc["abridge"]["secrets"]}
    assert (by_id[0]["configured"], by_id[0]["events"]) == (False, 2)
    assert (by_id[1]["configured"], by_id[1]["events"]) == (True, 2)
    assert doc["abridge"]["last_matched_index"] == 1
    listed = _cli(config, "secrets", "ls", "abridge").stdout
    assert "retired: 0" in listed
    assert new not in listed
    again = subprocess.run([CAREHOOK, "secrets", "add", "abridge", "--config", str(config)],
                           capture_output=True, text=True, env=clean_env(), timeout=60,
                           check=False)  # fmt: skip
    assert "secret 2 added" in again.stderr
    settings = load_settings(config).sources["abridge"]
    assert (settings.ids(), settings.retired_secret_ids) == ([1, 2], [0])
