"""The operator's worker commands as a user runs them: dlq, replay, show, status, worker, purge."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carehook.bootstrap import build_keyring, build_store
from carehook.envelope import Envelope, RequestRecord
from carehook.settings import load_settings

from .support import CAREHOOK
from .test_worker_e2e import _env, start, wait_until, write_config

pytestmark = pytest.mark.slow


def cli(config: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``carehook <args> --config <config>``; expect exit ``code``."""
    result = subprocess.run([CAREHOOK, *args, "--config", str(config)], capture_output=True,
                            text=True, env={**_env(), "COLUMNS": "200"}, timeout=120)
    assert result.returncode == code, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def cli_json(config: Path, *args: str) -> Any:
    """The JSON a command prints."""
    return json.loads(cli(config, *args, "--json").stdout)


async def seed(config: Path) -> dict[str, int]:
    """Three events (two of session A, one of B); A's first fails for good under a worker
    elsewhere (a destination refusing it), so it is dead before any command runs."""
    settings = load_settings(config)
    store: Any = build_store(settings, build_keyring(settings))
    await store.open()
    try:
        pks = {}
        for name, subject in (("a1", "A"), ("a2", "A"), ("b1", "B")):
            now = datetime.now(UTC)
            body = json.dumps({"event_id": name, "data": {"session_id": subject}}).encode()
            envelope = Envelope("abridge", "abridge", name, "encounter.session.completed",
                                f"abridge:session:{subject}", None, now, body, 0, True)
            await store.accept(envelope, RequestRecord("abridge", now, "10.0.0.1", 9, 200, "ok"))
            rows = await store.list_events(_newest())
            pks[name] = rows[0].id
        [claim] = await store.claim("elsewhere:1:ab", 1, 30)
        assert claim.pk == pks["a1"]
        await store.fail(claim.pk, "elsewhere:1:ab", "PermanentError", "EHR refused: 400", None)
        return pks
    finally:
        await store.close()


def _newest() -> Any:
    from carehook.inbox.port import EventFilter

    return EventFilter(limit=1)


def test_dead_letter_replay_and_worker_as_an_operator_does(tmp_path: Path) -> None:
    """dlq ls shows the failure; replay --dry-run counts; replay + `carehook worker` ends done;
    events show lists steps and attempts; status shows the subject's timeline in order."""
    config = write_config(tmp_path)
    pks = asyncio.run(seed(config))
    [dead] = cli_json(config, "dlq", "ls")
    assert (dead["id"], dead["error_class"], dead["error_message"]) == (
        pks["a1"], "PermanentError", "EHR refused: 400")
    assert "PermanentError" in cli(config, "dlq", "ls").stdout

    dry = cli(config, "events", "replay", "--status", "dead", "--since", "2020-01-01",
              "--dry-run")
    assert "would replay 1 event" in dry.stdout
    assert cli_json(config, "events", "show", str(pks["a1"]))["status"] == "dead"
    assert "replayed 1 event" in cli(config, "events", "replay", str(pks["a1"]), "--actor",
                                     "alice").stdout

    worker = start(tmp_path, "worker", "--config", str(config), "--concurrency", "2",
                   name="worker")
    try:
        asyncio.run(wait_until(lambda: _statuses(config) == {"done"}, "all events done"))
    finally:
        assert worker.stop()
    assert worker.popen.returncode == 0

    shown = cli_json(config, "events", "show", str(pks["a1"]))
    # no [destinations.ehr] in this config: the note step says so, visibly
    assert [(s["name"], s["outcome"]) for s in shown["steps"]] == [
        ("ehr.note.create", "skipped: not configured")]
    assert [(a["outcome"], a["error_class"]) for a in shown["attempt_log"]] == [
        ("dead", "PermanentError"), ("done", None)]
    assert "attempts" in cli(config, "events", "show", str(pks["a1"])).stdout
    timeline = cli_json(config, "status", "abridge:session:A")
    assert [e["event_pk"] for e in timeline["timeline"]] == [pks["a1"], pks["a2"]]
    assert timeline["state"] == "encounter.session.completed"
    assert timeline["timeline"][1]["since_previous_seconds"] >= 0
    assert "purged 0 payloads" in cli(config, "purge").stdout


def test_replay_needs_an_id_or_a_filter(tmp_path: Path) -> None:
    """`events replay` with neither an id nor a filter refuses (exit 2) and says why."""
    config = write_config(tmp_path)
    result = cli(config, "events", "replay", code=2)
    assert "--status" in result.stderr
    assert "--status must be one of" in cli(config, "events", "replay", "--status", "gone",
                                            code=2).stderr


def _statuses(config: Path) -> set[str]:
    return {e["status"] for e in cli_json(config, "events", "ls")}
