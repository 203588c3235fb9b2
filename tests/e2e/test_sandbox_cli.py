"""`carehook sandbox` as a user runs it: a real process on a loopback port, stopped with Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from .support import CAREHOOK, clean_env, free_port

pytestmark = pytest.mark.slow




def _wait_until_up(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the sandbox did not start: {proc.communicate()}")
        time.sleep(0.1)


def test_sandbox_serves_the_fakes_and_prints_a_config(tmp_path: Path) -> None:
    """The sandbox serves a note, prints its URLs and a TOML snippet, and stops on Ctrl-C."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([CAREHOOK, "sandbox", "--port", str(port)], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        _wait_until_up(proc, f"{base}/fhir/metadata")
        note = httpx.get(f"{base}/abridge/v1/sessions/ses_e2e/note", timeout=10, headers={
            "Authorization": "Bearer sandbox-abridge-token", "X-Org-Id": "sandbox-org"})
        assert note.status_code == 200
        assert note.json()["id"] == "note_e2e"
        assert note.json()["sections"]
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises SIGINT; typer exits 130 without a traceback
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    for url in (f"{base}/abridge", f"{base}/healthie/graphql", f"{base}/fhir"):
        assert url in stderr
    config = tomllib.loads(stdout)
    assert config["sources"]["abridge"]["api_url"] == f"{base}/abridge"
    assert config["sources"]["healthie"]["api_url"] == f"{base}/healthie/graphql"
    assert config["destinations"]["ehr"]["url"] == f"{base}/fhir"


def test_sandbox_refuses_a_public_address(tmp_path: Path) -> None:
    """A non-loopback host is refused before anything listens or prints a config."""
    result = subprocess.run([CAREHOOK, "sandbox", "--host", "0.0.0.0"], cwd=tmp_path,
                            env=clean_env(), capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "refusing to serve the sandbox on 0.0.0.0" in result.stderr
    assert result.stdout == ""


def test_sandbox_on_a_busy_port_prints_no_config(tmp_path: Path) -> None:
    """A port already in use fails at once, without printing a snippet for a dead server."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([CAREHOOK, "sandbox", "--port", str(port)], cwd=tmp_path,
                                env=clean_env(), capture_output=True, text=True,
                                timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert result.stdout == ""
    assert "address already in use" in result.stderr.lower()
