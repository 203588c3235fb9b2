"""`carehook serve` and `carehook worker` refuse to start on a configuration that would fail
every event, naming the setting and never its value; a probable mistake is a warning."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .support import CAREHOOK, clean_env, free_port

pytestmark = pytest.mark.slow

BASE = """data_dir = "."
[sources.sw]
vendor = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"""
#: a literal secret value that must never be echoed back
CANARY = "whsec_Canary*Not*Base64*7731"


def _run(tmp_path: Path, extra: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "carehook.toml"
    config.write_text(BASE + extra)
    env = clean_env()
    env.pop("UNSET_FOR_CAREHOOK_TEST", None)
    return subprocess.run(
        [CAREHOOK, *args, "--config", str(config)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("worker",)])
def test_a_destination_secret_from_an_unset_variable_refuses_to_start(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """`env:UNSET...` as a webhook destination secret: exit 2, the setting and the variable
    are named; nothing is served."""
    extra = ('[destinations.portal]\ntype = "webhook"\nurl = "https://portal.example/in"\n'
             'secret = "env:UNSET_FOR_CAREHOOK_TEST"\n')  # fmt: skip
    done = _run(tmp_path, extra, *command)
    assert done.returncode == 2, done.stderr
    assert "destinations.portal.secret" in done.stderr
    assert "UNSET_FOR_CAREHOOK_TEST is not set" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("worker",)])
def test_an_undecodable_standard_webhooks_secret_refuses_to_start(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A Standard Webhooks source secret that is not base64 is a start-up error naming the
    source and index, not a 401 on every delivery; the secret itself is never printed."""
    extra = f'[sources.sw2]\nvendor = "standard-webhooks"\nsecrets = ["{CANARY}"]\n'
    done = _run(tmp_path, extra, *command)
    assert done.returncode == 2, done.stderr
    assert "sources.sw2.secrets[0]" in done.stderr
    assert "Canary" not in done.stdout + done.stderr


def test_an_invalid_channel_url_refuses_to_start(tmp_path: Path) -> None:
    """A channel target Apprise cannot parse: exit 2, the channel named, the URL not."""
    extra = '[channels]\nops = ["nosuchscheme://Canary-token@host"]\n'
    done = _run(tmp_path, extra, "serve", "--port", "0")
    assert done.returncode == 2, done.stderr
    assert "channel 'ops'" in done.stderr
    assert "Canary" not in done.stdout + done.stderr


def test_an_unused_fhir_destination_is_a_warning_and_serve_starts(tmp_path: Path) -> None:
    """A `type = "fhir"` destination not named `ehr` is logged as unused; serve still serves."""
    port = free_port()
    config = tmp_path / "carehook.toml"
    config.write_text(BASE + '[destinations.emr]\ntype = "fhir"\nurl = "https://fhir.example/r4"\n')
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [CAREHOOK, "serve", "--config", str(config), "--port", str(port)], cwd=tmp_path,
            env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "config.unused_destination" in text
    assert "destinations.emr" in text
