"""A partial notification failure does not re-page targets that already got the alert.

A real gateway with its worker on 127.0.0.1, a channel of two targets: a real SMTP server
(aiosmtpd) and a JSON webhook receiver that fails its first deliveries. The event is retried
until the second target answers; each target ends with exactly one alert delivered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from carehook.connectors.notify import AppriseNotifier
from carehook.envelope import SignedRequest
from carehook.errors import PartialFailure
from carehook.inbox.port import EventFilter
from carehook.sources import build_source
from carehook.vendors import builtin_vendors
from carehook.workflows.ports import Alert
from loopback import free_port, serve_app

from .conftest import SECRETS, Gateway, start_gateway, write_config


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it accepts."""

    messages: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept and keep the message."""
        self.messages.append(envelope.original_content or b"")
        return "250 Message accepted"


@dataclass
class Flaky:
    """A JSON receiver answering 503 to its first ``failures`` posts, then 200."""

    failures: int
    posts: list[int] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        """Count the post; fail or accept it."""
        await request.body()
        status = 503 if len(self.posts) < self.failures else 200
        self.posts.append(status)
        return JSONResponse({}, status_code=status)


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    """A plain SMTP server on 127.0.0.1."""
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, box
    finally:
        controller.stop()


def _gateway(tmp_path: Path, storage_url: str, smtp_port: int, hook_url: str) -> Iterator[Gateway]:
    mailto = f"mailto://127.0.0.1:{smtp_port}?from=carehook@example.org&to=oncall@example.org"
    extra = "\n".join([
        "[worker]", "poll_seconds = 0.1",
        "[notifications]", "allow_private = true",
        "[channels]", f'clinical = ["{mailto}", "json://{hook_url}/page"]',
    ])  # fmt: skip
    config = write_config(tmp_path / "carehook.toml", storage_url, extra + "\n")
    fast = 'vendor = "abridge"\nretry_base_seconds = 0.05\nretry_cap_seconds = 0.2'
    config.write_text(config.read_text().replace('vendor = "abridge"', fast))
    yield from start_gateway(config)


def _session_failed(gw: Gateway) -> tuple[bytes, dict[str, str]]:
    source = build_source("abridge", gw.settings.sources["abridge"], builtin_vendors())
    data = {"session_id": "ses_9", "error_code": "E_AUDIO"}
    body = json.dumps({"event_id": "evt_partial_1", "type": "encounter.session.failed",
                       "timestamp": "2026-01-01T00:00:00Z", "data": data}).encode()  # fmt: skip
    headers = {"content-type": "application/json"}
    request = SignedRequest("POST", "/webhooks/abridge", "", headers, body)
    headers.update(source.scheme.sign(request, SECRETS["abridge"], time.time()))
    return body, headers


async def _event(gw: Gateway) -> tuple[Any, list[Any], int]:
    store = gw.store()
    await store.open()
    try:
        [row] = await store.list_events(EventFilter())
        steps = await store.list_steps(row.id)  # type: ignore[attr-defined]
        attempts = await store.list_attempts(row.id)  # type: ignore[attr-defined]
        return row, steps, len(attempts)
    finally:
        await store.close()


def test_a_target_that_got_the_alert_is_not_paged_again_on_retry(
    tmp_path: Path, storage_url: str, mailbox: tuple[int, Mailbox]
) -> None:
    """Two failed attempts at the webhook target: the email target gets exactly one alert, the
    webhook target exactly one accepted post, the event ends done (SQLite and PostgreSQL)."""
    smtp_port, box = mailbox
    flaky = Flaky(failures=2)
    app = Starlette(routes=[Route("/{path:path}", flaky.hook, methods=["POST"])])
    with serve_app(app) as hook_url:
        for gw in _gateway(tmp_path, storage_url, smtp_port, hook_url.removeprefix("http://")):
            body, headers = _session_failed(gw)
            assert gw.post("abridge", body, headers).status_code == 200
            deadline = time.monotonic() + 30
            while True:
                row, steps, attempts = asyncio.run(_event(gw))
                if row.status == "done" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    assert row.status == "done"
    assert attempts == 3  # two failed attempts, then the one that finished
    assert flaky.posts == [503, 503, 200]
    assert len(box.messages) == 1
    names = {step.name: step.outcome for step in steps}
    assert names["alert.clinical/clinical[0]"] == "ok"  # the email target, recorded once
    assert "alert.clinical/clinical[1]" not in names


async def test_notify_names_the_targets_reached_and_skips_them_when_asked(
    mailbox: tuple[int, Mailbox],
) -> None:
    """PartialFailure.done names the email target (never its URL); with it in ``skip`` the
    next call sends to the failing target only."""
    smtp_port, box = mailbox
    flaky = Flaky(failures=1)
    app = Starlette(routes=[Route("/{path:path}", flaky.hook, methods=["POST"])])
    mailto = f"mailto://127.0.0.1:{smtp_port}?from=carehook@example.org&to=oncall@example.org"
    alert = Alert("Session failed", "high", "abridge", "encounter.session.failed", 1, "s:1")
    with serve_app(app) as url:
        notifier = AppriseNotifier({"ops": [mailto, f"json://{url.removeprefix('http://')}/p"]})
        with pytest.raises(PartialFailure) as caught:
            await notifier.notify("ops", alert)
        assert caught.value.done == {"ops[0]"}
        assert str(caught.value) == "notify ops: 1 of 2 targets failed"
        await notifier.notify("ops", alert, skip=caught.value.done)
    assert len(box.messages) == 1
    assert flaky.posts == [503, 200]
