"""The README's first-note walk-through, as a new user runs it: `carehook init`, `carehook
sandbox --apply`, `carehook serve`, `carehook simulate`, and the note is in the FHIR server."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .support import CAREHOOK, clean_env, free_port

pytestmark = pytest.mark.slow


@contextmanager
def _running(args: list[str], cwd: Path, ready_url: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([CAREHOOK, *args], cwd=cwd, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"carehook {args[0]} did not start: {proc.communicate()}")
        time.sleep(0.1)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_a_simulated_session_appears_as_a_note_in_the_sandbox_fhir_server(tmp_path: Path) -> None:
    """init → sandbox --apply → serve → simulate: one preliminary DocumentReference appears."""
    subprocess.run([CAREHOOK, "init"], cwd=tmp_path, env=clean_env(), check=True, timeout=60,
                   capture_output=True)  # fmt: skip
    box, gw = free_port(), free_port()
    fhir = f"http://127.0.0.1:{box}/fhir"
    with _running(["sandbox", "--port", str(box), "--apply"], tmp_path, f"{fhir}/metadata"):
        config = (tmp_path / ".carehook" / "carehook.toml").read_text()
        assert f'api_url = "http://127.0.0.1:{box}/abridge"' in config
        with _running(["serve", "--port", str(gw)], tmp_path, f"http://127.0.0.1:{gw}/healthz"):
            sim = subprocess.run(
                [CAREHOOK, "simulate", "abridge", "encounter.session.completed", "--url",
                 f"http://127.0.0.1:{gw}/webhooks/abridge"],
                cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert "-> 200" in sim.stdout, sim.stdout + sim.stderr
            found = _search(fhir)
    [entry] = found["entry"]
    doc = entry["resource"]
    assert (doc["resourceType"], doc["docStatus"]) == ("DocumentReference", "preliminary")
    assert doc["identifier"][0]["system"] == "urn:carehook:abridge:note"


def _search(fhir: str) -> dict[str, object]:
    """Poll the FHIR server until the worker has filed the note."""
    deadline = time.monotonic() + 60
    while True:
        found = httpx.get(f"{fhir}/DocumentReference", timeout=10,
                          headers={"Authorization": "Bearer sandbox-fhir-token"}).json()
        if found.get("entry") or time.monotonic() > deadline:
            return dict(found)
        time.sleep(0.2)
