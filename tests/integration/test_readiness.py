"""/readyz and supervised background tasks, through a real gateway on 127.0.0.1.

A background task that crashes is logged at once, counted in /metrics, restarted after a
back-off, and makes /readyz answer 503 while it is down; a database whose schema is not the
code's head makes /readyz answer 503 until it is migrated again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from structlog.testing import capture_logs

from carehook.bootstrap import build_app, build_components, server_config, worker_task
from carehook.envelope import SignedRequest
from carehook.inbox import migrate
from carehook.inbox.port import EventFilter
from carehook.settings import load_settings
from carehook.sources import build_source
from carehook.vendors import builtin_vendors
from carehook.web.app import create_app
from carehook.web.ingress import Ingress
from carehook.worker.supervisor import BackgroundTask, TaskFn
from loopback import free_port, serve_config

from .conftest import NO_WORKER, SECRETS, write_config

FAST_RESTART = "[worker]\npoll_seconds = 0.2\nrestart_base_seconds = 0.3\nrestart_cap_seconds = 1\n"


def _until(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _crashes(url: str, task: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    for line in text.splitlines():
        if line.startswith(f'carehook_background_crashes_total{{task="{task}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no crash counter for {task}")


def _crashing_then(
    times: int, then: TaskFn | None = None
) -> tuple[BackgroundTask, list[float]]:
    """A task that raises on its first ``times`` runs, then runs ``then`` (or waits for stop)."""
    starts: list[float] = []

    async def run(stop: asyncio.Event) -> None:
        starts.append(time.monotonic())
        if len(starts) <= times:
            await asyncio.sleep(0.3)
            raise RuntimeError("planted crash")
        if then is not None:
            await then(stop)
        else:
            await stop.wait()

    return BackgroundTask("worker", run), starts


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A SQLite gateway config with fast restarts."""
    return write_config(tmp_path / "carehook.toml", f"sqlite:///{tmp_path / 'c.db'}", FAST_RESTART)


@contextmanager
def _serve(config: Path, task: BackgroundTask) -> Iterator[str]:
    settings = load_settings(config)
    components = build_components(settings)
    ingress = Ingress(components.sources, components.store, components.metrics, time.time)
    app = create_app(ingress, components.store, components.metrics, [task],
                     restart_seconds=(0.3, 1.0))  # fmt: skip
    with serve_config(server_config(app, "127.0.0.1", free_port())) as url:
        yield url


def test_a_crashed_task_is_logged_counted_restarted_and_readyz_503_while_down(
    config: Path,
) -> None:
    """Two crashes: each logged with its task name and counted; /readyz 503 while down, 200
    once the third run stays up."""
    task, starts = _crashing_then(2)
    answers: list[tuple[int, object]] = []

    def ready(url: str) -> bool:
        answer = httpx.get(f"{url}/readyz")
        answers.append((answer.status_code, answer.json().get("background")))
        return answer.status_code == 200 and len(starts) == 3

    with capture_logs() as logs, _serve(config, task) as url:
        _until(lambda: ready(url))
        assert _crashes(url, "worker") == 2
    assert (503, {"worker": "down"}) in answers
    assert answers[-1] == (200, {"worker": "up"})
    crashed = [e for e in logs if e["event"] == "background.crashed"]
    assert [(e["task"], e["error_class"]) for e in crashed] == [("worker", "RuntimeError")] * 2
    assert "planted crash" not in json.dumps(logs, default=str)


def _signed(config: Path, event_id: str) -> tuple[bytes, dict[str, str]]:
    settings = load_settings(config)
    source = build_source("abridge", settings.sources["abridge"], builtin_vendors())
    data = {"session_id": "ses_1", "status": "completed"}
    body = json.dumps({"event_id": event_id, "type": "encounter.session.completed",
                       "timestamp": "2026-01-01T00:00:00Z", "data": data}).encode()  # fmt: skip
    headers = {"content-type": "application/json"}
    request = SignedRequest("POST", "/webhooks/abridge", "", headers, body)
    headers.update(source.scheme.sign(request, SECRETS["abridge"], time.time()))
    return body, headers


def test_a_crashed_worker_restarts_and_processes_what_was_accepted_meanwhile(
    config: Path,
) -> None:
    """While the worker is down after a crash, ingress still acknowledges; after the restart
    the real worker processes the event to done."""
    settings = load_settings(config)
    components = build_components(settings)
    task, _ = _crashing_then(1, then=worker_task(components))
    ingress = Ingress(components.sources, components.store, components.metrics, time.time)
    app = create_app(ingress, components.store, components.metrics, [task],
                     restart_seconds=(1.0, 1.0))  # fmt: skip
    with serve_config(server_config(app, "127.0.0.1", free_port())) as url:
        _until(lambda: httpx.get(f"{url}/readyz").status_code == 503)
        body, headers = _signed(config, "evt_while_down")
        sent = httpx.post(f"{url}/webhooks/abridge", content=body, headers=headers)
        assert sent.status_code == 200

        async def status() -> str:
            other = build_components(settings).store
            await other.open()
            try:
                rows = await other.list_events(EventFilter())
                return rows[0].status if rows else "none"
            finally:
                await other.close()

        _until(lambda: asyncio.run(status()) == "done")
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert _crashes(url, "worker") == 1


def _previous(head: str) -> str:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite:///unused"))
    down = script.get_revision(head).down_revision
    assert isinstance(down, str)
    return down


def test_readyz_is_503_while_the_schema_is_behind_the_code(
    tmp_path: Path, storage_url: str
) -> None:
    """A database downgraded one revision below the code's head answers 503 naming both
    revisions; migrated again, 200 (SQLite and PostgreSQL)."""
    config = write_config(tmp_path / "carehook.toml", storage_url, NO_WORKER)
    settings = load_settings(config)
    app = build_app(build_components(settings))
    head = migrate.head_revision()
    with serve_config(server_config(app, "127.0.0.1", free_port())) as url:
        assert httpx.get(f"{url}/readyz").json()["schema"] == "current"
        migrate.downgrade(settings.storage_url, _previous(head))
        answer = httpx.get(f"{url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["schema"] == f"database at {_previous(head)}, code at {head}"
        migrate.upgrade(settings.storage_url)
        assert httpx.get(f"{url}/readyz").status_code == 200
