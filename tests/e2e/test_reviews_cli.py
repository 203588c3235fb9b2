"""`carehook reviews` and `carehook status` as an operator runs them, against a SQLite database
prepared through the store (review items and timeline entries committed with their steps)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carehook.bootstrap import build_keyring
from carehook.envelope import Envelope, RequestRecord
from carehook.inbox import open_store
from carehook.settings import load_settings
from carehook.testing import FakeClock
from carehook.workflows import ReviewRequest, TimelineEntry

from .test_worker_cli import cli, cli_json
from .test_worker_e2e import write_config

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
SUBJECT = "abridge:session:S1"
#: (event id, minutes after T0, timeline state, review kind or None)
STEPS = (("e1", 0, "started", None), ("e2", 5, "quality.review", "abridge.quality"),
         ("e3", 65, "done", "openevidence.review"))  # fmt: skip


async def seed(config: Path) -> None:
    """Three events of one session, each with a timeline entry; two open a review item."""
    settings = load_settings(config)
    clock = FakeClock(T0)
    store = open_store(settings.storage_url, build_keyring(settings), clock=clock)
    await store.open()
    try:
        for event_id, minutes, state, kind in STEPS:
            clock.now = T0 + timedelta(minutes=minutes)
            await _one(store, event_id, state, kind, clock.now)
    finally:
        await store.close()


async def _one(store: Any, event_id: str, state: str, kind: str | None, now: datetime) -> None:
    body = json.dumps({"event_id": event_id, "type": "quality.alert",
                       "data": {"session_id": "S1"}}).encode()  # fmt: skip
    envelope = Envelope("abridge", "abridge", event_id, "quality.alert", SUBJECT, None, now, body,
                        0, True)  # fmt: skip
    await store.accept(envelope, RequestRecord("abridge", now, "10.0.0.1", len(body), 200, "ok"))
    [claim] = await store.claim("seed:1:ab", 1, 30)
    review = None if kind is None else ReviewRequest(
        kind, "high", f"quality score 0.41 below threshold 0.70 ({event_id})", f"k:{event_id}")
    await store.record_step(claim.pk, "seed:1:ab", "quality.assess", "ok", "",
                            TimelineEntry(SUBJECT, state, f"{state} detail"), review=review)
    await store.complete(claim.pk, "seed:1:ab")


async def audit(config: Path) -> list[tuple[str, str, str]]:
    """(actor, action, detail) of every audit row, newest first."""
    settings = load_settings(config)
    store = open_store(settings.storage_url, build_keyring(settings))
    await store.open()
    try:
        return [(r.actor, r.action, r.detail) for r in await store.list_audit()]
    finally:
        await store.close()


def test_reviews_are_listed_resolved_with_a_note_and_audited(tmp_path: Path) -> None:
    """ls shows the open items newest first; resolve closes one (audited); --all shows both."""
    config = write_config(tmp_path)
    asyncio.run(seed(config))
    listed = cli_json(config, "reviews", "ls")
    assert [r["kind"] for r in listed] == ["openevidence.review", "abridge.quality"]
    assert {r["status"] for r in listed} == {"open"}
    assert "abridge.quality" in cli(config, "reviews", "ls").stdout

    target = listed[1]["id"]
    done = cli(config, "reviews", "resolve", str(target), "--note", "note re-dictated",
               "--actor", "alice")  # fmt: skip
    assert f"resolved review {target}" in done.stdout
    assert [r["id"] for r in cli_json(config, "reviews", "ls")] == [listed[0]["id"]]
    everything = {r["id"]: r for r in cli_json(config, "reviews", "ls", "--all")}
    resolved = everything[target]
    assert (resolved["status"], resolved["resolved_by"], resolved["note"]) == (
        "resolved", "alice", "note re-dictated")
    actions = asyncio.run(audit(config))
    assert ("alice", "review.resolve") in [(actor, action) for actor, action, _ in actions]


def test_resolving_twice_or_an_unknown_item_fails_and_says_why(tmp_path: Path) -> None:
    """A second resolve, an unknown id, or an empty note exit non-zero with a reason."""
    config = write_config(tmp_path)
    asyncio.run(seed(config))
    first = cli_json(config, "reviews", "ls")[0]["id"]
    cli(config, "reviews", "resolve", str(first), "--note", "ok")
    again = cli(config, "reviews", "resolve", str(first), "--note", "ok", code=1)
    assert "already resolved" in again.stderr
    assert "no review item 999" in cli(config, "reviews", "resolve", "999", "--note", "x",
                                       code=1).stderr  # fmt: skip
    assert "--note" in cli(config, "reviews", "resolve", str(first), "--note", " ", code=2).stderr


def test_an_empty_queue_says_so(tmp_path: Path) -> None:
    """`reviews ls` on a fresh database prints that nothing is open; --json prints []."""
    config = write_config(tmp_path)
    assert "no open review items" in cli(config, "reviews", "ls").stdout
    assert cli_json(config, "reviews", "ls") == []


def test_status_prints_the_timeline_with_durations(tmp_path: Path) -> None:
    """status: entries in order with time since the previous and the first, time per state."""
    config = write_config(tmp_path)
    asyncio.run(seed(config))
    doc = cli_json(config, "status", SUBJECT)
    assert doc["state"] == "done"
    assert [e["state"] for e in doc["timeline"]] == ["started", "quality.review", "done"]
    assert [e["elapsed_seconds"] for e in doc["timeline"]] == [0, 300, 3900]
    assert [e["since_previous_seconds"] for e in doc["timeline"]] == [None, 300, 3600]
    assert doc["state_seconds"] == {"started": 300, "quality.review": 3600}
    assert doc["total_seconds"] == 3900
    text = cli(config, "status", SUBJECT).stdout
    assert "3 entries over 1h05m" in text
    assert "started 5m00s" in text
