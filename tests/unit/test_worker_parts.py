"""Pure parts of the worker: payload decoding, lease owner ids, settings, routing, metrics."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from carehook.errors import ConfigError, PermanentError
from carehook.inbox.work import Claim
from carehook.settings import Settings, load_settings
from carehook.worker.engine import work_item
from carehook.worker.identity import alive_pids, host_identity, new_owner
from carehook.worker.metrics import WorkerMetrics
from carehook.workflows import RECORD_ONLY, default_router


def _claim(payload: bytes | None) -> Claim:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return Claim(pk=9, source="nabla", vendor="nabla", event_id="e1", type="t", subject="s",
                 attempts=2, received_at=now, lease_expires_at=now, payload=payload)


def test_work_item_decodes_the_payload() -> None:
    """A claim becomes a WorkItem with its JSON payload parsed and its attempt number."""
    item = work_item(_claim(b'{"job_id": "j1"}'))
    assert (item.pk, item.attempts, dict(item.payload)) == (9, 2, {"job_id": "j1"})


@pytest.mark.parametrize(
    ("payload", "reason"), [(None, "purged"), (b"{nope", "not JSON"), (b"[1, 2]", "JSON object")]
)
def test_unusable_payloads_are_permanent(payload: bytes | None, reason: str) -> None:
    """A purged, broken or non-object payload cannot get better by retrying."""
    with pytest.raises(PermanentError, match=reason) as info:
        work_item(_claim(payload))
    assert "nope" not in str(info.value)


def test_owner_ids_name_host_and_pid() -> None:
    """Owners are "<host>:<pid>:<random>", unique per worker, host free of ':'."""
    host = host_identity()
    first, second = new_owner(host), new_owner(host)
    assert ":" not in host
    assert first.rsplit(":", 2)[:2] == [host, str(os.getpid())]
    assert first != second


def test_alive_pids_include_this_process() -> None:
    """The live pid list (where the OS offers one) contains our own pid."""
    pids = alive_pids()
    assert pids is None or os.getpid() in pids


def test_worker_settings_defaults() -> None:
    """[worker] and the per-source retry settings default to the documented values."""
    settings = Settings(sources={"a": {"vendor": "abridge"}})  # type: ignore[dict-item]
    w, src = settings.worker, settings.sources["a"]
    assert (w.enabled, w.concurrency, w.lease_seconds, w.poll_seconds) == (True, 32, 30.0, 1.0)
    assert (w.shutdown_grace_seconds, w.dedup_days, w.purge_interval_seconds) == (10, 30, 3600)
    assert (src.retry_base_seconds, src.retry_cap_seconds, src.max_attempts) == (5, 3600, 12)


def test_worker_settings_are_read_from_the_file(tmp_path: Path) -> None:
    """A [worker] table and per-source retry keys are read; unknown keys are refused."""
    path = tmp_path / "c.toml"
    path.write_text('[worker]\nconcurrency = 3\nenabled = false\n'
                    '[sources.a]\nvendor = "nabla"\nmax_attempts = 4\nretry_base_seconds = 1\n')
    settings = load_settings(path)
    assert (settings.worker.concurrency, settings.worker.enabled) == (3, False)
    assert (settings.sources["a"].max_attempts, settings.sources["a"].retry_base_seconds) == (4, 1)
    path.write_text("[worker]\nconcurency = 3\n")
    with pytest.raises(ConfigError, match=r"worker\.concurency"):
        load_settings(path)


def test_retry_cap_below_base_is_refused(tmp_path: Path) -> None:
    """retry_cap_seconds below retry_base_seconds is a configuration error."""
    path = tmp_path / "c.toml"
    path.write_text('[sources.a]\nvendor = "nabla"\nretry_base_seconds = 10\n'
                    "retry_cap_seconds = 5\n")
    with pytest.raises(ConfigError, match="retry_cap_seconds"):
        load_settings(path)


def test_default_router_records_every_event() -> None:
    """Until the clinical workflows exist, every (vendor, type) records its subject's state."""
    router = default_router()
    assert router.route("abridge", "encounter.session.completed") is RECORD_ONLY
    assert router.route("nabla", "anything.else") is RECORD_ONLY


def test_worker_metrics_share_the_process_registry() -> None:
    """Worker metrics appear on the registry /metrics renders, with outcome labels."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    metrics.finished("nabla", "done", 0.12)
    metrics.finished("nabla", "dead")
    text = generate_latest(registry).decode()
    assert 'carehook_worker_events_total{outcome="done",source="nabla"} 1.0' in text
    assert 'carehook_worker_events_total{outcome="dead",source="nabla"} 1.0' in text
    assert 'carehook_worker_receive_to_done_seconds_count{source="nabla"} 1.0' in text
