"""Chaos: a forward destination down for 2 minutes (short version: ~10 s) under load.

Every event is forwarded (a ``[[routes]]`` entry) to a loopback receiver that counts each
delivery by its ``webhook-id``. The receiver is stopped (connection refused) while events keep
arriving; the worker retries with back-off; once it is back, every event is done and the
receiver holds exactly one delivery per event: nothing lost, no duplicate write.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loopback import free_port

from .support_worker import Figures, Load, pick, serve, wait_until, write_config

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


class Receiver:
    """The team's endpoint: counts deliveries by webhook-id; can be stopped and restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.ids: Counter[str] = Counter()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _hook(self, request: Request) -> Response:
        await request.body()
        self.ids[request.headers.get("webhook-id", "")] += 1
        return JSONResponse({"ok": True})

    def start(self) -> None:
        """Listen on the (same) port."""
        app = Starlette(routes=[Route("/in", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop listening (deliveries now get connection refused)."""
        assert self._server is not None
        assert self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=30)


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql).fetchall()


async def test_a_destination_down_for_minutes_gets_everything_once_when_back(
    tmp_path: Path,
) -> None:
    """Receiver down under load: events retry with back-off, none dead; when it returns every
    event is done and delivered exactly once."""
    down_for = pick(10, 120)
    receiver = Receiver()
    receiver.start()
    db = tmp_path / "carehook.db"
    base, cap = pick(0.2, 1.0), pick(2.0, 15.0)
    extra = "\n".join([
        "[destinations.hooks]", 'type = "webhook"', f'url = "http://127.0.0.1:{receiver.port}/in"',
        'secret = "chaos-destination-secret"', "allow_private = true", "timeout_seconds = 5",
        "[[routes]]", 'source = "abridge"', 'events = "*"', 'to = "hooks"',
    ]) + "\n"  # fmt: skip
    config = write_config(tmp_path, f"sqlite:///{db}", extra)
    text = config.read_text().replace("retry_base_seconds = 0.2", f"retry_base_seconds = {base}")
    config.write_text(text.replace("retry_cap_seconds = 2", f"retry_cap_seconds = {cap}"))
    try:
        with serve(tmp_path, config) as gateway:
            load = Load.for_config(config, gateway.url, pace_seconds=0.05)
            sending = asyncio.create_task(load.run())
            await asyncio.sleep(1.0)
            await asyncio.to_thread(receiver.stop)
            stopped_at = time.monotonic()
            delivered_before = sum(receiver.ids.values())
            await asyncio.sleep(min(down_for / 2, 5))
            load.stop_new.set()
            await asyncio.wait_for(sending, 120)
            await asyncio.sleep(max(0.0, down_for - (time.monotonic() - stopped_at)))
            retrying = _rows(db, "SELECT count(*) FROM events WHERE status = 'retrying'")[0][0]
            await asyncio.to_thread(receiver.start)
            back_at = time.monotonic()
            acked = set(load.acked)

            def all_done() -> bool:
                rows = _rows(db, "SELECT count(*) FROM events WHERE status IN ('done', 'dead')")
                return int(rows[0][0]) >= len(acked)

            await wait_until(all_done, "every event to be terminal", seconds=cap * 4 + 60)
            drained = time.monotonic() - back_at
    finally:
        receiver.stop()
    events = _rows(db, "SELECT id, event_id, status, attempts FROM events")
    failures = _rows(db, "SELECT count(*) FROM attempts WHERE error_class IS NOT NULL")[0][0]
    stored = {str(e[1]) for e in events}
    expected = {f"abridge:{event_id}:hooks" for event_id in acked}
    duplicates = sum(n - 1 for n in receiver.ids.values() if n > 1)
    figures = Figures(
        "destination down", load.sent, len(acked), len(stored & acked),
        sum(1 for e in events if e[2] in ("done", "dead")), duplicates, load.statuses(),
        [f"receiver down {down_for:.0f} s (retry base {base} s, cap {cap} s); delivered before "
         f"the stop {delivered_before}; events retrying when it came back {retrying}",
         f"failed attempts {failures}; most attempts of one event "
         f"{max((int(e[3]) for e in events), default=0)}",
         f"all terminal {drained:.1f} s after the receiver was back; "
         f"receiver holds {len(receiver.ids)} ids, {sum(receiver.ids.values())} deliveries"],
    )  # fmt: skip
    figures.show()
    assert not load.unexpected, f"answers other than 200/503: {load.unexpected[:5]}"
    assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)[:5]}"
    assert {e[2] for e in events} == {"done"}, "an event did not reach done"
    assert set(receiver.ids) == expected, "a delivery is missing (or unexpected)"
    assert duplicates == 0, "a delivery was written twice"
    assert retrying, "no event was waiting on the destination: the outage proved nothing"
