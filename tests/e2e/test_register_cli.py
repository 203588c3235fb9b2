"""`carehook register` and `carehook secrets` as an operator runs them: real subprocesses against
the sandbox's fake vendor APIs served on 127.0.0.1, and a real config file."""

from __future__ import annotations

import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from carehook.sandbox.app import Sandbox, build_sandbox
from loopback import serve_app

from .support import CAREHOOK, clean_env

pytestmark = pytest.mark.slow


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    """The sandbox on loopback."""
    box = build_sandbox()
    with serve_app(box.app) as url:
        yield box, url


@pytest.fixture
def config(tmp_path: Path, sandbox: tuple[Sandbox, str]) -> Path:
    """A config with sandbox API settings for Abridge and Healthie, and a Nabla source."""
    _box, base = sandbox
    path = tmp_path / "carehook.toml"
    path.write_text(f"""\
data_dir = "."
[sources.abridge]
vendor = "abridge"
secrets = ["abridge-secret-one-0001"]
api_url = "{base}/abridge"
api_token = "sandbox-abridge-token"
org_id = "sandbox-org"
api_allow_private = true
[sources.healthie]
vendor = "healthie"
secrets = ["healthie-secret-one-01"]
api_url = "{base}/healthie/graphql"
api_key = "sandbox-healthie-api-key"
api_allow_private = true
[sources.nabla]
vendor = "nabla"
""")
    return path


def _run(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CAREHOOK, *args, "--config", str(config)], env=clean_env(),
                          capture_output=True, text=True, timeout=60, input=stdin,
                          check=False)  # fmt: skip


def _secrets(config: Path, source: str) -> list[str]:
    return list(tomllib.loads(config.read_text())["sources"][source].get("secrets", []))


def test_healthie_register_list_rotate_delete(config: Path, sandbox: tuple[Sandbox, str]) -> None:
    """The whole Healthie lifecycle; its secrets reach the config (0600) and never the screen."""
    box, _base = sandbox
    done = _run(config, "register", "healthie", "--url", "https://gw.example",
                "--events", "appointment.transcript_available,appointment.recording_started")
    assert done.returncode == 0, done.stderr
    [hook] = box.healthie.webhooks.by_id.values()
    assert hook.url == "https://gw.example/webhooks/healthie"
    assert hook.events == ["appointment.transcript_available", "appointment.recording_started"]
    assert f"webhook id {hook.id}" in done.stdout
    assert "as secret 1" in done.stderr
    assert _secrets(config, "healthie") == ["healthie-secret-one-01", hook.secrets[0]]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    listed = _run(config, "register", "healthie", "--list")
    assert listed.returncode == 0, listed.stderr
    assert hook.id in listed.stdout
    assert "https://gw.example/webhooks/healthie" in listed.stdout

    rotated = _run(config, "register", "healthie", "--rotate", hook.id)
    assert rotated.returncode == 0, rotated.stderr
    assert _secrets(config, "healthie") == ["healthie-secret-one-01", *hook.secrets]

    deleted = _run(config, "register", "healthie", "--delete", hook.id)
    assert deleted.returncode == 0, deleted.stderr
    assert box.healthie.webhooks.by_id == {}
    everything = "".join(r.stdout + r.stderr for r in (done, listed, rotated, deleted))
    for secret in hook.secrets:
        assert secret not in everything


def test_abridge_dry_run_then_register(config: Path, sandbox: tuple[Sandbox, str]) -> None:
    """--dry-run calls nothing; the real run gives Abridge the source's newest secret."""
    box, _base = sandbox
    dry = _run(config, "register", "abridge", "--url", "https://gw.example", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would register https://gw.example/webhooks/abridge with abridge" in dry.stdout
    assert box.abridge.webhooks.webhooks == {}
    real = _run(config, "register", "abridge", "--url", "https://gw.example")
    assert real.returncode == 0, real.stderr
    [secret] = box.abridge.webhooks.secrets.values()
    assert secret == "abridge-secret-one-0001"
    assert secret not in real.stdout + real.stderr


def test_a_vendor_refusal_is_one_line_and_exit_code_2(config: Path) -> None:
    """A wrong API token: carehook's own one-line error, no traceback, no credential."""
    config.write_text(config.read_text().replace("sandbox-abridge-token", "wrong-token-123"))
    result = _run(config, "register", "abridge", "--url", "https://gw.example")
    assert result.returncode == 2
    assert result.stderr.strip() == "carehook: abridge create webhook: 401"
    assert "wrong-token-123" not in result.stdout + result.stderr


def test_nabla_prints_the_console_steps(config: Path) -> None:
    """Nabla has no API: the steps with the exact URL and events; nothing is written."""
    before = config.read_text()
    result = _run(config, "register", "nabla", "--url", "https://gw.example")
    assert result.returncode == 0, result.stderr
    assert "URL: https://gw.example/webhooks/nabla" in result.stdout
    assert "transcribe_async.succeeded" in result.stdout
    assert "carehook secrets add nabla --stdin" in result.stdout
    assert config.read_text() == before


def test_secrets_add_ls_retire(config: Path) -> None:
    """A generated secret is printed once; a pasted one never; ls shows fingerprints only."""
    added = _run(config, "secrets", "add", "abridge")
    assert added.returncode == 0, added.stderr
    generated = added.stdout.strip()
    assert _secrets(config, "abridge") == ["abridge-secret-one-0001", generated]
    assert "secret 1 added" in added.stderr

    pasted = "nabla-console-secret-from-the-vendor"
    from_stdin = _run(config, "secrets", "add", "nabla", "--stdin", stdin=pasted + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert pasted not in from_stdin.stdout + from_stdin.stderr
    assert _secrets(config, "nabla") == [pasted]

    listed = _run(config, "secrets", "ls", "abridge")
    assert listed.returncode == 0, listed.stderr
    assert generated not in listed.stdout
    assert "abridge-secret-one-0001" not in listed.stdout
    assert "literal" in listed.stdout

    retired = _run(config, "secrets", "retire", "abridge", "0")
    assert retired.returncode == 0, retired.stderr
    assert _secrets(config, "abridge") == [generated]
    again = _run(config, "secrets", "retire", "abridge", "0")
    assert again.returncode == 2
    assert "has no secret 0 (its ids: 1)" in again.stderr
    last = _run(config, "secrets", "retire", "abridge", "1")
    assert last.returncode == 2
    assert "only secret" in last.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
